//! CPU accounting for a load point: how many microseconds of CPU each process (the broker, the
//! gateway, the bench itself) and the whole machine spent per message.
//!
//! The gateway and its broker ceiling share two cores with RabbitMQ, so a throughput ratio alone
//! does not say whose time it was; this does, in every run. Read from `/proc` (Linux only; elsewhere
//! the figures are simply absent).

use std::collections::BTreeMap;
use std::fs;

use serde::Serialize;

/// `/proc/stat` and `/proc/<pid>/stat` count in USER_HZ, which Linux fixes at 100 for user space
/// on every mainstream architecture, whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// The processes to follow, by label (several processes may share one: their times add up).
#[derive(Debug, Clone)]
pub struct Watch {
    pids: Vec<(&'static str, u32)>,
    /// Labels for every process of a command name, found again at each snapshot.
    commands: Vec<(&'static str, &'static str)>,
}

impl Watch {
    /// The bench itself under `own_label` (what it plays in the point: publisher, load generator),
    /// the local RabbitMQ node (when found), and `extra`.
    pub fn new(own_label: &'static str, extra: &[(&'static str, u32)]) -> Self {
        let mut pids = vec![(own_label, std::process::id())];
        if let Some(pid) = find_by_comm("beam.smp").into_iter().next() {
            pids.push(("broker", pid));
        }
        pids.extend_from_slice(extra);
        Self { pids, commands: Vec::new() }
    }

    /// Also the local PostgreSQL server: every `postgres` process, and through the postmaster's
    /// reaped-children times the backends that exited between two snapshots.
    pub fn with_database(mut self) -> Self {
        self.commands.push(("database", "postgres"));
        self
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut procs = BTreeMap::new();
        let found = self.commands.iter().flat_map(|(label, comm)| find_by_comm(comm).into_iter().map(|p| (*label, p)));
        for (label, pid) in self.pids.iter().copied().chain(found) {
            if let Some(ticks) = process_ticks(pid) {
                *procs.entry(label).or_default() += ticks;
            }
        }
        Snapshot { machine: machine_busy_ticks(), procs }
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    machine: Option<u64>,
    /// Ticks by label.
    procs: BTreeMap<&'static str, u64>,
}

/// Microseconds of CPU per message between two snapshots, by label, plus `machine` (all CPUs,
/// kernel and interrupts included).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PerMessage(pub BTreeMap<&'static str, f64>);

impl PerMessage {
    pub fn between(before: &Snapshot, after: &Snapshot, messages: u64) -> Self {
        let mut out = BTreeMap::new();
        if messages == 0 {
            return Self(out);
        }
        let per = |ticks: u64| ticks as f64 / USER_HZ * 1e6 / messages as f64;
        if let (Some(a), Some(b)) = (before.machine, after.machine) {
            out.insert("machine", per(b.saturating_sub(a)));
        }
        for (label, b) in &after.procs {
            // A label absent before is a process started since: all its time is in the interval.
            let a = before.procs.get(label).copied().unwrap_or_default();
            out.insert(*label, per(b.saturating_sub(a)));
        }
        Self(out)
    }

    /// `broker 70 µs, gateway 43 µs, …, machine 156 µs` (machine last).
    pub fn line(&self) -> String {
        let mut parts: Vec<String> =
            self.0.iter().filter(|(k, _)| **k != "machine").map(|(k, v)| format!("{k} {v:.0} µs")).collect();
        if let Some(m) = self.0.get("machine") {
            parts.push(format!("machine {m:.0} µs"));
        }
        parts.join(", ")
    }
}

/// `report` as JSON with `used` under `cpu_us_per_message`, for `results.json`.
pub fn with_cpu(report: &impl Serialize, used: &PerMessage) -> serde_json::Value {
    let mut value = serde_json::json!(report);
    value["cpu_us_per_message"] = serde_json::json!(used);
    value
}

/// utime + stime of every thread of `pid`, plus those of its children it has reaped, in ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    parse_process_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_process_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // After the name: state(3) ... utime(14), stime(15), cutime(16), cstime(17), counted from 1
    // over the whole line.
    let times: Vec<u64> = rest.split_whitespace().skip(11).take(4).map(str::parse).collect::<Result<_, _>>().ok()?;
    (times.len() == 4).then(|| times.iter().sum())
}

/// Non-idle ticks of all CPUs: everything but idle and iowait.
fn machine_busy_ticks() -> Option<u64> {
    parse_machine_busy(&fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let busy = values.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    (values.len() >= 8).then_some(busy)
}

/// Every process whose command name is `name`.
fn find_by_comm(name: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim_end() == name).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1000 0 0";
        assert_eq!(parse_process_ticks(stat), Some(325));
        // A postmaster: 40 + 10 of its own, 900 + 50 from backends it has reaped.
        let stat = "7 (postgres) S 1 7 7 0 -1 4194560 100 0 0 0 40 10 900 50 20 0 1 0 1000 0 0";
        assert_eq!(parse_process_ticks(stat), Some(1000));
        assert_eq!(parse_process_ticks("7 (postgres) S 1 7"), None);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 40 1 9 2 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_machine_busy(stat), Some(100 + 5 + 50 + 1 + 9 + 2));
    }

    #[test]
    fn cpu_per_message_divides_each_process_and_the_machine_by_the_messages() {
        let before = Snapshot { machine: Some(1_000), procs: BTreeMap::from([("broker", 100), ("bench", 10)]) };
        let after = Snapshot { machine: Some(1_200), procs: BTreeMap::from([("broker", 170), ("bench", 20)]) };
        let per = PerMessage::between(&before, &after, 10_000);
        // 70 ticks = 0.7 s over 10,000 messages = 70 µs each.
        assert!((per.0["broker"] - 70.0).abs() < 1e-9);
        assert!((per.0["bench"] - 10.0).abs() < 1e-9);
        assert!((per.0["machine"] - 200.0).abs() < 1e-9);
        assert_eq!(per.line(), "bench 10 µs, broker 70 µs, machine 200 µs");
        assert!(PerMessage::between(&before, &after, 0).0.is_empty());
    }

    #[test]
    fn a_process_first_seen_after_the_interval_began_is_charged_all_its_time() {
        let before = Snapshot { machine: Some(0), procs: BTreeMap::from([("broker", 100)]) };
        let after = Snapshot { machine: Some(300), procs: BTreeMap::from([("broker", 150), ("worker", 90)]) };
        let per = PerMessage::between(&before, &after, 10_000);
        assert!((per.0["worker"] - 90.0).abs() < 1e-9);
        assert!((per.0["broker"] - 50.0).abs() < 1e-9);
    }
}

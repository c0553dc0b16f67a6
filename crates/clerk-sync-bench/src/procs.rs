//! The gateway and the worker as real processes from the release binaries: building them if
//! needed, starting them with the bench's environment, waiting for `/readyz`, reading their peak
//! resident memory (`VmHWM`), scraping `/metrics`, and stopping them with SIGTERM.
//!
//! Real processes rather than in-process apps, so that peak RSS is the service's alone and the
//! bench's own allocations (the 200,000-event workload) do not count against it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::env::{BenchEnv, free_port};
use crate::http1;

/// Where the binaries and the bench output live: `<target>/release`, `<target>/bench`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub target: PathBuf,
}

impl Paths {
    /// `<target>` from this executable's location (`<target>/<profile>/clerk-sync-bench`), so a
    /// custom `CARGO_TARGET_DIR` works; falls back to the workspace's `target`.
    pub fn discover() -> Self {
        let from_exe = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
            .filter(|t| t.join("release").is_dir() || t.join("debug").is_dir());
        let target = from_exe.unwrap_or_else(|| workspace_root().join("target"));
        Self { target }
    }

    pub fn binary(&self, name: &str) -> PathBuf {
        self.target.join("release").join(name)
    }

    pub fn out_dir(&self) -> PathBuf {
        self.target.join("bench")
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What `cargo run` sets for the program it runs (besides `CARGO_PKG_*`).
const CARGO_RUN_VARS: &[&str] =
    &["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE"];

/// `cargo build --release --bins` for the two services (a no-op when they are up to date), so the
/// bench never measures stale binaries. `make bench` only builds the bench itself.
pub fn build_services() -> anyhow::Result<()> {
    eprintln!("building the release binaries of clerk-sync-gateway and clerk-sync-worker ...");
    cargo_build_release(&["--bins", "-p", "clerk-sync-gateway", "-p", "clerk-sync-worker"])
}

/// `cargo build --release --bin clerk-sync` (a no-op when it is up to date), for the phases that
/// run the CLI.
pub fn build_cli() -> anyhow::Result<()> {
    eprintln!("building the release binary of clerk-sync (the CLI) ...");
    cargo_build_release(&["--bin", "clerk-sync", "-p", "clerk-sync-cli"])
}

fn cargo_build_release(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release"]).args(args);
    // `cargo run` gives us its package's CARGO_MANIFEST_DIR, CARGO_PKG_*, ...; ring's build script
    // tracks CARGO_MANIFEST_DIR, so passing them on would rebuild the whole TLS stack (minutes on
    // two cores) here, and again at the next plain `cargo build`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if CARGO_RUN_VARS.iter().any(|v| key == *v) || key.starts_with("CARGO_PKG_") {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd.current_dir(workspace_root()).status().context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build --release {} failed", args.join(" "));
    Ok(())
}

/// How often a child's `VmHWM` is read while it runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// Waits for `child`, reading its peak RSS from /proc every 5 ms (the last reading before exit
/// is the process's peak). Returns its exit status, or `None` if it was killed at `timeout`, and
/// the peak in KiB.
pub async fn wait_sampling_peak(
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<(Option<std::process::ExitStatus>, u64)> {
    let (pid, started) = (child.id(), Instant::now());
    let mut peak_kib = 0;
    loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            return Ok((Some(status), peak_kib));
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok((None, peak_kib));
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

pub struct Service {
    pub name: String,
    child: Child,
    /// The public port (gateway only).
    pub port: Option<u16>,
    pub admin: SocketAddr,
    /// Highest VmHWM seen by [`Service::sample_rss`].
    peak_kib: u64,
}

/// Knobs passed through from the bench's own environment (`CLERK_SYNC__WORKER__BATCH_SIZE=256
/// make bench`), minus what the bench sets itself.
fn inherited_knobs() -> Vec<(String, String)> {
    std::env::vars().filter(|(k, _)| k.starts_with("CLERK_SYNC__")).collect()
}

impl Service {
    /// Starts `bin` with only the bench's variables (no `.env`, no `RUST_LOG` from the caller).
    fn spawn(
        paths: &Paths,
        bin: &str,
        name: String,
        vars: Vec<(String, String)>,
        port: Option<u16>,
        admin: SocketAddr,
    ) -> anyhow::Result<Self> {
        let exe = paths.binary(bin);
        anyhow::ensure!(exe.is_file(), "{} is missing: run `cargo build --release --bins`", exe.display());
        let logs = paths.out_dir().join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let mut cmd = Command::new(&exe);
        // A working directory without a `.env`, which the services would otherwise read.
        cmd.current_dir(&logs).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.envs(inherited_knobs()).envs(vars).env("CLERK_SYNC__LOG__LEVEL", "warn");
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
        Ok(Self { name, child, port, admin, peak_kib: 0 })
    }

    pub fn gateway(paths: &Paths, env: &BenchEnv, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let (port, admin) = (free_port()?, free_port()?);
        let mut vars = env.service_env();
        vars.push(("CLERK_SYNC__GATEWAY__LISTEN".into(), format!("127.0.0.1:{port}")));
        vars.push(("CLERK_SYNC__GATEWAY__ADMIN_LISTEN".into(), format!("127.0.0.1:{admin}")));
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin));
        Self::spawn(paths, "clerk-sync-gateway", format!("gateway-{port}"), vars, Some(port), admin)
    }

    pub fn worker(paths: &Paths, env: &BenchEnv, index: usize) -> anyhow::Result<Self> {
        Self::worker_with(paths, env, index, &[])
    }

    /// A worker with `extra` settings on top of the bench's (`CLERK_SYNC__WORKER__KEEP_HISTORY`, ...).
    pub fn worker_with(paths: &Paths, env: &BenchEnv, index: usize, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut vars = env.service_env();
        vars.push(("CLERK_SYNC__WORKER__ADMIN_LISTEN".into(), format!("127.0.0.1:{port}")));
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let admin = SocketAddr::from(([127, 0, 0, 1], port));
        Self::spawn(paths, "clerk-sync-worker", format!("worker-{index}-{port}"), vars, None, admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `/readyz` until 200; fails at once if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited with {status} (see target/bench/logs/{}.log)", self.name, self.name);
            }
            if http1::get(self.admin, "/readyz").await.is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{} not ready after {timeout:?}", self.name);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Reads VmHWM (peak resident set, KiB) and keeps the highest value seen.
    pub fn sample_rss(&mut self) -> u64 {
        if let Some(kib) = peak_rss_kib(self.pid()) {
            self.peak_kib = self.peak_kib.max(kib);
        }
        self.peak_kib
    }

    /// Reads VmRSS (current resident set, KiB), updating the peak too; `None` once the process is gone.
    pub fn current_rss(&mut self) -> Option<u64> {
        self.sample_rss();
        rss_kib(self.pid())
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = http1::get(self.admin, "/metrics").await?;
        Ok(String::from_utf8_lossy(&response.body).into_owned())
    }

    /// SIGTERM, then up to `grace` for a clean shutdown, then SIGKILL. Returns the peak RSS (KiB).
    pub async fn stop(mut self, grace: Duration) -> u64 {
        let peak = self.sample_rss();
        // `kill` rather than libc: this workspace forbids unsafe code.
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return peak;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("warning: {} ignored SIGTERM for {grace:?}; killing it", self.name);
        peak
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmHWM` from `/proc/<pid>/status`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// `VmRSS` (resident set right now) from `/proc/<pid>/status`, in KiB: what the soak follows over
/// time, since the peak alone cannot show growth that never exceeds an early spike.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sums every sample of `name` (all label sets) in a Prometheus text exposition, optionally only
/// those whose labels contain `label_filter`.
pub fn sum_metric(text: &str, name: &str, label_filter: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter(|l| label_filter.is_none_or(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_samples_are_summed_across_label_sets() {
        let text = "# HELP x y\nev_total{type=\"a\",outcome=\"applied\"} 3\nev_total{type=\"b\",outcome=\"stale\"} 4\nev_total_other 9\n";
        assert_eq!(sum_metric(text, "ev_total", None), 7.0);
        assert_eq!(sum_metric(text, "ev_total", Some("outcome=\"stale\"")), 4.0);
    }

    #[test]
    fn this_process_has_a_peak_and_a_current_rss() {
        let pid = std::process::id();
        assert!(peak_rss_kib(pid).is_some_and(|k| k > 0));
        assert!(rss_kib(pid).is_some_and(|k| k > 0 && Some(k) <= peak_rss_kib(pid)));
    }
}

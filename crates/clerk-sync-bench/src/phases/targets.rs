//! Every number the bench judges a figure against, in one table: what it applies to, the
//! threshold with its comparison, and where the number was asked for. The phases take their
//! target from here (`Row::goal`), so the table the bench prints and this list cannot disagree;
//! `clerk-sync-bench targets` prints it.
//!
//! The soak's checks are not here: each is computed from its own run (RSS growth against the
//! noise of its own samples, the queue bound from the rate it ran at).

use crate::report::Target;

/// A target the table's verdict column judges.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Goal {
    /// The figure it applies to, as the table names it.
    pub name: &'static str,
    pub target: Target,
    /// The figure's unit, for printing the threshold.
    pub unit: &'static str,
    /// Where the number was asked for.
    pub source: &'static str,
}

/// The project's first brief: the performance targets the service was built against.
const BRIEF: &str = "original brief";

pub const VERIFY_PARSE_US: Goal =
    Goal { name: "verify + parse, per event", target: Target::AtMost(10.0), unit: "µs", source: BRIEF };
/// At `gateway::TARGET_CONCURRENCY` (64) connections, closed loop.
pub const GATEWAY_VS_BROKER: Goal = Goal {
    name: "gateway closed c64 throughput / broker ceiling",
    target: Target::RatioAtLeast(0.8),
    unit: "req/s",
    source: BRIEF,
};
/// Open loop at `gateway::TARGET_RATE` (5,000/s).
pub const GATEWAY_OPEN_P99_MS: Goal =
    Goal { name: "gateway open 5000/s p99", target: Target::AtMost(20.0), unit: "ms", source: BRIEF };
pub const WORKER_EVENTS_PER_S: Goal =
    Goal { name: "worker x1 events/s", target: Target::AtLeast(10_000.0), unit: "events/s", source: BRIEF };
pub const WORKER_VS_DATABASE: Goal = Goal {
    name: "worker x1 events/s / database ceiling",
    target: Target::RatioAtLeast(0.75),
    unit: "events/s",
    source: BRIEF,
};
/// One worker on the whole catalogue (sessions about half), and against the users-only x1 run.
pub const WORKER_MIXED_EVENTS_PER_S: Goal = Goal {
    name: "worker x1 mixed catalogue events/s",
    target: Target::AtLeast(10_000.0),
    unit: "events/s",
    source: "issue 19",
};
pub const WORKER_MIXED_VS_USERS: Goal = Goal {
    name: "worker x1 mixed catalogue / users only",
    target: Target::RatioAtLeast(0.9),
    unit: "events/s",
    source: "issue 19",
};
/// At the e2e rate (2,000 events/s by default).
pub const E2E_LAG_P99_MS: Goal =
    Goal { name: "end-to-end lag p99 @ 2000/s", target: Target::AtMost(1_000.0), unit: "ms", source: BRIEF };
/// One worker with the change feed and its relay on against the same run with the feed off.
pub const FEED_ON_OFF: Goal =
    Goal { name: "worker x1 feed on / off", target: Target::RatioAtLeast(0.9), unit: "events/s", source: "issue 21" };
/// From a change's writing transaction to its `LISTEN clerk_changes` notification, at 2,000 events/s.
pub const FEED_NOTIFY_P99_MS: Goal =
    Goal { name: "change notification p99 @ 2000/s", target: Target::AtMost(50.0), unit: "ms", source: "issue 21" };
pub const GATEWAY_RSS_MIB: Goal =
    Goal { name: "gateway peak RSS under load", target: Target::AtMost(64.0), unit: "MiB", source: BRIEF };
pub const WORKER_RSS_MIB: Goal =
    Goal { name: "worker peak RSS under load", target: Target::AtMost(128.0), unit: "MiB", source: BRIEF };
pub const DLQ_REPLAY_PER_S: Goal = Goal {
    name: "dlq replay of 100k dead letters",
    target: Target::AtLeast(5_000.0),
    unit: "msg/s",
    source: "dlq streaming (da0a772)",
};
pub const DLQ_CLI_RSS_MIB: Goal = Goal {
    name: "CLI peak RSS replaying 100k dead letters",
    target: Target::AtMost(100.0),
    unit: "MiB",
    source: "dlq streaming (da0a772)",
};
pub const RECONCILE_CLI_RSS_MIB: Goal = Goal {
    name: "CLI peak RSS reconciling 100k users + 10k orgs",
    target: Target::AtMost(128.0),
    unit: "MiB",
    source: "issue 17",
};
/// The x1 worker run with `worker.keep_history` on (the default) against the same run with it off.
pub const WORKER_HISTORY_ON_OFF: Goal = Goal {
    name: "worker x1 history on / off",
    target: Target::RatioAtLeast(0.85),
    unit: "events/s",
    source: "issue 20",
};
/// The release CLI's wall time, process start to exit, for one user's newest 50 events.
pub const EVENTS_LIST_USER_MS: Goal = Goal {
    name: "events list --user on 5M events, CLI p99",
    target: Target::AtMost(50.0),
    unit: "ms",
    source: "issue 20",
};

/// The whole table, in the order the bench prints its rows.
pub const TARGETS: &[Goal] = &[
    VERIFY_PARSE_US,
    GATEWAY_VS_BROKER,
    GATEWAY_OPEN_P99_MS,
    WORKER_EVENTS_PER_S,
    WORKER_VS_DATABASE,
    WORKER_HISTORY_ON_OFF,
    WORKER_MIXED_EVENTS_PER_S,
    WORKER_MIXED_VS_USERS,
    E2E_LAG_P99_MS,
    FEED_ON_OFF,
    FEED_NOTIFY_P99_MS,
    DLQ_REPLAY_PER_S,
    DLQ_CLI_RSS_MIB,
    RECONCILE_CLI_RSS_MIB,
    EVENTS_LIST_USER_MS,
    GATEWAY_RSS_MIB,
    WORKER_RSS_MIB,
];

/// The table as text: one line per target.
pub fn table() -> String {
    let width = TARGETS.iter().map(|g| g.name.len()).max().unwrap_or(0);
    TARGETS.iter().map(|g| format!("{:<width$}  {:<18}  {}\n", g.name, g.target.describe(g.unit), g.source)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_its_own_name_and_a_source() {
        let mut names: Vec<&str> = TARGETS.iter().map(|g| g.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TARGETS.len(), "two targets share a name");
        assert!(TARGETS.iter().all(|g| !g.source.is_empty()));
    }

    #[test]
    fn the_printed_table_lists_every_threshold() {
        let text = table();
        assert_eq!(text.lines().count(), TARGETS.len());
        assert!(text.contains(">= 0.80x ceiling") && text.contains("<= 1000") && text.contains("issue 17"), "{text}");
    }
}

//! The change feed's metrics, on the worker's `/metrics`: whether this worker leads, the last
//! position given and the last one the relay published (their difference is the relay's lag, in
//! changes), the relay's failed rounds, and how long the leader's sequencer and relay rounds take
//! (what a change waits for between its commit and its notification).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Round times from 0.5 ms to about 2 s.
fn round_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 13).unwrap_or_default()
}

#[derive(Clone)]
pub struct FeedMetrics {
    pub leader: IntGauge,
    pub last_position: IntGauge,
    pub relayed_position: IntGauge,
    pub relay_failures: IntCounter,
    /// Sequencer rounds that positioned changes: the round's transaction, notification included.
    pub round: Histogram,
    /// Relay rounds that published changes: reading them, publishing, the confirms, the progress.
    pub relay_round: Histogram,
}

impl FeedMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            leader: IntGauge::new(
                "clerk_sync_worker_feed_leader",
                "1 while this worker leads the change feed (sequencer and relay).",
            )?,
            last_position: IntGauge::new(
                "clerk_sync_worker_feed_last_position",
                "The last change-feed position given (set by the leader).",
            )?,
            relayed_position: IntGauge::new(
                "clerk_sync_worker_feed_relayed_position",
                "The last position the relay published, confirmed (set by the leader).",
            )?,
            relay_failures: IntCounter::new(
                "clerk_sync_worker_feed_relay_failures_total",
                "Relay rounds that failed (publish or confirm); each is retried from the stored progress.",
            )?,
            round: Histogram::with_opts(
                HistogramOpts::new(
                    "clerk_sync_worker_feed_round_seconds",
                    "Sequencer rounds that gave positions: the round's whole transaction.",
                )
                .buckets(round_buckets()),
            )?,
            relay_round: Histogram::with_opts(
                HistogramOpts::new(
                    "clerk_sync_worker_feed_relay_round_seconds",
                    "Relay rounds that published changes: read, publish, confirms, stored progress.",
                )
                .buckets(round_buckets()),
            )?,
        };
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.last_position.clone()))?;
        registry.register(Box::new(m.relayed_position.clone()))?;
        registry.register(Box::new(m.relay_failures.clone()))?;
        registry.register(Box::new(m.round.clone()))?;
        registry.register(Box::new(m.relay_round.clone()))?;
        Ok(m)
    }
}

impl std::fmt::Debug for FeedMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedMetrics").field("leader", &self.leader.get()).finish()
    }
}

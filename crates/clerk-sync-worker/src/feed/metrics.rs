//! The change feed's metrics, on the worker's `/metrics`: whether this worker leads, the last
//! position given and the last one the relay published (their difference is the relay's lag, in
//! changes), and the relay's failed rounds.

use prometheus::{IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub struct FeedMetrics {
    pub leader: IntGauge,
    pub last_position: IntGauge,
    pub relayed_position: IntGauge,
    pub relay_failures: IntCounter,
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
        };
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.last_position.clone()))?;
        registry.register(Box::new(m.relayed_position.clone()))?;
        registry.register(Box::new(m.relay_failures.clone()))?;
        Ok(m)
    }
}

impl std::fmt::Debug for FeedMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedMetrics").field("leader", &self.leader.get()).finish()
    }
}

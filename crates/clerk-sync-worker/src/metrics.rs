//! The worker's Prometheus metrics, registered in the registry held by the application.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use clerk_sync_core::metrics::LATENCY_BUCKETS;

/// Consumer states for `clerk_sync_worker_consumer_state{state}` (exactly one is 1).
pub const STATES: [&str; 4] = ["consuming", "paused", "disconnected", "stopped"];

#[derive(Clone)]
pub struct WorkerMetrics {
    /// By event type (catalogue or `unknown`) and outcome: applied, duplicate, stale, ignored,
    /// retried, dead_lettered.
    pub events: IntCounterVec,
    pub batch_duration: Histogram,
    pub batch_size: Histogram,
    /// Seconds from the signed svix timestamp to commit.
    pub lag: Histogram,
    pub transient_errors: IntCounter,
    /// Attempts to publish a failed message's retry or dead-letter copy that the broker refused.
    pub settle_failures: IntCounter,
    /// Pauses by whole-database condition (`db::Condition`), counted when one begins or changes.
    pub database_pauses: IntCounterVec,
    pub db_up: IntGauge,
    pub db_pool_size: IntGauge,
    pub db_pool_idle: IntGauge,
    pub consumer_state: IntGaugeVec,
    /// `clerk.event_history`: rows (Postgres' estimate) and bytes, read by housekeeping.
    pub history_rows: IntGauge,
    pub history_bytes: IntGauge,
    /// Deliveries in hand: received and not yet settled or given back (at most a prefetch).
    pub messages_held: IntGauge,
}

impl WorkerMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            events: IntCounterVec::new(
                Opts::new("clerk_sync_worker_events_total", "Events handled, by type and outcome."),
                &["type", "outcome"],
            )?,
            batch_duration: Histogram::with_opts(
                HistogramOpts::new("clerk_sync_worker_batch_duration_seconds", "Time to apply and settle one batch.")
                    .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("clerk_sync_worker_batch_size", "Messages per batch.")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
            )?,
            lag: Histogram::with_opts(
                HistogramOpts::new("clerk_sync_worker_end_to_end_lag_seconds", "From the svix timestamp to commit.")
                    .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0]),
            )?,
            transient_errors: IntCounter::new(
                "clerk_sync_worker_transient_errors_total",
                "Database failures that paused processing (retried, never dead-lettered).",
            )?,
            settle_failures: IntCounter::new(
                "clerk_sync_worker_settle_failures_total",
                "Retry or dead-letter copies the broker did not confirm (the message is held, then retried).",
            )?,
            database_pauses: IntCounterVec::new(
                Opts::new(
                    "clerk_sync_worker_database_pauses_total",
                    "Times processing paused on a whole-database condition, by condition.",
                ),
                &["condition"],
            )?,
            db_up: IntGauge::new("clerk_sync_worker_database_up", "1 while the database answers.")?,
            db_pool_size: IntGauge::new("clerk_sync_worker_db_pool_connections", "Open pool connections.")?,
            db_pool_idle: IntGauge::new("clerk_sync_worker_db_pool_idle_connections", "Idle pool connections.")?,
            consumer_state: IntGaugeVec::new(
                Opts::new("clerk_sync_worker_consumer_state", "1 for the consumer's current state."),
                &["state"],
            )?,
            history_rows: IntGauge::new("clerk_sync_history_rows", "Events kept in clerk.event_history (estimate).")?,
            history_bytes: IntGauge::new(
                "clerk_sync_history_bytes",
                "Bytes of clerk.event_history, indexes included.",
            )?,
            messages_held: IntGauge::new(
                "clerk_sync_worker_messages_held",
                "Deliveries in hand (received, not yet settled or given back); at most worker.prefetch.",
            )?,
        };
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.batch_duration.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.transient_errors.clone()))?;
        registry.register(Box::new(m.settle_failures.clone()))?;
        registry.register(Box::new(m.database_pauses.clone()))?;
        for condition in clerk_sync_store::db::Condition::ALL {
            m.database_pauses.with_label_values(&[condition.as_str()]);
        }
        registry.register(Box::new(m.db_up.clone()))?;
        registry.register(Box::new(m.db_pool_size.clone()))?;
        registry.register(Box::new(m.db_pool_idle.clone()))?;
        registry.register(Box::new(m.consumer_state.clone()))?;
        registry.register(Box::new(m.history_rows.clone()))?;
        registry.register(Box::new(m.history_bytes.clone()))?;
        registry.register(Box::new(m.messages_held.clone()))?;
        m.set_state("disconnected");
        Ok(m)
    }

    pub fn set_state(&self, state: &str) {
        for s in STATES {
            self.consumer_state.with_label_values(&[s]).set(i64::from(s == state));
        }
    }

    pub fn state(&self) -> &'static str {
        STATES.into_iter().find(|s| self.consumer_state.with_label_values(&[s]).get() == 1).unwrap_or("stopped")
    }
}

impl WorkerMetrics {
    /// Back to consuming after a pause, without overriding other states.
    pub fn set_state_if_paused(&self) {
        if self.consumer_state.with_label_values(&["paused"]).get() == 1 {
            self.db_up.set(1);
            self.set_state("consuming");
        }
    }
}

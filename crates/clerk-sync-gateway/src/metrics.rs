//! The gateway's Prometheus metrics, registered in the registry held by the application state.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use clerk_sync_core::metrics::{LATENCY_BUCKETS, SIZE_BUCKETS};

#[derive(Clone)]
pub struct GatewayMetrics {
    /// Requests by outcome (`queued`, `dead_lettered`, `rejected`, `unavailable`, `overloaded`) and
    /// status code.
    pub requests: IntCounterVec,
    /// Verification failures by reason (`invalid_signature`, `missing_header`, ...).
    pub verification_failures: IntCounterVec,
    /// Time from publish to the broker's confirm, by result (`ok` or the failure kind).
    pub publish_confirm: HistogramVec,
    pub in_flight: IntGauge,
    /// 1 while connected to RabbitMQ with confirm channels open.
    pub amqp_connected: IntGauge,
    pub body_bytes: Histogram,
    /// Bytes reserved by request bodies held in memory (the budget in use).
    pub buffered_body_bytes: IntGauge,
}

impl GatewayMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new("clerk_sync_gateway_requests_total", "Webhook requests by outcome and HTTP status."),
                &["outcome", "status"],
            )?,
            verification_failures: IntCounterVec::new(
                Opts::new(
                    "clerk_sync_gateway_verification_failures_total",
                    "Requests rejected by signature verification, by reason.",
                ),
                &["reason"],
            )?,
            publish_confirm: HistogramVec::new(
                HistogramOpts::new("clerk_sync_gateway_publish_confirm_seconds", "Publish to broker confirm latency.")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["result"],
            )?,
            in_flight: IntGauge::new("clerk_sync_gateway_in_flight_requests", "Webhook requests being handled.")?,
            amqp_connected: IntGauge::new("clerk_sync_gateway_amqp_connected", "1 while connected to RabbitMQ.")?,
            body_bytes: Histogram::with_opts(
                HistogramOpts::new("clerk_sync_gateway_body_bytes", "Size of accepted request bodies.")
                    .buckets(SIZE_BUCKETS.to_vec()),
            )?,
            buffered_body_bytes: IntGauge::new(
                "clerk_sync_gateway_buffered_body_bytes",
                "Bytes reserved by request bodies held in memory, out of gateway.max_buffered_bytes.",
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.verification_failures.clone()))?;
        registry.register(Box::new(m.publish_confirm.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.amqp_connected.clone()))?;
        registry.register(Box::new(m.body_bytes.clone()))?;
        registry.register(Box::new(m.buffered_body_bytes.clone()))?;
        Ok(m)
    }
}

/// Decrements the in-flight gauge however the handler exits.
pub struct InFlight(IntGauge);

impl InFlight {
    pub fn enter(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

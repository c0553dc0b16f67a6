//! Prometheus helpers. Each process builds its own [`prometheus::Registry`] and keeps it in its
//! application state (never the global default registry), so tests that run several apps in one
//! process each see only their own numbers.

use prometheus::{Encoder, Registry, TextEncoder};

/// Latency buckets from 0.5 ms to 10 s: publish confirms and database commits live in this range.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Body size buckets from 256 B to 1 MiB.
pub const SIZE_BUCKETS: &[f64] = &[256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 65536.0, 262144.0, 1048576.0];

/// The registry in Prometheus text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding only fails on invalid metric families, which the typed constructors rule out.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

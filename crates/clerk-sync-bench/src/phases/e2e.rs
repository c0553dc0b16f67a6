//! End to end: the gateway and one worker together, the load generator open-loop at a fixed rate,
//! and the lag from each event's signing time to its commit.
//!
//! Each request's envelope `timestamp` is stamped (in milliseconds) at the moment its svix
//! signature is computed, so `clerk.webhook_events.occurred_at` is the svix timestamp at full
//! precision (the `svix-timestamp` header itself only has seconds). The worker sets `processed_at`
//! to its transaction's `now()`, i.e. when the batch's transaction began; the commit follows within
//! one batch's apply time.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use super::gateway::{gateway_load, spawn_gateway};
use super::{Bench, targets};
use crate::corpus::Corpus;
use crate::procs::{Service, sum_metric};
use crate::report::Row;

const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
struct Lag {
    events: i64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

const LAG_SQL: &str = "SELECT count(*) AS events,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS p50_ms,
        percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) AS p99_ms,
        max(lag) AS max_ms
    FROM (SELECT (extract(epoch FROM processed_at - occurred_at) * 1000)::float8 AS lag
          FROM clerk.webhook_events WHERE outcome IS NOT NULL AND occurred_at IS NOT NULL) AS l";

pub async fn e2e(b: &mut Bench) -> anyhow::Result<()> {
    b.env.truncate().await?;
    b.purge().await?;
    let (mut gw, url) = spawn_gateway(b).await?;
    let mut worker = Service::worker(&b.paths, &b.env, 0)?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    let rate = b.opts.e2e_rate;
    let duration = Duration::from_secs_f64(b.opts.e2e_secs);
    // A corpus of its own: users spread so that batches touch many rows, as in production.
    let corpus = Arc::new(Corpus::realistic(8_192, 50_000, 3));
    let connections = b.opts.open_connections;
    let load = gateway_load(b, &url, corpus, connections, Some(rate), (Duration::ZERO, duration)).await?;
    gw.sample_rss();
    worker.sample_rss();

    let mut conn = PgConnection::connect(&b.env.db_url).await?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let expected = i64::try_from(load.accepted_total)?;
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM clerk.webhook_events WHERE outcome IS NOT NULL")
            .fetch_one(&mut conn)
            .await?;
        if done >= expected {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {done} of {expected} events committed after the run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lag: Lag = sqlx::query_as(LAG_SQL).fetch_one(&mut conn).await?;
    let _ = conn.close().await;
    let metrics = worker.metrics().await.unwrap_or_default();
    let failures = sum_metric(&metrics, "clerk_sync_worker_events_total", Some("outcome=\"retried\""))
        + sum_metric(&metrics, "clerk_sync_worker_events_total", Some("outcome=\"dead_lettered\""));
    let errors = load.errors + failures as u64;
    eprintln!("e2e: {} events at {rate:.0}/s, lag p50 {:?} ms, p99 {:?} ms", lag.events, lag.p50_ms, lag.p99_ms);

    b.gateway_rss_kib = b.gateway_rss_kib.max(gw.stop(Duration::from_secs(20)).await);
    b.worker_rss_kib = b.worker_rss_kib.max(worker.stop(Duration::from_secs(20)).await);
    let note = format!(
        "{} events over {:.0} s, gateway achieved {:.0} req/s, p99 {:.2} ms; lag = processed_at (batch tx start) - signing time",
        lag.events, b.opts.e2e_secs, load.throughput, load.latency.p99_ms
    );
    b.rows.push(Row::new(format!("end-to-end lag p50 @ {rate:.0}/s"), lag.p50_ms.unwrap_or(f64::NAN), "ms"));
    b.rows.push(
        Row::new(format!("end-to-end lag p99 @ {rate:.0}/s"), lag.p99_ms.unwrap_or(f64::NAN), "ms")
            .goal(&targets::E2E_LAG_P99_MS)
            .require_no_errors(errors)
            .note(note),
    );
    b.details.insert("e2e".into(), json!({"rate": rate, "load": load, "lag": lag, "worker_failures": failures}));
    b.env.truncate().await?;
    Ok(())
}

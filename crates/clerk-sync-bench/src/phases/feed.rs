//! The change feed (issue 21): its cost and its latency.
//!
//! 1. Throughput: one worker from the same pre-filled queue as the worker phase, with the feed
//!    off then on then on then off (the order evens out drift of the shared machine); the ratio of
//!    the mean on to the mean off. "Off" is the database-level switch
//!    (`ALTER DATABASE ... SET clerk.changes = off`: every new session's triggers return at once);
//!    "on" includes the leader's sequencer and the relay publishing to `<prefix>.changes`. The
//!    relay's catch-up after the run (until it has published the last position) is reported apart.
//! 2. Latency: the gateway and one worker at the e2e rate (2,000 events/s), a `LISTEN
//!    clerk_changes` connection in the bench; each change's latency is from its writing
//!    transaction's `now()` (`committed_at`, a little before the commit: the figure is an upper
//!    bound) to the arrival of the first notification whose position covers it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use super::gateway::{gateway_load, spawn_gateway};
use super::{Bench, targets};
use crate::broker;
use crate::corpus::Corpus;
use crate::procs::{Service, sum_metric};
use crate::report::Row;

const RUN_TIMEOUT: Duration = Duration::from_secs(240);
const PREFILL_CHANNELS: usize = 8;
const PREFILL_WINDOW: usize = 1024;

pub async fn feed(b: &mut Bench) -> anyhow::Result<()> {
    throughput(b).await?;
    latency(b).await
}

async fn switch(b: &Bench, on: bool) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(&b.env.db_url).await?;
    let sql = if on {
        format!("ALTER DATABASE \"{}\" RESET clerk.changes", b.env.db_name)
    } else {
        format!("ALTER DATABASE \"{}\" SET clerk.changes = off", b.env.db_name)
    };
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
    let _ = conn.close().await;
    Ok(())
}

async fn truncate(b: &Bench) -> anyhow::Result<()> {
    b.env.truncate().await?;
    let mut conn = PgConnection::connect(&b.env.db_url).await?;
    sqlx::query("TRUNCATE clerk.changes").execute(&mut conn).await?;
    sqlx::query("UPDATE clerk.change_feed_state SET last_position = 0, relayed_position = 0")
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(())
}

/// One worker process through the pre-filled workload: events/s, and (feed on) how long the relay
/// took after the run to publish the last position.
async fn one_run(b: &mut Bench, on: bool) -> anyhow::Result<(f64, Option<f64>, u64)> {
    let workload = b.workload();
    let total = workload.messages.len();
    let distinct = i64::try_from(workload.shape.distinct)?;
    truncate(b).await?;
    b.purge().await?;
    switch(b, on).await?;
    broker::prefill(&b.env, &b.amqp, &workload.messages, PREFILL_CHANNELS, PREFILL_WINDOW).await?;
    let started = Instant::now();
    let mut worker = Service::worker(&b.paths, &b.env, 0)?;
    let mut conn = PgConnection::connect(&b.env.db_url).await?;
    let elapsed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        anyhow::ensure!(started.elapsed() < RUN_TIMEOUT, "the worker did not finish in {RUN_TIMEOUT:?}");
        worker.sample_rss();
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM clerk.webhook_events WHERE outcome IS NOT NULL")
            .fetch_one(&mut conn)
            .await?;
        if done >= distinct && b.queue_depth().await? == 0 {
            break started.elapsed();
        }
    };
    let relay_s = if on {
        loop {
            let (last, relayed): (i64, i64) =
                sqlx::query_as("SELECT last_position, relayed_position FROM clerk.change_feed_state")
                    .fetch_one(&mut conn)
                    .await?;
            let pending: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clerk.changes WHERE position IS NULL)")
                    .fetch_one(&mut conn)
                    .await?;
            if !pending && relayed == last {
                break Some((started.elapsed() - elapsed).as_secs_f64());
            }
            anyhow::ensure!(started.elapsed() < RUN_TIMEOUT, "the relay did not catch up in {RUN_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        None
    };
    let metrics = worker.metrics().await.unwrap_or_default();
    let failures = sum_metric(&metrics, "clerk_sync_worker_events_total", Some("outcome=\"retried\""))
        + sum_metric(&metrics, "clerk_sync_worker_events_total", Some("outcome=\"dead_lettered\""));
    b.worker_rss_kib = b.worker_rss_kib.max(worker.stop(Duration::from_secs(20)).await);
    let _ = conn.close().await;
    let rate = total as f64 / elapsed.as_secs_f64();
    eprintln!(
        "feed {}: {total} events in {:.2} s = {rate:.0} events/s{}",
        if on { "on" } else { "off" },
        elapsed.as_secs_f64(),
        relay_s.map(|s| format!("; relay caught up {s:.2} s after")).unwrap_or_default()
    );
    Ok((rate, relay_s, failures as u64))
}

async fn throughput(b: &mut Bench) -> anyhow::Result<()> {
    let (mut on, mut off, mut relay, mut errors) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for feed_on in [false, true, true, false] {
        let (rate, relay_s, failures) = one_run(b, feed_on).await?;
        errors += failures;
        if feed_on {
            on.push(rate);
            relay.extend(relay_s);
        } else {
            off.push(rate);
        }
    }
    switch(b, true).await?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (on_rate, off_rate) = (mean(&on), mean(&off));
    let changes: i64 = {
        let mut conn = PgConnection::connect(&b.env.db_url).await?;
        let n = sqlx::query_scalar("SELECT count(*) FROM clerk.changes").fetch_one(&mut conn).await?;
        let _ = conn.close().await;
        n
    };
    b.rows.push(
        Row::new("worker x1 feed on / off", on_rate, "events/s")
            .ceiling(Some(off_rate))
            .goal(&targets::FEED_ON_OFF)
            .require_no_errors(errors)
            .note(format!(
                "off, on, on, off: on {:.0}/{:.0}, off {:.0}/{:.0} events/s; {changes} changes in the last on run; \
                 relay caught up {:.2} s after each on run (max)",
                on[0],
                on[1],
                off[0],
                off[1],
                relay.iter().copied().fold(0.0, f64::max)
            )),
    );
    b.details.insert(
        "feed_throughput".into(),
        json!({"on_events_per_s": on, "off_events_per_s": off, "relay_catch_up_s": relay, "changes": changes}),
    );
    Ok(())
}

async fn latency(b: &mut Bench) -> anyhow::Result<()> {
    truncate(b).await?;
    b.purge().await?;
    let mut listener = PgListener::connect(&b.env.db_url).await?;
    listener.listen("clerk_changes").await?;
    let notes = tokio::spawn(async move {
        let mut seen: Vec<(i64, DateTime<Utc>)> = Vec::new();
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await {
            if let Ok(position) = n.payload().parse() {
                seen.push((position, Utc::now()));
            }
        }
        seen
    });
    let (gw, url) = spawn_gateway(b).await?;
    let mut worker = Service::worker(&b.paths, &b.env, 0)?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    let rate = b.opts.e2e_rate;
    let duration = Duration::from_secs_f64(b.opts.e2e_secs);
    let corpus = Arc::new(Corpus::realistic(8_192, 50_000, 5));
    let load = gateway_load(b, &url, corpus, b.opts.open_connections, Some(rate), (Duration::ZERO, duration)).await?;
    // The listener stops 5 s after the last notification.
    let notifications = notes.await?;
    b.gateway_rss_kib = b.gateway_rss_kib.max(gw.stop(Duration::from_secs(20)).await);
    b.worker_rss_kib = b.worker_rss_kib.max(worker.stop(Duration::from_secs(20)).await);
    let mut conn = PgConnection::connect(&b.env.db_url).await?;
    let changes: Vec<(i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT position, committed_at FROM clerk.changes WHERE position IS NOT NULL ORDER BY position")
            .fetch_all(&mut conn)
            .await?;
    let _ = conn.close().await;
    let mut lags = lags_ms(&changes, &notifications);
    anyhow::ensure!(!lags.is_empty(), "no change was notified");
    lags.sort_by(f64::total_cmp);
    let q = |p: f64| lags[((lags.len() - 1) as f64 * p).round() as usize];
    let (p50, p99, max) = (q(0.5), q(0.99), lags[lags.len() - 1]);
    eprintln!(
        "feed latency: {} changes at {rate:.0} events/s, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        lags.len()
    );
    b.rows.push(
        Row::new(format!("change notification p99 @ {rate:.0}/s"), p99, "ms")
            .goal(&targets::FEED_NOTIFY_P99_MS)
            .require_no_errors(load.errors + u64::from(lags.len() < changes.len()))
            .note(format!(
                "{} changes, {} notifications; p50 {p50:.1} ms, max {max:.1} ms; from the writing transaction's now() \
                 (before its commit) to the LISTEN arrival",
                lags.len(),
                notifications.len()
            )),
    );
    b.details.insert(
        "feed_latency".into(),
        json!({"rate": rate, "changes": lags.len(), "notifications": notifications.len(),
               "p50_ms": p50, "p99_ms": p99, "max_ms": max, "load": load}),
    );
    truncate(b).await
}

/// Per change, the time from its `committed_at` to the first notification at or past its position
/// (notifications arrive in position order).
fn lags_ms(changes: &[(i64, DateTime<Utc>)], notifications: &[(i64, DateTime<Utc>)]) -> Vec<f64> {
    let mut lags = Vec::with_capacity(changes.len());
    let mut n = notifications.iter().peekable();
    for (position, at) in changes {
        while n.next_if(|(p, _)| p < position).is_some() {}
        let Some((_, arrived)) = n.peek() else { break };
        lags.push((*arrived - *at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
    }
    lags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_timed_to_the_first_notification_covering_its_position() {
        let t = |ms: i64| DateTime::from_timestamp_millis(1_000_000 + ms).unwrap();
        let changes = [(1, t(0)), (2, t(1)), (3, t(2)), (4, t(10))];
        let notes = [(2, t(5)), (4, t(12))];
        assert_eq!(lags_ms(&changes, &notes), [5.0, 4.0, 10.0, 2.0]);
        assert_eq!(lags_ms(&changes, &notes[..1]), [5.0, 4.0], "an uncovered change is not timed");
    }
}

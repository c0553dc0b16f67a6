//! The change feed (issue 21): its cost and its latency.
//!
//! 1. Throughput: one worker from the same pre-filled queue as the worker phase, with the feed
//!    off then on then on then off (the order evens out drift of the shared machine); the ratio of
//!    the mean on to the mean off. "Off" is the database-level switch
//!    (`ALTER DATABASE ... SET clerk.changes = off`: every new session's triggers return at once);
//!    "on" includes the leader's sequencer and the relay publishing to `<prefix>.changes`. The
//!    relay's catch-up after the run (until it has published the last position) is reported apart.
//! 2. Latency: the gateway and one worker at the e2e rate (2,000 events/s), a `LISTEN
//!    clerk_changes` connection in the bench; each change's latency is from its commit to the
//!    arrival of the first notification whose position covers it. The commit is when a poller in
//!    the bench (every 2 ms) first sees the row: `committed_at` is the writing transaction's
//!    `now()`, its start, and the worker's transaction itself takes tens to hundreds of ms under
//!    load (track_commit_timestamp would give the exact time but needs a server restart). The
//!    figure from `committed_at` and the transactions' own durations are reported beside it.
//!    The run starts with a `CHECKPOINT`: the throughput runs before it leave gigabytes of WAL and
//!    dirty buffers, and the checkpoints they trigger would flush them during this run (their
//!    sync phases stall WAL flushes, so commits, for up to a second on a small VM). Checkpoints
//!    that still happen during the run are counted, and the slowest change's time is reported,
//!    to be matched with the server's `checkpoint starting/complete` log lines.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// How often the latency run looks for newly committed changes.
const COMMIT_POLL: Duration = Duration::from_millis(2);

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

/// One worker process through the pre-filled workload: events/s, (feed on) how long the relay took
/// after the run to publish the last position, the failed messages and the changes written.
async fn one_run(b: &mut Bench, on: bool) -> anyhow::Result<(f64, Option<f64>, u64, i64)> {
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
    let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM clerk.changes").fetch_one(&mut conn).await?;
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
    Ok((rate, relay_s, failures as u64, changes))
}

async fn throughput(b: &mut Bench) -> anyhow::Result<()> {
    let (mut on, mut off, mut relay, mut errors, mut changes) = (Vec::new(), Vec::new(), Vec::new(), 0, 0);
    for feed_on in [false, true, true, false] {
        let (rate, relay_s, failures, written) = one_run(b, feed_on).await?;
        errors += failures;
        if feed_on {
            on.push(rate);
            relay.extend(relay_s);
            changes = written;
        } else {
            off.push(rate);
        }
    }
    switch(b, true).await?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (on_rate, off_rate) = (mean(&on), mean(&off));
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

/// When each change became visible to other sessions (its transaction's commit), and when it was
/// first seen positioned (the sequencer round's commit), as a poller sees them: every
/// [`COMMIT_POLL`], the rows not positioned yet and those positioned since the previous poll,
/// each stamped with the `statement_timestamp()` of the first poll that returned it so (its
/// snapshot is taken just after). Each moment lies between that poll and the one before.
#[derive(Default)]
struct Seen {
    committed: HashMap<i64, DateTime<Utc>>,
    positioned: HashMap<i64, DateTime<Utc>>,
}

async fn watch_commits(db_url: String, stop: Arc<AtomicBool>) -> anyhow::Result<Seen> {
    let mut conn = PgConnection::connect(&db_url).await?;
    let mut seen = Seen::default();
    let mut last_position = 0_i64;
    while !stop.load(Ordering::Relaxed) {
        let rows: Vec<(i64, Option<i64>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT seq, position, statement_timestamp() FROM clerk.changes WHERE position IS NULL
             UNION ALL
             SELECT seq, position, statement_timestamp() FROM clerk.changes WHERE position > $1",
        )
        .bind(last_position)
        .fetch_all(&mut conn)
        .await?;
        for (seq, position, at) in rows {
            seen.committed.entry(seq).or_insert(at);
            if let Some(p) = position {
                seen.positioned.entry(seq).or_insert(at);
                last_position = last_position.max(p);
            }
        }
        tokio::time::sleep(COMMIT_POLL).await;
    }
    let _ = conn.close().await;
    Ok(seen)
}

/// p50, p99 and max of `v` (sorted here).
fn quantiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v.get(((v.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(f64::NAN);
    (q(0.5), q(0.99), v.last().copied().unwrap_or(f64::NAN))
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
    let stop = Arc::new(AtomicBool::new(false));
    let commits = tokio::spawn(watch_commits(b.env.db_url.clone(), stop.clone()));
    let checkpoints_before = checkpoint(&b.env.db_url).await;
    let (gw, url) = spawn_gateway(b).await?;
    let mut worker = Service::worker(&b.paths, &b.env, 0)?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    let rate = b.opts.e2e_rate;
    let duration = Duration::from_secs_f64(b.opts.e2e_secs);
    let corpus = Arc::new(Corpus::realistic(8_192, 50_000, 5));
    let load = gateway_load(b, &url, corpus, b.opts.open_connections, Some(rate), (Duration::ZERO, duration)).await?;
    // The listener stops 5 s after the last notification.
    let notifications = notes.await?;
    stop.store(true, Ordering::Relaxed);
    let commits = commits.await??;
    let rounds = feed_metrics(&worker).await;
    let checkpoints = match (checkpoints_before, checkpoints(&b.env.db_url).await) {
        (Some(before), Some(after)) => format!("{} checkpoints during the run", after - before),
        _ => "checkpoints not counted".to_owned(),
    };
    b.gateway_rss_kib = b.gateway_rss_kib.max(gw.stop(Duration::from_secs(20)).await);
    b.worker_rss_kib = b.worker_rss_kib.max(worker.stop(Duration::from_secs(20)).await);
    let mut conn = PgConnection::connect(&b.env.db_url).await?;
    let changes: Vec<(i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT position, seq, committed_at FROM clerk.changes WHERE position IS NOT NULL ORDER BY position",
    )
    .fetch_all(&mut conn)
    .await?;
    let _ = conn.close().await;
    // From the writing transaction's start (`committed_at` is its now()): what the bench measured
    // before, the transaction's own duration included.
    let from_start: Vec<(i64, DateTime<Utc>)> = changes.iter().map(|(p, _, at)| (*p, *at)).collect();
    // From the commit, as the poller saw it (it sees every change: one positioned between two
    // polls has a position above every earlier one).
    let from_commit: Vec<(i64, DateTime<Utc>)> =
        changes.iter().filter_map(|(p, seq, _)| commits.committed.get(seq).map(|at| (*p, *at))).collect();
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    let mut in_tx: Vec<f64> =
        changes.iter().filter_map(|(_, seq, at)| commits.committed.get(seq).map(|c| ms(*c - *at))).collect();
    // Where the time from the commit goes: waiting for a sequencer round to position it, then
    // from that round's commit to the notification's arrival.
    let mut to_round: Vec<f64> = changes
        .iter()
        .filter_map(|(_, seq, _)| Some(ms(*commits.positioned.get(seq)? - *commits.committed.get(seq)?)))
        .collect();
    let from_round: Vec<(i64, DateTime<Utc>)> =
        changes.iter().filter_map(|(p, seq, _)| commits.positioned.get(seq).map(|at| (*p, *at))).collect();
    let mut delivery = lags_ms(&from_round, &notifications);
    let (r50, r99, _) = quantiles(&mut to_round);
    let (d50, d99, _) = quantiles(&mut delivery);
    let mut lags = lags_ms(&from_commit, &notifications);
    let slowest =
        lags.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or_else(String::new, |(i, _)| {
            format!("slowest committed at {}", from_commit[i].1.format("%H:%M:%S%.3f"))
        });
    let mut lags_start = lags_ms(&from_start, &notifications);
    anyhow::ensure!(!lags.is_empty(), "no change was notified");
    let (p50, p99, max) = quantiles(&mut lags);
    let (s50, s99, smax) = quantiles(&mut lags_start);
    let (t50, t99, tmax) = quantiles(&mut in_tx);
    eprintln!(
        "feed latency: {} changes at {rate:.0} events/s; from the commit p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; \
         from the writing transaction's start p50 {s50:.1}, p99 {s99:.1}, max {smax:.1}; transaction start to commit \
         p50 {t50:.1}, p99 {t99:.1}, max {tmax:.1}; commit to the positioning round's commit p50 {r50:.1}, \
         p99 {r99:.1}; that round's commit to the notification p50 {d50:.1}, p99 {d99:.1}; {} of {} commits seen by \
         the poller; sequencer {rounds}; {checkpoints}; {slowest}",
        lags.len(),
        from_commit.len(),
        changes.len()
    );
    b.rows.push(
        Row::new(format!("change notification p99 @ {rate:.0}/s"), p99, "ms")
            .goal(&targets::FEED_NOTIFY_P99_MS)
            .require_no_errors(load.errors + u64::from(lags.len() < changes.len()))
            .note(format!(
                "{} changes, {} notifications; from the commit (a poller every {} ms sees it) to the LISTEN arrival: \
                 p50 {p50:.1} ms, max {max:.1} ms; from the writing transaction's start (committed_at): p50 {s50:.1}, \
                 p99 {s99:.1} ms; the transactions themselves p50 {t50:.1}, p99 {t99:.1} ms; commit to its \
                 sequencer round's commit p50 {r50:.1}, p99 {r99:.1} ms, that to the arrival p50 {d50:.1}, p99 {d99:.1} ms; \
                 after a CHECKPOINT, {checkpoints}",
                lags.len(),
                notifications.len(),
                COMMIT_POLL.as_millis()
            )),
    );
    b.details.insert(
        "feed_latency".into(),
        json!({"rate": rate, "changes": lags.len(), "notifications": notifications.len(),
               "p50_ms": p50, "p99_ms": p99, "max_ms": max,
               "from_transaction_start": {"p50_ms": s50, "p99_ms": s99, "max_ms": smax},
               "transaction_ms": {"p50": t50, "p99": t99, "max": tmax},
               "commit_to_round_ms": {"p50": r50, "p99": r99}, "round_to_arrival_ms": {"p50": d50, "p99": d99},
               "commit_poll_ms": COMMIT_POLL.as_millis() as u64, "sequencer": rounds, "checkpoints": checkpoints,
               "slowest": slowest, "load": load}),
    );
    truncate(b).await
}

/// Runs a `CHECKPOINT` and returns the server's checkpoint count after it (`None` if either fails:
/// the role may lack the right, or the server be older or newer than the statistics view).
pub(super) async fn checkpoint(db_url: &str) -> Option<i64> {
    let mut conn = PgConnection::connect(db_url).await.ok()?;
    if let Err(e) = sqlx::query("CHECKPOINT").execute(&mut conn).await {
        eprintln!("CHECKPOINT failed ({e}); the run may flush the earlier runs' writes");
    }
    let _ = conn.close().await;
    checkpoints(db_url).await
}

/// Checkpoints the server has run (timed and requested), from `pg_stat_bgwriter` (PostgreSQL 16
/// and older) or `pg_stat_checkpointer` (17 and later).
async fn checkpoints(db_url: &str) -> Option<i64> {
    let mut conn = PgConnection::connect(db_url).await.ok()?;
    let mut n = None;
    for sql in [
        "SELECT num_timed + num_requested FROM pg_stat_checkpointer",
        "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter",
    ] {
        if let Ok(v) = sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut conn).await {
            n = Some(v);
            break;
        }
    }
    let _ = conn.close().await;
    n
}

/// The leader's sequencer rounds, from the worker's metrics: how many and their mean time.
async fn feed_metrics(worker: &Service) -> String {
    let text = worker.metrics().await.unwrap_or_default();
    let n = sum_metric(&text, "clerk_sync_worker_feed_round_seconds_count", None);
    let s = sum_metric(&text, "clerk_sync_worker_feed_round_seconds_sum", None);
    let relay = sum_metric(&text, "clerk_sync_worker_feed_relay_round_seconds_sum", None);
    let rn = sum_metric(&text, "clerk_sync_worker_feed_relay_round_seconds_count", None);
    format!(
        "{n:.0} rounds, mean {:.2} ms; relay {rn:.0} rounds, mean {:.2} ms",
        if n > 0.0 { s / n * 1000.0 } else { 0.0 },
        if rn > 0.0 { relay / rn * 1000.0 } else { 0.0 }
    )
}

/// Per change (its position and a start time), the time to the first notification at or past its
/// position (notifications arrive in position order).
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

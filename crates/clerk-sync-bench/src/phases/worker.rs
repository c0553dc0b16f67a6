//! The database ceiling and the worker from a pre-filled queue: the same workload (200,000
//! messages by default) written first by the plain program, then applied by one worker process,
//! then by two, each time into emptied tables.
//!
//! A worker run is timed from the moment its processes start until its `/metrics` count every
//! message as handled, `clerk.webhook_events` holds a committed outcome for every distinct svix-id
//! and the queue is empty.

use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use super::{Bench, history, targets};
use crate::procs::{Service, sum_metric};
use crate::report::Row;
use crate::{broker, cpu, dbceiling};

const EVENTS_METRIC: &str = "clerk_sync_worker_events_total";
const OUTCOMES: [&str; 6] = ["applied", "stale", "ignored", "duplicate", "retried", "dead_lettered"];
/// Longest a worker run may take before the phase gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
/// Pre-fill: confirm channels, and unconfirmed publishes allowed on each.
const PREFILL_CHANNELS: usize = 8;
const PREFILL_WINDOW: usize = 1024;

pub async fn database(b: &mut Bench) -> anyhow::Result<()> {
    let workload = b.workload();
    let (batch, concurrency) = (b.env.defaults.worker.batch_size, b.env.defaults.worker.concurrency);
    b.env.truncate().await?;
    let connect = b.env.ceiling_connect_options()?;
    let watch = cpu::Watch::new("ceiling program", &[]).with_database();
    let before = watch.snapshot();
    let r = dbceiling::run(&connect, &workload.messages, batch, concurrency).await?;
    let used = cpu::PerMessage::between(&before, &watch.snapshot(), r.messages as u64);
    eprintln!(
        "database ceiling: {:.0} events/s ({} batches of {batch}, {concurrency} connections, {} rows, {:.1} s)",
        r.events_per_s, r.batches, r.rows_written, r.seconds
    );
    b.db_ceiling = Some(r.events_per_s);
    let via = if r.unix_socket { "Unix socket" } else { "TCP" };
    b.rows.push(Row::new("database ceiling (plain batched upserts)", r.events_per_s, "events/s").note(format!(
        "{} messages in {:.1} s, batches of {batch}, {concurrency} concurrent transactions, via {via}; CPU per \
         event {}",
        r.messages,
        r.seconds,
        used.line()
    )));
    b.details.insert("database".into(), cpu::with_cpu(&r, &used));
    b.env.truncate().await?;
    Ok(())
}

async fn committed(db_url: &str) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect(db_url).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM clerk.webhook_events WHERE outcome IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(n)
}

/// One run per entry of `b.opts.workers` (worker processes at once); one process also runs with the
/// event history off, for the on/off ratio: off, on, on, off, each after a `CHECKPOINT` and
/// compared by their means, so that neither setting always runs first (after the phases before
/// it, whose writes the server is still flushing) or on a fuller disk cache.
pub async fn workers(b: &mut Bench) -> anyhow::Result<()> {
    let workload = b.workload();
    let total = workload.messages.len();
    let distinct = i64::try_from(workload.shape.distinct)?;
    let (mut on_rates, mut off_rates, mut history_errors, mut history_rows) = (Vec::new(), Vec::new(), 0, Vec::new());
    let mut x1_note = String::new();
    for (n, keep_history) in history::worker_runs(&b.opts.workers) {
        b.env.truncate().await?;
        // Each on run's own stored events only (bytes per stored event are read from them).
        history::execute(&b.env.db_url, "TRUNCATE clerk.event_history").await?;
        b.purge().await?;
        let publish = broker::prefill(&b.env, &b.amqp, &workload.messages, PREFILL_CHANNELS, PREFILL_WINDOW).await?;
        let depth = b.queue_depth().await?;
        eprintln!(
            "pre-filled {total} messages in {:.1} s ({:.0} msg/s); queue depth {depth}",
            publish.as_secs_f64(),
            total as f64 / publish.as_secs_f64()
        );
        anyhow::ensure!(depth as usize == total, "the queue holds {depth} messages, expected {total}");

        if n == 1 {
            super::feed::checkpoint(&b.env.db_url).await;
        }
        let started = Instant::now();
        let mut procs = Vec::new();
        for i in 0..n {
            let keep = if keep_history { "true" } else { "false" };
            procs.push(Service::worker_with(&b.paths, &b.env, i, &[("CLERK_SYNC__WORKER__KEEP_HISTORY", keep)])?);
        }
        let pids: Vec<_> = procs.iter().map(|p| ("worker", p.pid())).collect();
        let watch = cpu::Watch::new("bench", &pids).with_database();
        let before = watch.snapshot();
        let (elapsed, counts) = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            anyhow::ensure!(started.elapsed() < RUN_TIMEOUT, "{n} worker(s) did not finish in {RUN_TIMEOUT:?}");
            let mut counts = [0f64; OUTCOMES.len()];
            for p in procs.iter_mut() {
                p.sample_rss();
                let Ok(text) = p.metrics().await else { continue };
                for (count, outcome) in counts.iter_mut().zip(OUTCOMES) {
                    *count += sum_metric(&text, EVENTS_METRIC, Some(&format!("outcome=\"{outcome}\"")));
                }
            }
            let settled: f64 = counts[..4].iter().sum();
            if settled as usize >= total {
                let at = started.elapsed();
                if committed(&b.env.db_url).await? >= distinct && b.queue_depth().await? == 0 {
                    break (at, counts);
                }
            }
        };
        // Up to the moment the run was seen complete (the polling after it adds a little).
        let used = cpu::PerMessage::between(&before, &watch.snapshot(), total as u64);
        let rate = total as f64 / elapsed.as_secs_f64();
        let mut rss = 0;
        for p in procs {
            rss = rss.max(p.stop(Duration::from_secs(20)).await);
        }
        b.worker_rss_kib = b.worker_rss_kib.max(rss);
        let outcomes: serde_json::Map<String, serde_json::Value> =
            OUTCOMES.iter().zip(counts).map(|(o, c)| ((*o).to_owned(), json!(c as u64))).collect();
        let failures = (counts[4] + counts[5]) as u64;
        let label = if keep_history { format!("x{n}") } else { format!("x{n}, history off") };
        eprintln!(
            "worker {label}: {total} events in {:.2} s = {rate:.0} events/s; outcomes {outcomes:?}; CPU per event {}",
            elapsed.as_secs_f64(),
            used.line()
        );
        let note = format!(
            "{total} messages ({distinct} distinct) in {:.1} s; pre-fill {:.1} s; peak RSS {:.0} MiB; CPU per event {}",
            elapsed.as_secs_f64(),
            publish.as_secs_f64(),
            rss as f64 / 1024.0,
            used.line()
        );
        if n == 1 {
            history_errors += failures;
            b.detail(
                "worker",
                json!({"workers": n, "keep_history": keep_history, "seconds": elapsed.as_secs_f64(),
                       "events_per_s": rate, "outcomes": outcomes, "peak_rss_kib": rss, "cpu_us_per_message": used}),
            );
            if keep_history {
                on_rates.push(rate);
                history_rows = history::stored_bytes(b, workload.shape.mean_bytes).await?;
                x1_note = note;
            } else {
                off_rates.push(rate);
            }
            continue;
        }
        let row = Row::new(format!("worker x{n} events/s vs database ceiling"), rate, "events/s").ceiling(b.db_ceiling);
        b.rows.push(row.require_no_errors(failures).note(note));
        b.detail(
            "worker",
            json!({"workers": n, "messages": total, "distinct": distinct, "seconds": elapsed.as_secs_f64(),
                   "events_per_s": rate, "prefill_seconds": publish.as_secs_f64(), "outcomes": outcomes,
                   "peak_rss_kib": rss, "cpu_us_per_message": used}),
        );
    }
    let history_on = history::mean(&on_rates);
    if let Some(on) = history_on {
        // Before the x2 run's row, as the table has always listed them.
        let x1 = [
            Row::new("worker x1 events/s", on, "events/s")
                .goal(&targets::WORKER_EVENTS_PER_S)
                .require_no_errors(history_errors)
                .note(format!("mean of {} runs; the last: {x1_note}", on_rates.len())),
            Row::new("worker x1 events/s vs database ceiling", on, "events/s")
                .ceiling(b.db_ceiling)
                .goal(&targets::WORKER_VS_DATABASE)
                .require_no_errors(history_errors),
        ];
        let at =
            b.rows.iter().position(|r| r.figure.starts_with("worker x") && r.figure.ends_with("vs database ceiling"));
        let at = at.unwrap_or(b.rows.len());
        b.rows.splice(at..at, x1);
    }
    if history_on.is_some() && !off_rates.is_empty() {
        b.rows.push(history::on_off_row(&on_rates, &off_rates, history_errors));
    }
    b.rows.extend(history_rows);
    // The whole catalogue, against the users-only figure of this run (issue 19).
    super::catalogue::mixed(b, history_on).await?;
    Ok(())
}

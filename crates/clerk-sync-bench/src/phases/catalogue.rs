//! The mixed-catalogue worker run (issue 19): one worker process through a pre-filled queue of
//! the whole catalogue ([`crate::catalogue_mix`], sessions about half), timed like the users-only
//! runs in `worker.rs`, against the users-only x1 figure of the same run. Afterwards each table's
//! row count goes to the details (the closing note lists them).

use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use super::{Bench, targets};
use crate::procs::{Service, sum_metric};
use crate::report::Row;
use crate::{broker, catalogue_mix};

const EVENTS_METRIC: &str = "clerk_sync_worker_events_total";
const SETTLED: [&str; 4] = ["applied", "stale", "ignored", "duplicate"];
const FAILED: [&str; 2] = ["retried", "dead_lettered"];
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
const TABLES: &[&str] = &[
    "users",
    "organizations",
    "organization_memberships",
    "sessions",
    "organization_invitations",
    "roles",
    "permissions",
    "organization_domains",
    "waitlist_entries",
    "subscriptions",
    "subscription_items",
    "payment_attempts",
];

async fn scalar(db_url: &str, sql: &str) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect(db_url).await?;
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&mut conn).await?;
    let _ = conn.close().await;
    Ok(n)
}

/// One worker on the mixed stream; `users_only` is the x1 rate of the users-only workload.
pub async fn mixed(b: &mut Bench, users_only: Option<f64>) -> anyhow::Result<()> {
    let workload = catalogue_mix::generate(b.opts.events, 5, &b.env.run_id);
    let total = workload.messages.len();
    let distinct = i64::try_from(workload.shape.distinct)?;
    b.env.truncate().await?;
    b.purge().await?;
    let publish = broker::prefill(&b.env, &b.amqp, &workload.messages, 8, 1024).await?;
    anyhow::ensure!(b.queue_depth().await? as usize == total, "the queue does not hold the {total} messages");
    // On the same footing as the users-only runs it is compared with.
    super::feed::checkpoint(&b.env.db_url).await;
    let started = Instant::now();
    let mut worker = Service::worker_with(&b.paths, &b.env, 0, &[])?;
    let (elapsed, failures) = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        anyhow::ensure!(started.elapsed() < RUN_TIMEOUT, "the mixed run did not finish in {RUN_TIMEOUT:?}");
        worker.sample_rss();
        let Ok(text) = worker.metrics().await else { continue };
        let count = |o: &[&str]| -> f64 {
            o.iter().map(|o| sum_metric(&text, EVENTS_METRIC, Some(&format!("outcome=\"{o}\"")))).sum()
        };
        if count(&SETTLED) as usize >= total {
            let at = started.elapsed();
            let done = "SELECT count(*) FROM clerk.webhook_events WHERE outcome IS NOT NULL";
            if scalar(&b.env.db_url, done).await? >= distinct && b.queue_depth().await? == 0 {
                break (at, count(&FAILED) as u64);
            }
        }
    };
    let rss = worker.stop(Duration::from_secs(20)).await;
    b.worker_rss_kib = b.worker_rss_kib.max(rss);
    let rate = total as f64 / elapsed.as_secs_f64();
    // In the order of TABLES, for the closing note; the JSON has them too.
    let mut counts = Vec::with_capacity(TABLES.len());
    for t in TABLES {
        counts.push((*t, scalar(&b.env.db_url, &format!("SELECT count(*) FROM clerk.{t}")).await?));
    }
    let rows: serde_json::Map<String, serde_json::Value> =
        counts.iter().map(|(t, n)| ((*t).to_owned(), json!(n))).collect();
    let listed = counts.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ");
    eprintln!(
        "worker x1, mixed catalogue: {total} events in {:.2} s = {rate:.0} events/s; rows after the run: {listed}",
        elapsed.as_secs_f64()
    );
    let note = format!(
        "{total} messages ({distinct} distinct, sessions about half) in {:.1} s; pre-fill {:.1} s; rows: {listed}",
        elapsed.as_secs_f64(),
        publish.as_secs_f64()
    );
    b.rows.push(
        Row::new("worker x1 mixed catalogue events/s", rate, "events/s")
            .goal(&targets::WORKER_MIXED_EVENTS_PER_S)
            .require_no_errors(failures)
            .note(note),
    );
    b.rows.push(
        Row::new("worker x1 mixed catalogue / users only", rate, "events/s")
            .ceiling(users_only)
            .goal(&targets::WORKER_MIXED_VS_USERS)
            .require_no_errors(failures),
    );
    b.detail(
        "worker_mixed_catalogue",
        json!({"messages": total, "distinct": distinct, "seconds": elapsed.as_secs_f64(), "events_per_s": rate,
               "by_type": workload.shape.by_type, "rows": rows, "peak_rss_kib": rss}),
    );
    Ok(())
}

//! `clerk-sync reproject` of 1,000,000 events: seconds, events per second and the CLI's peak RSS,
//! after truncating the synced tables; the rows it rebuilds of users, organizations and
//! memberships are counted against the objects the history names.
//!
//! The events are the bench's own workload (parseable, with the ordering guard's real work:
//! creations, updates, deletions and memberships), repeated with its object ids renamed per round
//! so that each round is a disjoint set of objects, and stored as the worker stores them
//! (`codec::encode`, the subject columns from `Subject::of`), in `UNNEST` batches.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clerk_sync_store::catalogue::Resource;
use clerk_sync_store::event::{self, Change};
use clerk_sync_store::history::{Subject, codec};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio::time::Instant;

use super::{cli, execute};
use crate::phases::Bench;
use crate::procs;
use crate::report::Row;
use crate::workload::Workload;

const REPROJECT_EVENTS: usize = 1_000_000;
/// Rows per `UNNEST` insert, two inserts at a time.
const INSERT_BATCH: usize = 5_000;
/// Longest `reproject` may take before the bench stops it.
const CLI_TIMEOUT: Duration = Duration::from_secs(900);

/// `body` with every `_2bench0` (the start of each bench object id) renamed to `_2bench<round>`.
fn renamed(body: &[u8], round: u8) -> Vec<u8> {
    const NEEDLE: &[u8] = b"_2bench0";
    let mut out = body.to_vec();
    if round == 0 {
        return out;
    }
    let mut i = 0;
    while i + NEEDLE.len() <= out.len() {
        if out[i..].starts_with(NEEDLE) {
            out[i + NEEDLE.len() - 1] = b'0' + round;
            i += NEEDLE.len();
        } else {
            i += 1;
        }
    }
    out
}

/// One `UNNEST` insert's columns.
#[derive(Default)]
struct Batch {
    received: Vec<DateTime<Utc>>,
    ids: Vec<String>,
    types: Vec<String>,
    occurred: Vec<Option<DateTime<Utc>>>,
    objects: Vec<Option<String>>,
    users: Vec<Option<String>>,
    orgs: Vec<Option<String>>,
    outcomes: Vec<&'static str>,
    bodies: Vec<Vec<u8>>,
}

impl Batch {
    fn push(&mut self, svix_id: String, received_ms: i64, body: Vec<u8>) -> anyhow::Result<()> {
        let e = event::parse(&svix_id, received_ms, &body).with_context(|| format!("parsing {svix_id}"))?;
        let s = Subject::of(&e);
        self.received.push(DateTime::from_timestamp_millis(received_ms).context("received_at out of range")?);
        self.occurred.push(e.occurred_at_ms.and_then(DateTime::from_timestamp_millis));
        self.outcomes.push(if matches!(e.change, Change::Ignore) { "ignored" } else { "applied" });
        self.types.push(e.event_type);
        self.objects.push(s.object_id);
        self.users.push(s.user_id);
        self.orgs.push(s.organization_id);
        self.bodies.push(codec::encode(&body));
        self.ids.push(svix_id);
        Ok(())
    }

    async fn insert(self, pool: &PgPool) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "INSERT INTO clerk.event_history (received_at, svix_id, event_type, occurred_at, object_id, user_id,
                 organization_id, outcome, body)
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::bytea[])",
        )
        .bind(&self.received)
        .bind(&self.ids)
        .bind(&self.types)
        .bind(&self.occurred)
        .bind(&self.objects)
        .bind(&self.users)
        .bind(&self.orgs)
        .bind(&self.outcomes)
        .bind(&self.bodies)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// Stores `total` events: the workload's distinct messages round after round, each round's objects
/// renamed and its times moved one workload span earlier. Returns the events stored.
async fn fill_reproject(pool: &PgPool, workload: &Workload, total: usize) -> anyhow::Result<u64> {
    let mut seen = HashSet::new();
    let distinct: Vec<_> = workload.messages.iter().filter(|m| seen.insert(m.svix_id.as_str())).collect();
    let (first, last) = (distinct.first().context("empty workload")?, distinct.last().context("empty workload")?);
    let span_ms = last.received_at_ms - first.received_at_ms + 1_000;
    let distinct = &distinct;
    let mut events = (0..10u8).flat_map(|r| distinct.iter().map(move |m| (r, *m))).take(total);
    let batches = std::iter::from_fn(move || {
        let mut batch = Batch::default();
        for (r, m) in events.by_ref().take(INSERT_BATCH) {
            let received_ms = m.received_at_ms - i64::from(r) * span_ms;
            if let Err(e) = batch.push(format!("{}r{r}", m.svix_id), received_ms, renamed(&m.body, r)) {
                return Some(Err(e));
            }
        }
        (!batch.ids.is_empty()).then_some(Ok(batch))
    });
    stream::iter(batches)
        .map(|batch| async move { batch?.insert(pool).await })
        .buffer_unordered(2)
        .try_fold(0, |n, done| async move { Ok(n + done) })
        .await
}

async fn counts(conn: &mut PgConnection, sql: &str) -> anyhow::Result<[i64; 3]> {
    let (a, b, c): (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(sql.to_owned())).fetch_one(conn).await?;
    Ok([a, b, c])
}

pub(super) async fn reproject(b: &mut Bench) -> anyhow::Result<()> {
    let workload = b.workload();
    let db_url = b.env.db_url.clone();
    let tables: Vec<&str> = Resource::ALL.iter().map(|r| r.table()).collect();
    execute(&db_url, &format!("TRUNCATE clerk.event_history, clerk.{}", tables.join(", clerk."))).await?;
    let started = Instant::now();
    let pool = b.env.pool(2).await?;
    let stored = fill_reproject(&pool, &workload, REPROJECT_EVENTS).await?;
    pool.close().await;
    execute(&db_url, "ANALYZE clerk.event_history").await?;
    let fill_s = started.elapsed().as_secs_f64();
    let mut conn = PgConnection::connect(&db_url).await?;
    let expected = counts(
        &mut conn,
        "SELECT count(DISTINCT object_id) FILTER (WHERE event_type LIKE 'user.%'),
                count(DISTINCT object_id) FILTER (WHERE event_type LIKE 'organization.%'),
                count(DISTINCT object_id) FILTER (WHERE event_type LIKE 'organizationMembership.%')
         FROM clerk.event_history",
    )
    .await?;
    eprintln!("reproject: {stored} events stored in {fill_s:.1} s; objects {expected:?}");

    let logs = b.paths.out_dir().join("logs");
    let mut cmd = cli(b, &["--json", "reproject", "--yes"])?;
    cmd.stdout(std::fs::File::create(logs.join("reproject.json"))?)
        .stderr(std::fs::File::create(logs.join("reproject.log"))?);
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting clerk-sync reproject")?;
    let (status, peak_kib) = procs::wait_sampling_peak(&mut child, CLI_TIMEOUT).await?;
    let seconds = started.elapsed().as_secs_f64();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(logs.join("reproject.json"))?).unwrap_or_default();
    let rebuilt = counts(
        &mut conn,
        "SELECT (SELECT count(*) FROM clerk.users), (SELECT count(*) FROM clerk.organizations),
                (SELECT count(*) FROM clerk.organization_memberships)",
    )
    .await?;
    let _ = conn.close().await;
    // The events of the stored resources, which reproject reads; the others (emails, SMS) are
    // stored but no table is built from them.
    let read: u64 = report["kinds"].as_array().map_or(0, |k| k.iter().filter_map(|k| k["events"].as_u64()).sum());
    let (rate, mib) = (read as f64 / seconds, peak_kib as f64 / 1024.0);
    let code = status.and_then(|s| s.code());
    eprintln!(
        "reproject --yes: {read} of {stored} stored events in {seconds:.1} s = {rate:.0} events/s, CLI peak RSS \
         {mib:.1} MiB (exit {code:?}); rows {rebuilt:?} for objects {expected:?}"
    );
    // Users and memberships: a row (or tombstone) for each object; organizations also come nested in
    // memberships, so there can be more rows than organization events name.
    let wrong = u64::from(rebuilt[0] != expected[0]) + u64::from(rebuilt[2] != expected[2]);
    let errors = u64::from(code != Some(0)) + wrong + u64::from(rebuilt[1] < expected[1]) + u64::from(read == 0);
    let objects = format!(
        "{} users, {} organizations, {} memberships rebuilt ({} / {} / {} objects in the history)",
        rebuilt[0], rebuilt[1], rebuilt[2], expected[0], expected[1], expected[2]
    );
    b.rows.push(Row::new("reproject of 1M events", seconds, "s").require_no_errors(errors).note(format!(
        "the release clerk-sync reproject --yes (every stored resource) after truncating the synced tables: {read} \
         of the {stored} stored events are of stored resources, {rate:.0} of them per second; {objects}; the \
         history filled in {fill_s:.0} s"
    )));
    b.rows
        .push(Row::new("reproject events/s", rate, "events/s").note("events of the stored resources read and applied"));
    b.rows.push(
        Row::new("CLI peak RSS reprojecting 1M events", mib, "MiB")
            .note("VmHWM of the clerk-sync process, read from /proc every 5 ms"),
    );
    b.details.insert(
        "history_reproject".into(),
        json!({"events": stored, "read": read, "fill_seconds": fill_s, "seconds": seconds, "events_per_s": rate,
               "cli_peak_rss_kib": peak_kib, "exit": code, "objects": expected, "rows": rebuilt, "report": report}),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_round_names_other_objects_and_still_parses() {
        let w = crate::workload::generate(2_000, 3, "t");
        let m = w.messages.iter().find(|m| m.event_type == "organizationMembership.created").unwrap();
        let again = renamed(&m.body, 3);
        assert_eq!(again.len(), m.body.len());
        let (a, b) = (event::parse("a", 0, &m.body).unwrap(), event::parse("b", 0, &again).unwrap());
        let (sa, sb) = (Subject::of(&a), Subject::of(&b));
        assert!(sb.user_id.as_deref().unwrap().starts_with("user_2bench3"), "{sb:?}");
        assert!(sb.organization_id.as_deref().unwrap().starts_with("org_2bench3"), "{sb:?}");
        assert_ne!(sa.object_id, sb.object_id);
        assert_eq!(renamed(&m.body, 0), m.body);
    }
}

//! `clerk-sync events list --user` on 5,000,000 stored events: the release CLI's wall time per call
//! (the target) and the query alone through `clerk_sync_store::history::query::list`.
//!
//! The rows are written by SQL, not by a worker (that would take minutes): one day per table for
//! 20 days before yesterday, each table filled, indexed once (a sorted index build is about twice
//! as fast as maintaining the indexes row by row) and attached as that day's partition, with
//! the parent's own index definitions so that `ATTACH` adopts them instead of building more. Every
//! row stores the same compressed body, the corpus body of median stored size: `events list` never
//! reads bodies, but their bytes decide how many rows share a heap page.

use std::process::Stdio;

use anyhow::Context;
use chrono::{NaiveDate, NaiveTime, Utc};
use clerk_sync_store::history::{codec, query};
use futures_util::{StreamExt, TryStreamExt, stream};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::time::Instant;

use super::{cli, percentile, sorted};
use crate::corpus::{self, Corpus};
use crate::phases::{Bench, targets};
use crate::report::Row;

const LIST_EVENTS: i64 = 5_000_000;
const LIST_DAYS: i64 = 20;
const LIST_USERS: i64 = 200_000;
/// Runs of the release CLI, one user each; the query alone is timed for more.
const CLI_CALLS: usize = 200;
const QUERY_CALLS: usize = 1_000;
const LIMIT: i64 = 50;
/// The filler's types, one per row in turn (a user's own events dominate, as in the workload).
const FILLER_TYPES: &str = "ARRAY['user.updated', 'user.updated', 'user.updated', 'user.updated', 'user.created', \
                            'session.created', 'session.created', 'session.ended', 'organizationMembership.created', \
                            'email.created']";

/// The corpus body whose stored (compressed) size is the median.
fn median_body(corpus: &Corpus) -> Vec<u8> {
    let now = Utc::now().timestamp_millis();
    let mut stored: Vec<Vec<u8>> = (0..4_096).map(|i| codec::encode(&corpus.get(i).render(now))).collect();
    stored.sort_by_key(Vec::len);
    stored.swap_remove(stored.len() / 2)
}

/// The parent's index definitions as statements for a table `{table}` to be attached.
async fn partition_indexes(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'clerk.event_history'::regclass",
    )
    .fetch_all(conn)
    .await?;
    defs.iter()
        .map(|d| {
            // "CREATE INDEX <name> ON ONLY clerk.event_history USING btree (...) WHERE (...)"
            let (head, tail) = d.split_once(" ON ONLY clerk.event_history ").context("unexpected index definition")?;
            let create = head.rsplit_once(' ').map_or(head, |(c, _)| c);
            Ok(format!("{create} ON clerk.{{table}} {tail}"))
        })
        .collect()
}

/// Fills `day` with `rows` rows (global numbers from `first`) in its own table, then attaches it.
async fn fill_day(
    db_url: &str,
    day: NaiveDate,
    first: i64,
    rows: i64,
    body: &[u8],
    indexes: &[String],
) -> anyhow::Result<()> {
    let tag = day.format("%Y%m%d").to_string();
    let table = format!("event_history_{tag}");
    let lo = day.and_time(NaiveTime::MIN).and_utc();
    let (from, to) = (lo.to_rfc3339(), (lo + chrono::Duration::days(1)).to_rfc3339());
    let mut conn = PgConnection::connect(db_url).await?;
    let run = |sql: String| sqlx::raw_sql(AssertSqlSafe(sql));
    run("SET maintenance_work_mem = '256MB'".into()).execute(&mut conn).await?;
    run(format!(
        "CREATE TABLE clerk.{table} (LIKE clerk.event_history INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
         INCLUDING STORAGE)"
    ))
    .execute(&mut conn)
    .await?;
    let insert = format!(
        "INSERT INTO clerk.{table} (received_at, svix_id, event_type, occurred_at, object_id, user_id,
             organization_id, outcome, body)
         SELECT s.at, 'msg_h' || $5 || lpad(s.i::text, 8, '0'), s.t, s.at - interval '40 milliseconds',
             CASE WHEN s.t LIKE 'user.%' THEN s.u
                  WHEN s.t LIKE 'session.%' THEN 'sess_2bench' || lpad(s.g::text, 20, '0')
                  WHEN s.t LIKE 'organizationMembership.%' THEN 'orgmem_2bench' || lpad(s.g::text, 19, '0') END,
             s.u,
             CASE WHEN s.t LIKE 'organization%' THEN 'org_2bench' || lpad((s.g % 10000)::text, 22, '0') END,
             CASE WHEN s.t LIKE 'user.%' OR s.t LIKE 'organization%' THEN 'applied' ELSE 'ignored' END,
             $1
         FROM (SELECT i, $6::int8 + i AS g, $2::timestamptz + (i::float8 / $3::int8) * interval '1 day' AS at,
                      ({FILLER_TYPES})[1 + i % 10] AS t,
                      'user_2bench' || lpad(((hashint8($6::int8 + i) & 2147483647) % $4::int8)::text, 21, '0') AS u
               FROM generate_series(0::int8, $3::int8 - 1) AS i) AS s
         ORDER BY s.i"
    );
    sqlx::query(AssertSqlSafe(insert))
        .bind(body)
        .bind(lo)
        .bind(rows)
        .bind(LIST_USERS)
        .bind(&tag)
        .bind(first)
        .execute(&mut conn)
        .await?;
    for def in indexes {
        run(def.replace("{table}", &table)).execute(&mut conn).await?;
    }
    // The constraint spares ATTACH a scan of the table; it is redundant once attached.
    run(format!(
        "ALTER TABLE clerk.{table} ADD CONSTRAINT {table}_fill CHECK (received_at >= '{from}' AND received_at < '{to}');
         ALTER TABLE clerk.event_history ATTACH PARTITION clerk.{table} FOR VALUES FROM ('{from}') TO ('{to}');
         ALTER TABLE clerk.{table} DROP CONSTRAINT {table}_fill;
         ANALYZE clerk.{table}"
    ))
    .execute(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(())
}

pub(super) async fn list(b: &mut Bench) -> anyhow::Result<()> {
    let body = median_body(&b.corpus());
    let started = Instant::now();
    let mut conn = PgConnection::connect(&b.env.db_url).await?;
    let indexes = partition_indexes(&mut conn).await?;
    let today = Utc::now().date_naive();
    let per_day = LIST_EVENTS / LIST_DAYS;
    // Days before yesterday: the migration and the worker create yesterday's partition onwards.
    let days: Vec<(i64, NaiveDate)> = (0..LIST_DAYS).map(|k| (k, today - chrono::Days::new(k as u64 + 2))).collect();
    let (db_url, indexes) = (&b.env.db_url, &indexes);
    stream::iter(days.iter().map(|&(k, day)| fill_day(db_url, day, k * per_day, per_day, &body, indexes)))
        .buffer_unordered(2)
        .try_collect::<Vec<()>>()
        .await?;
    let fill_s = started.elapsed().as_secs_f64();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM clerk.event_history").fetch_one(&mut conn).await?;
    eprintln!("history: {stored} events stored in {fill_s:.1} s ({} B body each)", body.len());

    let mut rng = StdRng::seed_from_u64(20);
    let users: Vec<String> =
        (0..QUERY_CALLS).map(|_| corpus::user_id(rng.random_range(0..LIST_USERS as usize))).collect();
    let filter = |u: &str| query::Filter { user_id: Some(u.to_owned()), ..Default::default() };
    for u in users.iter().rev().take(5) {
        query::list(&mut conn, &filter(u), LIMIT).await?;
    }
    let (mut query_ms, mut found) = (Vec::new(), Vec::new());
    for u in &users {
        let t = Instant::now();
        let rows = query::list(&mut conn, &filter(u), LIMIT).await?;
        query_ms.push(t.elapsed().as_secs_f64() * 1e3);
        found.push(rows.len());
    }
    let _ = conn.close().await;

    let (mut cli_ms, mut errors) = (Vec::new(), 0u64);
    for (u, expected) in users.iter().zip(&found).take(CLI_CALLS) {
        let mut cmd = cli(b, &["--json", "events", "list", "--user", u, "--limit", &LIMIT.to_string()])?;
        let t = Instant::now();
        let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().context("running clerk-sync")?;
        cli_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let listed = String::from_utf8_lossy(&out.stdout).matches("\"svix_id\"").count();
        if !out.status.success() || listed != *expected {
            errors += 1;
            if errors == 1 {
                eprintln!(
                    "events list --user {u}: exit {:?}, {listed} events listed, {expected} expected; stderr: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
    let (query_ms, cli_ms) = (sorted(query_ms), sorted(cli_ms));
    let mean_found = found.iter().sum::<usize>() as f64 / found.len().max(1) as f64;
    let (cli50, cli99) = (percentile(&cli_ms, 0.5), percentile(&cli_ms, 0.99));
    let (q50, q99) = (percentile(&query_ms, 0.5), percentile(&query_ms, 0.99));
    eprintln!(
        "events list --user on {stored} events: CLI p50 {cli50:.1} ms p99 {cli99:.1} ms ({CLI_CALLS} users), query \
         alone p50 {q50:.2} ms p99 {q99:.2} ms ({QUERY_CALLS} users, {mean_found:.1} events each)"
    );
    b.rows.push(
        Row::new("events list --user on 5M events, CLI p99", cli99, "ms")
            .goal(&targets::EVENTS_LIST_USER_MS)
            .require_no_errors(errors)
            .note(format!(
                "the release clerk-sync, process start to exit, --limit {LIMIT} --json, {CLI_CALLS} users: p50 \
                 {cli50:.1} ms; {stored} events over {LIST_DAYS} daily partitions, {LIST_USERS} users, {mean_found:.1} \
                 events each; filled in {fill_s:.0} s"
            )),
    );
    b.rows.push(
        Row::new("events list --user on 5M events, query p99", q99, "ms")
            .note(format!("history::query::list alone, {QUERY_CALLS} users on one connection: p50 {q50:.2} ms")),
    );
    b.details.insert(
        "history_list".into(),
        json!({"stored": stored, "days": LIST_DAYS, "users": LIST_USERS, "body_bytes": body.len(),
               "fill_seconds": fill_s, "limit": LIMIT, "mean_found": mean_found, "errors": errors,
               "cli_ms": {"p50": cli50, "p99": cli99, "max": cli_ms.last()},
               "query_ms": {"p50": q50, "p99": q99, "max": query_ms.last()}}),
    );
    Ok(())
}

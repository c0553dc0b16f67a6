//! The event history's figures (issue 20): `clerk-sync events list --user` on 5,000,000 stored
//! events (`list`), `clerk-sync reproject` of 1,000,000 events (`reproject`), and the bytes a
//! stored event costs, which the worker phase reads from the rows its history-on x1 run wrote
//! ([`stored_bytes`]) beside the run with the history off ([`worker_runs`], [`on_off_row`]).
//!
//! Both CLI figures run the release `clerk-sync` as a child process with only the bench's database
//! in its environment, as the reconcile phase does.

mod list;
mod reproject;

use std::process::{Command, Stdio};

use anyhow::Context;
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::{Bench, targets};
use crate::report::Row;

/// Bytes per stored event, from the rows in `clerk.event_history` (the worker x1 run's, when the
/// worker phase calls it); `raw_mean` is the mean body as received. Returns two rows.
pub async fn stored_bytes(b: &mut Bench, raw_mean: f64) -> anyhow::Result<Vec<Row>> {
    let mut conn = PgConnection::connect(&b.env.db_url).await?;
    let (rows, body): (i64, f64) =
        sqlx::query_as("SELECT count(*), coalesce(avg(pg_column_size(body)), 0)::float8 FROM clerk.event_history")
            .fetch_one(&mut conn)
            .await?;
    // Every partition with its TOAST table and its indexes.
    let (total, table): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8, coalesce(sum(pg_table_size(c.oid)), 0)::int8
         FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'clerk.event_history'::regclass",
    )
    .fetch_one(&mut conn)
    .await?;
    let _ = conn.close().await;
    anyhow::ensure!(rows > 0, "the worker stored no event in clerk.event_history");
    let per = |bytes: i64| bytes as f64 / rows as f64;
    eprintln!(
        "history: {rows} stored events, {:.0} B each ({:.0} B heap + TOAST, {:.0} B indexes), body {body:.0} B of \
         {raw_mean:.0} B received",
        per(total),
        per(table),
        per(total - table)
    );
    let total_row = Row::new("history bytes per stored event", per(total), "B").note(format!(
        "{rows} events stored by the worker x1 run: partitions with TOAST and indexes / rows; {:.0} B heap + TOAST, \
         {:.0} B the indexes",
        per(table),
        per(total - table)
    ));
    let body_row = Row::new("history body per stored event (LZ4)", body, "B").note(format!(
        "avg pg_column_size(body); the workload's bodies average {raw_mean:.0} B as received ({:.2}x smaller)",
        raw_mean / body.max(1.0)
    ));
    b.details.insert(
        "history_bytes".into(),
        json!({"rows": rows, "total_bytes": total, "table_bytes": table, "avg_body_bytes": body,
               "raw_mean_bytes": raw_mean}),
    );
    Ok(vec![total_row, body_row])
}

/// The worker phase's runs: `(processes, keep_history)`. One process runs with the history off
/// too, interleaved (off, on, on, off) so that neither setting always runs first.
pub fn worker_runs(workers: &[usize]) -> Vec<(usize, bool)> {
    workers
        .iter()
        .flat_map(|&n| if n == 1 { vec![(1, false), (1, true), (1, true), (1, false)] } else { vec![(n, true)] })
        .collect()
}

pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The history-on x1 runs against the history-off ones, by their means.
pub fn on_off_row(on: &[f64], off: &[f64], errors: u64) -> Row {
    let list = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join("/");
    Row::new("worker x1 history on / off", mean(on).unwrap_or_default(), "events/s")
        .ceiling(mean(off))
        .goal(&targets::WORKER_HISTORY_ON_OFF)
        .require_no_errors(errors)
        .note(format!(
            "same pre-filled queue, off, on, on, off, each after a CHECKPOINT; on {} events/s, off \
             (CLERK_SYNC__WORKER__KEEP_HISTORY=false) {} events/s; means compared",
            list(on),
            list(off)
        ))
}

pub async fn history(b: &mut Bench) -> anyhow::Result<()> {
    // The phase's own rows only, whichever phases ran before it.
    execute(&b.env.db_url, "TRUNCATE clerk.event_history").await?;
    list::list(b).await?;
    reproject::reproject(b).await
}

pub(super) async fn execute(db_url: &str, sql: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(db_url).await?;
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.with_context(|| sql.to_owned())?;
    let _ = conn.close().await;
    Ok(())
}

/// Nearest-rank percentile of `sorted` (ascending).
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(super) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The release CLI with only the bench's database (no `.env`, no `RUST_LOG` from the caller).
pub(super) fn cli(b: &Bench, args: &[&str]) -> anyhow::Result<Command> {
    let exe = b.paths.binary("clerk-sync");
    anyhow::ensure!(exe.is_file(), "{} is missing: run `cargo build --release -p clerk-sync-cli`", exe.display());
    let logs = b.paths.out_dir().join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut cmd = Command::new(&exe);
    cmd.current_dir(&logs).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("DATABASE_URL", &b.env.db_url).env("CLERK_SYNC__LOG__LEVEL", "error").args(args);
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = sorted((1..=100).rev().map(f64::from).collect());
        assert_eq!((percentile(&v, 0.5), percentile(&v, 0.99), percentile(&[], 0.5)), (50.0, 99.0, 0.0));
    }

    #[test]
    fn the_x1_worker_run_is_paired_with_a_history_off_run() {
        assert_eq!(worker_runs(&[1, 2]), [(1, false), (1, true), (1, true), (1, false), (2, true)]);
        assert_eq!(worker_runs(&[2]), [(2, true)]);
        assert_eq!((mean(&[4.0, 6.0]), mean(&[])), (Some(5.0), None));
    }
}

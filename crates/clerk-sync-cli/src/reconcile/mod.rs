//! `clerk-sync reconcile`: finds and heals drift between the database and Clerk.
//!
//! Clerk does not guarantee delivery (Svix gives up after about 27 hours of failures, an endpoint
//! can be disabled), so a sync must find its own gaps. Reconcile walks Clerk's Backend API (the
//! endpoints backfill uses, through the same client and catalogue of kinds, with a token bucket
//! shared by every request of the run) and compares each kind with its table (`walk`): `missing`,
//! `stale`, `gone` (for the kinds Clerk deletes, confirmed by `confirm`), and for memberships
//! `orphaned`. Report mode changes nothing and exits 1 on drift; `--fix` repairs
//! through the worker's apply path (`repair`). `--watch` runs it on a schedule and serves metrics
//! (`watch`).

mod confirm;
mod kinds;
mod repair;
mod report;
mod walk;
mod watch;

use std::time::Instant;

use clerk_sync_core::settings::Settings;
use clerk_sync_store::db;
use sqlx::PgPool;

use crate::backfill::client::ClerkApi;
use crate::cli::ReconcileArgs;
use crate::output::{self, Output};
use kinds::Kind;
use report::RunReport;

pub async fn reconcile(settings: &Settings, args: &ReconcileArgs, out: Output) -> anyhow::Result<()> {
    let pool = db::pool(&settings.database, "clerk-sync-reconcile")?;
    db::check_schema(&pool).await?;
    let api = ClerkApi::new(&settings.clerk.api_url, settings.clerk.secret_key.clone())?.with_rate(args.rate);
    let kinds = crate::backfill::kinds::select(&args.selected(), Kind::reconciled_by_default);
    if args.watch {
        return watch::watch(&pool, &api, &kinds, args, out).await;
    }
    let report = run_once(&pool, &api, &kinds, args).await?;
    print(&report, out);
    match (args.fix, report.drift(), report.left()) {
        (false, n, _) if n > 0 => anyhow::bail!("drift found: {n} gap(s); run `clerk-sync reconcile --fix` to repair"),
        (true, _, left) if left > 0 => anyhow::bail!("{left} gap(s) left unrepaired (--limit); run again"),
        _ => Ok(()),
    }
}

/// One full comparison of the selected kinds (and repair, with `--fix`).
async fn run_once(pool: &PgPool, api: &ClerkApi, kinds: &[Kind], args: &ReconcileArgs) -> anyhow::Result<RunReport> {
    let began = Instant::now();
    let (requests, rate_limited) = (api.requests(), api.rate_limited());
    let ctx = walk::Ctx { pool, api, fix: args.fix, page_size: args.page_size, started: chrono::Utc::now() };
    let mut reports = Vec::with_capacity(kinds.len());
    // In `Kind::ALL`'s order: users and organizations first (fixing their deletions tombstones
    // their memberships too, which the membership pass then no longer counts as orphaned; the
    // kinds listed per parent walk the parents as repaired).
    for kind in kinds {
        reports.push(walk::reconcile_kind(&ctx, *kind, args.limit, args.show).await?);
    }
    Ok(RunReport {
        kinds: reports,
        fixed: args.fix,
        requests: api.requests() - requests,
        rate_limited: api.rate_limited() - rate_limited,
        duration: began.elapsed(),
    })
}

fn print(report: &RunReport, out: Output) {
    if out.json {
        output::print_json(&report.to_json());
    } else {
        report.print_table();
    }
}

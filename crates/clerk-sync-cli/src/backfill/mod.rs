//! `clerk-sync backfill`: the initial sync webhooks cannot give, for accounts that existed before
//! clerk-sync was installed.
//!
//! Walks Clerk's Backend API for each kind of [`kinds`] (one list, a list per stored parent, or one
//! object per stored parent: `pager`) and writes each page through the worker's own apply path, in
//! one transaction together with the saved position (`progress`), so:
//! - an interrupted run resumes at the first page not yet committed;
//! - the same ordering guard applies: a live webhook that already wrote a newer version wins, and a
//!   deleted object stays deleted;
//! - each object version is recorded under a synthetic id (`backfill:<kind>:<id>:<updated_at>`),
//!   so running the backfill again rewrites nothing that has not changed.

pub(crate) mod client;
pub(crate) mod kinds;
pub(crate) mod pager;
mod progress;

use clerk_sync_core::settings::Settings;
use clerk_sync_store::db::{self, Outcome};
use clerk_sync_store::event::{self, Event};
use serde_json::json;
use serde_json::value::RawValue;
use sqlx::PgPool;

use crate::cli::BackfillArgs;
use crate::output::{self, Output};
use client::ClerkApi;
use kinds::{Kind, id_and_version};
use pager::Pager;

#[derive(Default, serde::Serialize)]
struct Report {
    resource: &'static str,
    fetched: u64,
    written: u64,
    /// A newer version was already there (from a live webhook), or the object is deleted.
    kept_newer: u64,
    /// Unchanged since an earlier backfill.
    unchanged: u64,
    skipped_invalid: u64,
    resumed_at_offset: u32,
    /// For a kind listed per parent: the last parent an interrupted run had finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_after: Option<String>,
}

pub async fn backfill(settings: &Settings, args: &BackfillArgs, out: Output) -> anyhow::Result<()> {
    let pool = db::pool(&settings.database, "clerk-sync-backfill")?;
    db::check_schema(&pool).await?;
    let api = ClerkApi::new(&settings.clerk.api_url, settings.clerk.secret_key.clone())?;
    let mut reports = Vec::new();
    for kind in kinds::select(&args.selected(), |_| true) {
        let report = run(&pool, &api, kind, args, out).await?;
        if !out.json {
            let resumed = match (&report.resumed_after, report.resumed_at_offset) {
                (Some(parent), _) => format!(" (resumed after {parent})"),
                (None, 0) => String::new(),
                (None, offset) => format!(" (resumed at offset {offset})"),
            };
            println!(
                "{}: fetched {}, written {}, kept newer {}, unchanged {}, skipped invalid {}{resumed}",
                report.resource,
                report.fetched,
                report.written,
                report.kept_newer,
                report.unchanged,
                report.skipped_invalid,
            );
        }
        reports.push(report);
    }
    if out.json {
        output::print_json(&json!(reports));
    }
    Ok(())
}

async fn run(pool: &PgPool, api: &ClerkApi, kind: Kind, args: &BackfillArgs, out: Output) -> anyhow::Result<Report> {
    let missing = pager::missing_parents(pool, kind).await?;
    if !missing.is_empty() {
        // Not an error (an instance may have no organizations), but usually a wrong order.
        eprintln!(
            "{}: no {} stored here to list them under; backfill those first (`--kind {}`)",
            kind.name(),
            missing.join(" or "),
            missing.join(",")
        );
    }
    let from = progress::start(pool, kind, args.restart).await?;
    let mut report = Report {
        resource: kind.name(),
        resumed_at_offset: from.offset,
        resumed_after: from.parent_done.clone(),
        ..Default::default()
    };
    let bar = output::counter(kind.name(), out);
    if from.parent_done.is_none() {
        bar.set_position(u64::from(from.offset));
    }
    let mut pager = Pager::new(pool, api, kind, args.page_size, from);
    while let Some(page) = pager.next().await? {
        if let Some(total) = page.total {
            bar.set_length(total);
        }
        let fetched = page.objects.len() as u64;
        let events = parse(kind, page.objects, &mut report, &bar);
        let batch: Vec<&Event> = events.iter().collect();
        let mut tx = pool.begin().await?;
        let outcomes = db::apply_batch(&mut tx, &batch).await?;
        let written = outcomes.iter().filter(|o| **o == Outcome::Applied).count() as u64;
        progress::save(&mut tx, kind, &page.after, written).await?;
        tx.commit().await?;

        report.fetched += fetched;
        report.written += written;
        report.kept_newer += outcomes.iter().filter(|o| **o == Outcome::Stale).count() as u64;
        report.unchanged += outcomes.iter().filter(|o| **o == Outcome::Duplicate).count() as u64;
        bar.inc(fetched);
    }
    progress::finish(pool, kind).await?;
    bar.finish_and_clear();
    Ok(report)
}

/// The page's objects as events named `backfill.<kind>`, each under its synthetic svix-id; an
/// object that does not parse (or has no version) is counted and skipped.
fn parse(kind: Kind, objects: Vec<Box<RawValue>>, report: &mut Report, bar: &indicatif::ProgressBar) -> Vec<Event> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut events = Vec::with_capacity(objects.len());
    for raw in objects {
        match event::from_object("", now, kind.upsert_event(), raw) {
            Ok(mut e) => {
                let Some(id) = synthetic_id(kind, &e) else {
                    report.skipped_invalid += 1;
                    continue;
                };
                e.event_type = format!("backfill.{}", kind.name());
                e.svix_id = id;
                events.push(e);
            }
            Err(e) => {
                report.skipped_invalid += 1;
                bar.println(format!("skipping an invalid {} object: {e}", kind.name()));
            }
        }
    }
    events
}

fn synthetic_id(kind: Kind, event: &Event) -> Option<String> {
    let (id, updated_at) = id_and_version(&event.change)?;
    Some(format!("backfill:{}:{id}:{updated_at}", kind.name()))
}

//! `clerk-sync reproject`: the synced tables rebuilt from the event history, for an upgrade that
//! adds a column or a resource, or after a bug.
//!
//! In place, under the ordering guard, rather than built beside and swapped: a table built beside
//! would miss the webhooks that arrive while it is built (or need them written twice), a swap takes
//! an exclusive lock readers queue behind, and the application's grants, views and RLS policies
//! (integrations/) name the tables themselves. In place, readers see the table they had until each
//! page's transaction commits its objects; a page's events are its objects' history (at most
//! `--batch-events` of them, so an object with more spans transactions, each keeping the newest
//! version), reduced to each object's newest version as the worker would, and written with
//! `clerk.reproject` on, so a version equal to the stored one is written again (filling a new
//! column) while an older one never overwrites a newer one: a live webhook that raced ahead wins.
//! Deletions are replayed too, so a deleted object stays deleted. A user's scrubbed events
//! rebuild only what its tombstone keeps.

use std::time::Instant;

use clerk_sync_core::settings::Settings;
use clerk_sync_store::catalogue::{self, Handling, Resource};
use clerk_sync_store::db;
use clerk_sync_store::event::{self, Event};
use clerk_sync_store::history::query;
use serde_json::json;

use crate::cli::{ReprojectArgs, ReprojectKind};
use crate::output::{self, Output};

#[derive(Debug, Default, serde::Serialize)]
struct KindReport {
    kind: &'static str,
    objects: u64,
    events: u64,
    rows_written: u64,
    /// Stored events without a body or whose body no longer parses.
    skipped: u64,
    seconds: f64,
}

/// The resources to rebuild, in order. Organizations and users come first: the other resources'
/// functions read the user and organization rows (a session or a membership of a deleted user is
/// ended or made a tombstone as it is written), as they do for a late webhook.
fn resources(kind: Option<ReprojectKind>) -> Vec<Resource> {
    let Some(kind) = kind else {
        let first = [Resource::Organization, Resource::User];
        return first.into_iter().chain(Resource::ALL.into_iter().filter(|r| !first.contains(r))).collect();
    };
    vec![match kind {
        ReprojectKind::Users => Resource::User,
        ReprojectKind::Organizations => Resource::Organization,
        ReprojectKind::Memberships => Resource::Membership,
        ReprojectKind::Sessions => Resource::Session,
        ReprojectKind::Invitations => Resource::Invitation,
        ReprojectKind::Roles => Resource::Role,
        ReprojectKind::Permissions => Resource::Permission,
        ReprojectKind::Domains => Resource::Domain,
        ReprojectKind::WaitlistEntries => Resource::WaitlistEntry,
        ReprojectKind::Subscriptions => Resource::Subscription,
        ReprojectKind::SubscriptionItems => Resource::SubscriptionItem,
        ReprojectKind::PaymentAttempts => Resource::PaymentAttempt,
    }]
}

pub async fn reproject(settings: &Settings, args: &ReprojectArgs, out: Output) -> anyhow::Result<()> {
    let pool = super::connect(settings, "clerk-sync-reproject").await?;
    let kinds = resources(args.kind);
    if !args.dry_run && !args.yes {
        let names: Vec<&str> = kinds.iter().map(|r| r.table()).collect();
        if !output::confirm(&format!("Rewrite clerk.{} from the event history?", names.join(", clerk.")))? {
            anyhow::bail!("not confirmed; nothing rewritten");
        }
    }
    let mut reports = Vec::new();
    for resource in kinds {
        let report = one(&pool, resource, args).await?;
        if !out.json {
            println!(
                "{:<26} {} objects from {} events: {} rows written, {} skipped ({:.1} s)",
                resource.table(),
                report.objects,
                report.events,
                report.rows_written,
                report.skipped,
                report.seconds
            );
        }
        reports.push(report);
    }
    if out.json {
        output::print_json(&json!({"dry_run": args.dry_run, "kinds": reports}));
    }
    Ok(())
}

async fn one(pool: &sqlx::PgPool, resource: Resource, args: &ReprojectArgs) -> anyhow::Result<KindReport> {
    let started = Instant::now();
    let types: Vec<&str> =
        catalogue::CATALOGUE.iter().filter(|t| t.handling == Handling::Stored(resource)).map(|t| t.name).collect();
    let key = query::ObjectKey::of(resource);
    let mut report = KindReport { kind: resource.table(), ..Default::default() };
    let mut after = String::new();
    loop {
        let mut conn = pool.acquire().await?;
        let ids = query::object_ids(&mut conn, &types, key, &after, args.page_size.max(1)).await?;
        let Some(last) = ids.last() else { break };
        after = last.clone();
        report.objects += ids.len() as u64;
        // Usually one page of events per page of objects; an object with more events than
        // --batch-events is rebuilt over several transactions, which the ordering guard makes
        // the same as one: each keeps the newest version, deletions and final statuses stay.
        let mut cursor = None;
        loop {
            let limit = args.batch_events.max(1);
            let stored = query::events_of(&mut conn, &types, key, &ids, cursor.as_ref(), limit).await?;
            let Some(last) = stored.last() else { break };
            cursor = query::EventCursor::after(key, last);
            report.events += stored.len() as u64;
            let events: Vec<Event> = stored
                .iter()
                .filter_map(|s| {
                    let body = s.body()?;
                    let mut e = event::parse(&s.svix_id, s.received_at.timestamp_millis(), &body).ok()?;
                    e.replay_of = s.replay_of.clone();
                    e.body = None;
                    Some(e)
                })
                .collect();
            report.skipped += (stored.len() - events.len()) as u64;
            if !args.dry_run && !events.is_empty() {
                let batch: Vec<&Event> = events.iter().collect();
                let mut tx = pool.begin().await?;
                report.rows_written += db::reproject_batch(&mut tx, &batch).await? as u64;
                tx.commit().await?;
            }
            if (stored.len() as i64) < limit || cursor.is_none() {
                break;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

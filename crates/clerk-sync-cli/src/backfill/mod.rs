//! `clerk-sync backfill`: the initial sync webhooks cannot give, for accounts that existed before
//! clerk-sync was installed.
//!
//! Pages through Clerk's Backend API and writes each page through the worker's own apply path, in
//! one transaction together with the saved position, so:
//! - an interrupted run resumes at the first page not yet committed;
//! - the same ordering guard applies: a live webhook that already wrote a newer version wins, and a
//!   deleted object stays deleted;
//! - each object version is recorded under a synthetic id (`backfill:<resource>:<id>:<updated_at>`),
//!   so running the backfill again rewrites nothing that has not changed.

pub(crate) mod client;

use clerk_sync_core::settings::Settings;
use clerk_sync_store::db::{self, Outcome};
use clerk_sync_store::event::{self, Change, Event};
use serde_json::json;
use sqlx::PgPool;

use crate::cli::BackfillArgs;
use crate::output::{self, Output};
use client::ClerkApi;

#[derive(Debug, Clone, Copy)]
enum Resource {
    Users,
    Organizations,
    Memberships,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Organizations => "organizations",
            Self::Memberships => "memberships",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Users => "/v1/users",
            Self::Organizations => "/v1/organizations",
            Self::Memberships => "/v1/organization_memberships",
        }
    }

    /// The webhook type whose `data` has the same shape as this resource's objects.
    fn as_event(self) -> &'static str {
        match self {
            Self::Users => "user.updated",
            Self::Organizations => "organization.updated",
            Self::Memberships => "organizationMembership.updated",
        }
    }
}

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
}

pub async fn backfill(settings: &Settings, args: &BackfillArgs, out: Output) -> anyhow::Result<()> {
    let pool = db::pool(&settings.database, "clerk-sync-backfill")?;
    db::check_schema(&pool).await?;
    let api = ClerkApi::new(&settings.clerk.api_url, settings.clerk.secret_key.clone())?;
    let all = !(args.users || args.organizations || args.memberships);
    let resources = [
        (args.users || all, Resource::Users),
        (args.organizations || all, Resource::Organizations),
        (args.memberships || all, Resource::Memberships),
    ];
    let mut reports = Vec::new();
    for (wanted, resource) in resources {
        if wanted {
            let report = run(&pool, &api, resource, args, out).await?;
            if !out.json {
                println!(
                    "{}: fetched {}, written {}, kept newer {}, unchanged {}, skipped invalid {}{}",
                    report.resource,
                    report.fetched,
                    report.written,
                    report.kept_newer,
                    report.unchanged,
                    report.skipped_invalid,
                    if report.resumed_at_offset > 0 {
                        format!(" (resumed at offset {})", report.resumed_at_offset)
                    } else {
                        String::new()
                    }
                );
            }
            reports.push(report);
        }
    }
    if out.json {
        output::print_json(&json!(reports));
    }
    Ok(())
}

/// The offset to start from: the saved one if a run was interrupted, else 0 (and the row reset).
async fn start_offset(pool: &PgPool, resource: Resource, restart: bool) -> Result<u32, sqlx::Error> {
    let saved: Option<(i32, bool)> =
        sqlx::query_as("SELECT next_offset, finished_at IS NOT NULL FROM clerk.backfill_progress WHERE resource = $1")
            .bind(resource.name())
            .fetch_optional(pool)
            .await?;
    match saved {
        Some((offset, false)) if !restart => Ok(u32::try_from(offset).unwrap_or(0)),
        _ => {
            sqlx::query(
                "INSERT INTO clerk.backfill_progress (resource) VALUES ($1)
                 ON CONFLICT (resource) DO UPDATE SET next_offset = 0, written = 0, started_at = now(),
                     updated_at = now(), finished_at = NULL",
            )
            .bind(resource.name())
            .execute(pool)
            .await?;
            Ok(0)
        }
    }
}

fn synthetic_id(resource: Resource, event: &Event) -> Option<String> {
    let (id, updated_at) = match &event.change {
        Change::UpsertUser(u) => (&u.id, u.updated_at),
        Change::UpsertOrganization(o) => (&o.id, o.updated_at),
        Change::UpsertMembership { membership, .. } => (&membership.id, membership.updated_at),
        _ => return None,
    };
    Some(format!("backfill:{}:{id}:{}", resource.name(), updated_at.unwrap_or_default()))
}

async fn run(
    pool: &PgPool,
    api: &ClerkApi,
    resource: Resource,
    args: &BackfillArgs,
    out: Output,
) -> anyhow::Result<Report> {
    let mut offset = start_offset(pool, resource, args.restart).await?;
    let mut report = Report { resource: resource.name(), resumed_at_offset: offset, ..Default::default() };
    let bar = output::counter(resource.name(), out);
    bar.set_position(u64::from(offset));
    loop {
        let page = api.page(resource.path(), args.page_size, offset).await?;
        if let Some(total) = page.total {
            bar.set_length(total);
        }
        let fetched = page.objects.len();
        let now = chrono::Utc::now().timestamp_millis();
        let mut events = Vec::with_capacity(fetched);
        for raw in page.objects {
            // Named once parsed: the synthetic svix-id carries the object's id and version.
            match event::from_object("", now, resource.as_event(), raw) {
                Ok(mut e) => {
                    e.event_type = format!("backfill.{}", resource.name());
                    if let Some(id) = synthetic_id(resource, &e) {
                        e.svix_id = id;
                        events.push(e);
                    }
                }
                Err(e) => {
                    report.skipped_invalid += 1;
                    bar.println(format!("skipping an invalid {} object: {e}", resource.name()));
                }
            }
        }
        let batch: Vec<&Event> = events.iter().collect();
        let next = offset + u32::try_from(fetched).unwrap_or(u32::MAX);
        let finished = fetched < args.page_size as usize;
        let mut tx = pool.begin().await?;
        let outcomes = db::apply_batch(&mut tx, &batch).await?;
        let written = outcomes.iter().filter(|o| **o == Outcome::Applied).count() as u64;
        sqlx::query(
            "UPDATE clerk.backfill_progress SET next_offset = $2, written = written + $3, updated_at = now(),
                 finished_at = CASE WHEN $4 THEN now() END
             WHERE resource = $1",
        )
        .bind(resource.name())
        .bind(i32::try_from(next).unwrap_or(i32::MAX))
        .bind(i64::try_from(written).unwrap_or(i64::MAX))
        .bind(finished)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        report.fetched += fetched as u64;
        report.written += written;
        report.kept_newer += outcomes.iter().filter(|o| **o == Outcome::Stale).count() as u64;
        report.unchanged += outcomes.iter().filter(|o| **o == Outcome::Duplicate).count() as u64;
        bar.inc(fetched as u64);
        offset = next;
        if finished {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(report)
}

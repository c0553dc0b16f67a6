//! Repairs go through the worker's own apply path (`db::apply_batch`) in one transaction per
//! batch, so the ordering guard decides exactly as it does for webhooks: a live webhook with a
//! newer version wins, a deleted object stays deleted, and a deletion removes personal data.
//!
//! Each repair is recorded in `clerk.webhook_events` under a synthetic svix-id that says the
//! reconcile did it: `reconcile:<kind>:<id>:<updated_at>` for a missing or stale object (written
//! with Clerk's version), `reconcile:<kind>:<id>:gone` / `:orphaned` for a tombstone, dated at the
//! time of the reconcile (no envelope time, so the received time, now).

use clerk_sync_worker::db::{self, Incoming, Outcome};
use clerk_sync_worker::event::{self, ParsedEvent};
use serde_json::json;
use sqlx::PgPool;

use super::kinds::{Gap, Kind};
use super::report::KindReport;

pub struct Repair {
    svix_id: String,
    event: ParsedEvent,
    gap: Gap,
}

/// Writes Clerk's current version of an object that is missing or stale here.
pub fn upsert(kind: Kind, id: &str, updated_at: i64, event: ParsedEvent, gap: Gap) -> Repair {
    Repair { svix_id: format!("reconcile:{}:{id}:{updated_at}", kind.name()), event, gap }
}

/// Tombstones an object Clerk no longer has. A membership's deletion carries the membership as
/// stored (`raw`), as Clerk's own `organizationMembership.deleted` does, so that the columns the
/// tombstone keeps (organization, user, role) stay what they were.
pub fn deletion(kind: Kind, id: &str, raw: Option<String>, gap: Gap) -> anyhow::Result<Repair> {
    let data = match (kind, raw) {
        (Kind::Users, _) => json!({"id": id, "object": "user", "deleted": true}).to_string(),
        (Kind::Organizations, _) => json!({"id": id, "object": "organization", "deleted": true}).to_string(),
        (Kind::Memberships, Some(raw)) => raw,
        (Kind::Memberships, None) => anyhow::bail!("membership {id} has no stored object to delete it with"),
    };
    let data = serde_json::value::RawValue::from_string(data)?;
    let event = event::parse_object(kind.delete_event(), data)
        .map_err(|e| anyhow::anyhow!("cannot build the deletion of {} {id}: {e}", kind.name()))?;
    Ok(Repair { svix_id: format!("reconcile:{}:{id}:{}", kind.name(), gap.name()), event, gap })
}

/// Applies `repairs` in one transaction and counts what the guard let through.
pub async fn apply(pool: &PgPool, repairs: Vec<Repair>, report: &mut KindReport) -> anyhow::Result<()> {
    if repairs.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let incoming: Vec<Incoming<'_>> =
        repairs.iter().map(|r| Incoming { svix_id: &r.svix_id, event: &r.event, received_at_ms: now }).collect();
    let mut tx = pool.begin().await?;
    let outcomes = db::apply_batch(&mut tx, &incoming).await?;
    tx.commit().await?;
    for (repair, outcome) in repairs.iter().zip(outcomes) {
        match outcome {
            Outcome::Applied => report.repaired[repair.gap.index()] += 1,
            // A newer version, a deletion, or this very repair was already there.
            Outcome::Stale | Outcome::Duplicate | Outcome::Ignored => report.superseded[repair.gap.index()] += 1,
        }
    }
    Ok(())
}

//! Repairs go through the worker's own apply path (`db::apply_batch`) in one transaction per
//! batch, so the ordering guard decides exactly as it does for webhooks: a live webhook with a
//! newer version wins, a deleted object stays deleted, and a deletion removes personal data.
//!
//! Each repair is recorded in `clerk.webhook_events` under a synthetic svix-id that says the
//! reconcile did it: `reconcile:<kind>:<id>:<updated_at>` for a missing or stale object (written
//! with Clerk's version), `reconcile:<kind>:<id>:gone` / `:orphaned` for a tombstone, dated at the
//! time of the reconcile (no envelope time, so the received time, now). The tombstone itself says
//! so too: `deleted_by = 'reconcile'` (migration 6), set in the same transaction; a tombstone a
//! webhook made keeps it NULL.

use clerk_sync_store::db::{self, Outcome};
use clerk_sync_store::event::{self, Event};
use serde_json::json;
use sqlx::PgPool;

use super::kinds::{Gap, Kind};
use super::report::KindReport;

pub struct Repair {
    /// Named with the repair's synthetic svix-id.
    event: Event,
    gap: Gap,
    /// The object a deletion tombstones, with its kind.
    deletes: Option<(Kind, String)>,
}

/// Writes Clerk's current version of an object that is missing or stale here.
pub fn upsert(kind: Kind, id: &str, updated_at: i64, mut event: Event, gap: Gap) -> Repair {
    event.svix_id = format!("reconcile:{}:{id}:{updated_at}", kind.name());
    Repair { event, gap, deletes: None }
}

/// Tombstones an object Clerk no longer has. A membership's deletion carries the membership as
/// stored (`raw`), as Clerk's own `organizationMembership.deleted` does, so that the columns the
/// tombstone keeps (organization, user, role) stay what they were.
pub fn deletion(kind: Kind, id: &str, raw: Option<String>, gap: Gap) -> anyhow::Result<Repair> {
    let Some(delete_event) = kind.delete_event() else {
        anyhow::bail!("{} are never deleted by Clerk; {id} cannot be tombstoned", kind.name())
    };
    let object = match kind {
        Kind::Memberships => {
            let Some(raw) = raw else { anyhow::bail!("membership {id} has no stored object to delete it with") };
            serde_json::value::RawValue::from_string(raw)?
        }
        // Clerk's `*.deleted` payload: the id, the object's type, `deleted`.
        _ => {
            let object = match kind {
                Kind::Users => "user",
                Kind::Organizations => "organization",
                Kind::Roles => "role",
                Kind::Permissions => "permission",
                _ => "organization_domain",
            };
            serde_json::value::to_raw_value(&json!({"id": id, "object": object, "deleted": true}))?
        }
    };
    let svix_id = format!("reconcile:{}:{id}:{}", kind.name(), gap.name());
    // Dated at the reconcile: no envelope time, so the received time, now.
    let now = chrono::Utc::now().timestamp_millis();
    let event = event::from_object(&svix_id, now, delete_event, object)
        .map_err(|e| anyhow::anyhow!("cannot build the deletion of {} {id}: {e}", kind.name()))?;
    Ok(Repair { event, gap, deletes: Some((kind, id.to_owned())) })
}

/// Applies `repairs` in one transaction and counts what the guard let through.
pub async fn apply(pool: &PgPool, repairs: Vec<Repair>, report: &mut KindReport) -> anyhow::Result<()> {
    if repairs.is_empty() {
        return Ok(());
    }
    let batch: Vec<&Event> = repairs.iter().map(|r| &r.event).collect();
    let mut tx = pool.begin().await?;
    // The rows these deletions will tombstone, read first: a row a webhook already deleted is not
    // marked as the reconcile's (one deleted by a webhook between this read and the write would be).
    let mut alive = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| k.delete_event().is_some()) {
        let ids: Vec<&str> = repairs
            .iter()
            .filter_map(|r| r.deletes.as_ref())
            .filter(|(k, _)| *k == kind)
            .map(|(_, id)| id.as_str())
            .collect();
        if !ids.is_empty() {
            let found: Vec<String> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(kind.alive_ids_sql())).bind(&ids).fetch_all(&mut *tx).await?;
            alive.push((kind, found));
        }
    }
    let outcomes = db::apply_batch(&mut tx, &batch).await?;
    for (kind, ids) in &alive {
        sqlx::query(sqlx::AssertSqlSafe(kind.mark_deleted_sql())).bind(ids).execute(&mut *tx).await?;
    }
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

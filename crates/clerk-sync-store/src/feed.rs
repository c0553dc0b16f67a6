//! The change feed's data access (migration 10; docs/change-feed.md): the rows of
//! `clerk.changes` as [`Change`], reading "after position P", one sequencer round, retention, and
//! naming the svix-ids of a batch's deletions for the triggers (a tombstone row does not carry
//! the svix-id of the deletion that made it). The triggers write the changes themselves, in the
//! writing transaction; the worker's `feed` module runs the sequencer and the relay.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};

use crate::event::{Change as EventChange, Event};

/// The channel a sequencer round notifies, with the last position it gave as payload.
pub const CHANNEL: &str = "clerk_changes";

/// One row of `clerk.changes`, as readers, the CLI and the relay see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Change {
    pub position: i64,
    pub resource: String,
    pub object_id: String,
    pub operation: String,
    pub version: Option<DateTime<Utc>>,
    pub changed: Vec<String>,
    pub svix_id: Option<String>,
    pub event_type: Option<String>,
    pub committed_at: DateTime<Utc>,
}

impl Change {
    /// The relay's routing key: `<resource>.<operation>`, e.g. `user.created`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.resource, self.operation)
    }
}

/// Up to `limit` positioned changes after `position`, in position order, of one resource or all.
pub async fn after<'c>(
    conn: impl PgExecutor<'c>,
    position: i64,
    resource: Option<&str>,
    limit: i64,
) -> Result<Vec<Change>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, resource, object_id, operation, version, changed, svix_id, event_type, committed_at
         FROM clerk.changes_after($1, $2, $3) ORDER BY position",
    )
    .bind(position)
    .bind(resource)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The last position given so far (0 before the first).
pub async fn last_position<'c>(conn: impl PgExecutor<'c>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT last_position FROM clerk.change_feed_state").fetch_one(conn).await
}

/// One sequencer round (`clerk.sequence_changes`): the last position it gave, `None` if the round
/// found nothing to position. Run it in its own transaction (autocommit).
pub async fn sequence<'c>(conn: impl PgExecutor<'c>, max_rows: i32) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT clerk.sequence_changes($1)").bind(max_rows).fetch_one(conn).await
}

/// Whether any written change waits for a position (a cheap probe of a partial index).
pub async fn pending<'c>(conn: impl PgExecutor<'c>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clerk.changes WHERE position IS NULL)").fetch_one(conn).await
}

/// Deletes positioned changes written before `cutoff` (with `keep_unrelayed`, only those the relay
/// has published), 10,000 at a time; returns how many.
pub async fn prune(pool: &sqlx::PgPool, cutoff: DateTime<Utc>, keep_unrelayed: bool) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n: i64 = sqlx::query_scalar("SELECT clerk.prune_changes($1, $2, 10000)")
            .bind(cutoff)
            .bind(keep_unrelayed)
            .fetch_one(pool)
            .await?;
        total += u64::try_from(n).unwrap_or(0);
        if n < 10_000 {
            return Ok(total);
        }
    }
}

/// The svix-id of the deletion that dates each object a batch deletes, as the transaction-local
/// `clerk.change_sources` the triggers read: `{"user": {"<id>": "<svix-id>"}, ...}`. `None` when
/// the batch deletes nothing (the usual case: no extra round trip).
pub fn deletion_sources(batch: &[&Event], fresh: &[bool]) -> Option<String> {
    // Per object the earliest deletion wins (the plan's rule); ties keep the first in the batch.
    let mut earliest: BTreeMap<(&str, &str), (i64, &str)> = BTreeMap::new();
    for (event, _) in batch.iter().zip(fresh).filter(|(_, f)| **f) {
        let (resource, id) = match &event.change {
            EventChange::DeleteUser(d) => ("user", d.id.as_str()),
            EventChange::DeleteOrganization(d) => ("organization", d.id.as_str()),
            EventChange::DeleteMembership { membership, .. } => ("membership", membership.id.as_str()),
            EventChange::DeleteRole(d) => ("role", d.id.as_str()),
            EventChange::DeletePermission(d) => ("permission", d.id.as_str()),
            EventChange::DeleteDomain(d) => ("domain", d.id.as_str()),
            _ => continue,
        };
        let at = event.occurred_at_ms.unwrap_or(event.received_at_ms);
        let entry = earliest.entry((resource, id)).or_insert((at, &event.svix_id));
        if at < entry.0 {
            *entry = (at, &event.svix_id);
        }
    }
    if earliest.is_empty() {
        return None;
    }
    let mut sources: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for ((resource, id), (_, svix_id)) in earliest {
        sources.entry(resource).or_default().insert(id, svix_id);
    }
    serde_json::to_string(&sources).ok()
}

/// Sets `clerk.change_sources` for the rest of the caller's transaction, if the batch deletes.
pub async fn name_deletions(conn: &mut PgConnection, batch: &[&Event], fresh: &[bool]) -> Result<(), sqlx::Error> {
    if let Some(sources) = deletion_sources(batch, fresh) {
        sqlx::query("SELECT set_config('clerk.change_sources', $1, true)").bind(sources).execute(conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse;

    fn event(svix_id: &str, body: serde_json::Value) -> Event {
        parse(svix_id, 1_000, body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn each_deleted_object_is_named_with_the_svix_id_of_its_earliest_fresh_deletion() {
        let deleted = |id: &str, at: i64| serde_json::json!({"type": "user.deleted", "timestamp": at, "data": {"id": id, "object": "user", "deleted": true}});
        let org = serde_json::json!({"type": "organization.deleted", "timestamp": 5, "data": {"id": "org_1", "object": "organization", "deleted": true}});
        let events = [
            event("late", deleted("user_1", 20)),
            event("early", deleted("user_1", 10)),
            event("dup", deleted("user_1", 1)),
            event("o", org),
        ];
        let batch: Vec<&Event> = events.iter().collect();
        // "dup" was processed before (not fresh): it names nothing.
        let sources = deletion_sources(&batch, &[true, true, false, true]).unwrap();
        let sources: serde_json::Value = serde_json::from_str(&sources).unwrap();
        assert_eq!(sources, serde_json::json!({"user": {"user_1": "early"}, "organization": {"org_1": "o"}}));
    }

    #[test]
    fn a_batch_without_deletions_sets_nothing() {
        let upsert = serde_json::json!({"type": "user.updated", "data": {"id": "user_1", "updated_at": 5}});
        let events = [event("u", upsert)];
        assert_eq!(deletion_sources(&events.iter().collect::<Vec<_>>(), &[true]), None);
    }
}

//! The history's queries: search by selectors (newest first, for `events list`), one event by
//! svix-id (`events show`), the same selectors oldest first in keyset pages (`events replay`), and
//! the events of a resource by object (`reproject`). Only the selectors given become conditions,
//! so each query can use its index: `(user_id, received_at)`, `(organization_id, received_at)`,
//! `(event_type, received_at)`, `(object_id)` for objects that are neither a user nor an
//! organization, and partition pruning on `received_at` for `--since` / `--until`. There is no
//! svix-id index (migration 24): `show` goes through the deduplication row.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::codec;
use crate::catalogue::Resource;

/// What to select; every field given narrows the selection.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
}

/// One stored event.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Stored {
    pub received_at: DateTime<Utc>,
    pub svix_id: String,
    pub event_type: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub object_id: Option<String>,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    pub outcome: String,
    pub replay_of: Option<String>,
    pub scrubbed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub body: Option<Vec<u8>>,
}

impl Stored {
    /// The body as received (or as scrubbed); `None` if none is stored or it cannot be decoded.
    pub fn body(&self) -> Option<Vec<u8>> {
        codec::decode(self.body.as_deref()?).ok()
    }
}

const COLUMNS: &str = "SELECT received_at, svix_id, event_type, occurred_at, object_id, user_id, organization_id, \
                       outcome, replay_of, scrubbed_at, ";

fn select(with_bodies: bool) -> QueryBuilder<Postgres> {
    let mut q = QueryBuilder::new(COLUMNS);
    q.push(if with_bodies { "body" } else { "NULL::bytea AS body" });
    q.push(" FROM clerk.event_history WHERE true");
    q
}

fn conditions(q: &mut QueryBuilder<Postgres>, f: &Filter) {
    if let Some(v) = &f.user_id {
        q.push(" AND user_id = ").push_bind(v.clone());
    }
    if let Some(v) = &f.organization_id {
        q.push(" AND organization_id = ").push_bind(v.clone());
    }
    if let Some(v) = &f.event_type {
        q.push(" AND event_type = ").push_bind(v.clone());
    }
    if let Some(v) = f.since {
        q.push(" AND received_at >= ").push_bind(v);
    }
    if let Some(v) = f.until {
        q.push(" AND received_at < ").push_bind(v);
    }
    if let Some(v) = &f.outcome {
        q.push(" AND outcome = ").push_bind(v.clone());
    }
}

/// The newest `limit` events matching `filter`, newest first, without bodies.
pub async fn list(conn: &mut PgConnection, filter: &Filter, limit: i64) -> Result<Vec<Stored>, sqlx::Error> {
    let mut q = select(false);
    conditions(&mut q, filter);
    q.push(" ORDER BY received_at DESC, svix_id DESC LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}

/// One event with its body.
pub async fn show(conn: &mut PgConnection, svix_id: &str) -> Result<Option<Stored>, sqlx::Error> {
    // The deduplication row, written in the same transaction with the same type and received_at,
    // leads to the stored row by the type index and one partition. Without it (deleted by
    // retention up to a day before the history's partition is dropped) every partition is read.
    let key: Option<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT event_type, received_at FROM clerk.webhook_events WHERE svix_id = $1")
            .bind(svix_id)
            .fetch_optional(&mut *conn)
            .await?;
    let mut q = select(true);
    if let Some((event_type, received_at)) = key {
        q.push(" AND event_type = ").push_bind(event_type).push(" AND received_at = ").push_bind(received_at);
    }
    q.push(" AND svix_id = ").push_bind(svix_id.to_owned()).push(" ORDER BY received_at LIMIT 1");
    q.build_query_as().fetch_optional(conn).await
}

/// The next page of events matching `filter`, oldest first, after `(received_at, svix_id)`, with
/// bodies.
pub async fn page(
    conn: &mut PgConnection,
    filter: &Filter,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<Stored>, sqlx::Error> {
    let mut q = select(true);
    conditions(&mut q, filter);
    if let Some((at, id)) = after {
        q.push(" AND (received_at, svix_id) > (").push_bind(at).push(", ").push_bind(id).push(")");
    }
    q.push(" ORDER BY received_at, svix_id LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}

/// The column that names the objects of a resource's events, so that its index finds them: a
/// `user.*` event's object is its `user_id`, an `organization.*` event's its `organization_id`,
/// and only the other objects are in the `object_id` index (migration 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKey {
    User,
    Organization,
    Other,
}

impl ObjectKey {
    /// The key of `resource`'s objects, as `Subject::of` stores them.
    pub fn of(resource: Resource) -> Self {
        match resource {
            Resource::User => Self::User,
            Resource::Organization => Self::Organization,
            _ => Self::Other,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::User => "user_id",
            Self::Organization => "organization_id",
            Self::Other => "object_id",
        }
    }

    /// The condition that names the rows the key's index holds (for `Other`, the partial index's
    /// own predicate, so the planner can use it).
    fn holds(self) -> &'static str {
        match self {
            Self::User | Self::Organization => "true",
            Self::Other => "object_id IS DISTINCT FROM user_id AND object_id IS DISTINCT FROM organization_id",
        }
    }
}

/// The next `limit` objects (ids above `after`) that events of `types` wrote, in id order.
pub async fn object_ids(
    conn: &mut PgConnection,
    types: &[&str],
    key: ObjectKey,
    after: &str,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let (column, holds) = (key.column(), key.holds());
    let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
    let mut q = QueryBuilder::new(format!("SELECT DISTINCT {column} FROM clerk.event_history WHERE {column} > "));
    q.push_bind(after.to_owned()).push(" AND event_type = ANY (").push_bind(types);
    q.push(format!(") AND {holds} ORDER BY {column} LIMIT ")).push_bind(limit);
    q.build_query_scalar().fetch_all(conn).await
}

/// Where a page of [`events_of`] ended: the object, then the event's `(received_at, svix_id)`.
#[derive(Debug, Clone)]
pub struct EventCursor {
    object: String,
    received_at: DateTime<Utc>,
    svix_id: String,
}

impl EventCursor {
    /// The cursor just past `last`, the last event of a page read with `key`.
    pub fn after(key: ObjectKey, last: &Stored) -> Option<Self> {
        let object = match key {
            ObjectKey::User => last.user_id.clone(),
            ObjectKey::Organization => last.organization_id.clone(),
            ObjectKey::Other => last.object_id.clone(),
        }?;
        Some(Self { object, received_at: last.received_at, svix_id: last.svix_id.clone() })
    }
}

/// Up to `limit` stored events of `types` about the objects `ids`, after `cursor`, by object and
/// then oldest first. An object with more events than `limit` spans several pages, so that the
/// memory a page takes is bounded by events, not by how many one object has.
pub async fn events_of(
    conn: &mut PgConnection,
    types: &[&str],
    key: ObjectKey,
    ids: &[String],
    cursor: Option<&EventCursor>,
    limit: i64,
) -> Result<Vec<Stored>, sqlx::Error> {
    let (column, holds) = (key.column(), key.holds());
    let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
    let mut q = select(true);
    q.push(format!(" AND {holds} AND {column} = ANY ("));
    q.push_bind(ids.to_vec()).push(") AND event_type = ANY (").push_bind(types).push(")");
    if let Some(c) = cursor {
        q.push(format!(" AND ({column}, received_at, svix_id) > ("));
        q.push_bind(c.object.clone()).push(", ").push_bind(c.received_at).push(", ").push_bind(c.svix_id.clone());
        q.push(")");
    }
    q.push(format!(" ORDER BY {column}, received_at, svix_id LIMIT ")).push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}

/// Rows and bytes of the history (Postgres' estimate of rows, exact bytes), for the metrics.
pub async fn size(conn: &mut PgConnection) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::int8, coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8
         FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'clerk.event_history'::regclass",
    )
    .fetch_one(conn)
    .await
}

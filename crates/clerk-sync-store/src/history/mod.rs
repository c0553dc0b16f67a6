//! The event history (`clerk.event_history`, migration 9): every distinct verified event's body,
//! compressed (`codec`), with who it is about (`subject`), its times and its outcome, written in
//! the batch's transaction; a deleted user's bodies scrubbed (`scrub`) in the transaction that
//! deletes the user, with those of the invitations and waitlist entries that reach the user by
//! address or name them as inviter; and the queries operators run (`query`).

pub mod codec;
pub mod query;
pub mod scrub;
pub mod subject;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::db::{Outcome, ms};
use crate::event::{Change, Event};
pub use subject::Subject;

/// Records the fresh events of a batch that carry a body, with their outcomes. Returns the users
/// among them that are already deleted: their bodies must be scrubbed like the others'.
pub(crate) async fn record(
    conn: &mut PgConnection,
    batch: &[&Event],
    fresh: &[bool],
    outcomes: &[Outcome],
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(&Event, Outcome)> = batch
        .iter()
        .zip(fresh)
        .zip(outcomes)
        .filter(|((e, f), _)| **f && e.body.is_some())
        .map(|((e, _), o)| (*e, *o))
        .collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let subjects: Vec<Subject> = rows.iter().map(|(e, _)| Subject::of(e)).collect();
    let received: Vec<DateTime<Utc>> =
        rows.iter().map(|(e, _)| ms(e.received_at_ms).unwrap_or_else(Utc::now)).collect();
    let ids: Vec<&str> = rows.iter().map(|(e, _)| e.svix_id.as_str()).collect();
    let types: Vec<&str> = rows.iter().map(|(e, _)| e.event_type.as_str()).collect();
    let occurred: Vec<Option<DateTime<Utc>>> = rows.iter().map(|(e, _)| e.occurred_at_ms.and_then(ms)).collect();
    let objects: Vec<Option<&str>> = subjects.iter().map(|s| s.object_id.as_deref()).collect();
    let users: Vec<Option<&str>> = subjects.iter().map(|s| s.user_id.as_deref()).collect();
    let orgs: Vec<Option<&str>> = subjects.iter().map(|s| s.organization_id.as_deref()).collect();
    let outcome: Vec<&str> = rows.iter().map(|(_, o)| o.as_str()).collect();
    let replay_of: Vec<Option<&str>> = rows.iter().map(|(e, _)| e.replay_of.as_deref()).collect();
    let bodies: Vec<Vec<u8>> = rows.iter().map(|(e, _)| codec::encode(e.body.as_deref().unwrap_or_default())).collect();
    let mut named: Vec<&str> = users.iter().flatten().copied().collect();
    named.sort_unstable();
    named.dedup();
    // The insert runs whatever the outer query reads. The outer query looks the batch's users up
    // by primary key (migration 16): a join with the insert's output let the planner hash-join a
    // sequential scan of clerk.users into every batch while the table's statistics were stale.
    sqlx::query_scalar(
        "WITH ins AS (
             INSERT INTO clerk.event_history (received_at, svix_id, event_type, occurred_at, object_id, user_id,
                 organization_id, outcome, replay_of, body)
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[]))
         SELECT clerk.deleted_users_among($11::text[])",
    )
    .bind(&received)
    .bind(&ids)
    .bind(&types)
    .bind(&occurred)
    .bind(&objects)
    .bind(&users)
    .bind(&orgs)
    .bind(&outcome)
    .bind(&replay_of)
    .bind(&bodies)
    .bind(&named)
    .fetch_all(conn)
    .await
}

/// A stored event to scrub, locked, with its row address (`ctid` as text).
#[derive(sqlx::FromRow)]
struct Candidate {
    received_at: DateTime<Utc>,
    row_id: String,
    svix_id: String,
    body: Option<Vec<u8>>,
}

/// Scrubs the stored events of `users` (deleted): each body keeps only what the tables keep of
/// its object after the deletion (`scrub`).
/// Returns how many bodies changed. The deletion events themselves name only ids: left as they are.
pub async fn scrub_users(conn: &mut PgConnection, users: &[&str]) -> Result<u64, sqlx::Error> {
    if users.is_empty() {
        return Ok(0);
    }
    // Both statements are functions pinned to index plans (migration 24): sent from here, the
    // rewrite hash-joined a sequential scan of the day's partition while it had no statistics.
    let stored: Vec<Candidate> =
        sqlx::query_as("SELECT received_at, row_id, svix_id, body FROM clerk.history_scrub_candidates($1)")
            .bind(users)
            .fetch_all(&mut *conn)
            .await?;
    rewrite(conn, &stored, scrub::scrub).await
}

/// The objects a batch's user deletions reach only by address or as inviter, read before the
/// batch's tombstones remove the addresses; their stored events are scrubbed after the batch is
/// recorded ([`AddressedObjects::scrub`]).
#[derive(Debug, Default)]
pub(crate) struct AddressedObjects {
    /// Invitations and waitlist entries sent to one of the deleted users' addresses.
    addressed: Vec<String>,
    /// Invitations the deleted users sent.
    sent: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct Lookup {
    addresses: Vec<String>,
    addressed: Vec<String>,
    sent: Vec<String>,
}

impl AddressedObjects {
    /// Looks up, for the users `deleted` in `batch`, the invitations and waitlist entries stored
    /// or in the batch that are sent to their addresses, and the invitations they sent.
    pub(crate) async fn of(conn: &mut PgConnection, batch: &[&Event], deleted: &[&str]) -> Result<Self, sqlx::Error> {
        // The batch's own versions of those users: a user created and deleted in one batch is
        // not stored yet.
        let more: Vec<&str> = batch
            .iter()
            .filter_map(|e| match &e.change {
                Change::UpsertUser(u) if deleted.contains(&u.id.as_str()) => u.email_addresses.as_ref(),
                _ => None,
            })
            .flatten()
            .filter_map(|a| a.email_address.as_deref())
            .collect();
        let found: Lookup =
            sqlx::query_as("SELECT addresses, addressed, sent FROM clerk.history_objects_of_deleted_users($1, $2)")
                .bind(deleted)
                .bind(&more)
                .fetch_one(conn)
                .await?;
        let Lookup { addresses, mut addressed, mut sent } = found;
        let to_deleted = |a: &Option<String>| a.as_deref().is_some_and(|a| addresses.contains(&a.to_lowercase()));
        for e in batch {
            match &e.change {
                Change::UpsertInvitation(i) if to_deleted(&i.email_address) => addressed.push(i.id.clone()),
                Change::UpsertInvitation(i) if i.inviter_id.as_deref().is_some_and(|u| deleted.contains(&u)) => {
                    sent.push(i.id.clone());
                }
                Change::UpsertWaitlistEntry(w) if to_deleted(&w.email_address) => addressed.push(w.id.clone()),
                _ => {}
            }
        }
        for ids in [&mut addressed, &mut sent] {
            ids.sort_unstable();
            ids.dedup();
        }
        Ok(Self { addressed, sent })
    }

    /// Scrubs the stored events of these objects (the batch's own are recorded by then).
    pub(crate) async fn scrub(&self, conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
        let mut done = 0;
        // The invitee's address kept for the inviter's deletion goes if the invitee is deleted
        // too: the full scrub runs last.
        for (ids, how) in [(&self.sent, scrub::scrub_inviter as fn(&[u8]) -> _), (&self.addressed, scrub::scrub)] {
            if ids.is_empty() {
                continue;
            }
            let stored: Vec<Candidate> = sqlx::query_as(
                "SELECT received_at, row_id, svix_id, body FROM clerk.history_scrub_object_candidates($1)",
            )
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?;
            done += rewrite(conn, &stored, how).await?;
        }
        Ok(done)
    }
}

/// Writes `how` of each candidate's body over it; returns how many rows changed.
async fn rewrite(
    conn: &mut PgConnection,
    stored: &[Candidate],
    how: fn(&[u8]) -> Option<Vec<u8>>,
) -> Result<u64, sqlx::Error> {
    if stored.is_empty() {
        return Ok(0);
    }
    let scrubbed: Vec<Option<Vec<u8>>> = stored
        .iter()
        .map(|c| {
            let body = codec::decode(c.body.as_deref()?).ok()?;
            how(&body).map(|b| codec::encode(&b))
        })
        .collect();
    let received: Vec<DateTime<Utc>> = stored.iter().map(|c| c.received_at).collect();
    let rows: Vec<&str> = stored.iter().map(|c| c.row_id.as_str()).collect();
    let ids: Vec<&str> = stored.iter().map(|c| c.svix_id.as_str()).collect();
    let done: i64 = sqlx::query_scalar("SELECT clerk.history_scrub_write($1, $2, $3, $4)")
        .bind(&received)
        .bind(&rows)
        .bind(&ids)
        .bind(&scrubbed)
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(done).unwrap_or_default())
}

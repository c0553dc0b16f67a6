//! Applying a batch of events in one transaction (the caller begins and commits it).
//!
//! 1. Record every svix-id in `clerk.webhook_events` (`ON CONFLICT DO NOTHING`) with the outcome
//!    it will most likely get: an id already there is a duplicate and changes nothing. The insert
//!    comes first so that a concurrent transaction holding the same id waits here, then finds it.
//! 2. Reduce the fresh events to a [`Plan`]: the newest version of each object and the earliest
//!    deletion, as applying them one by one would end up.
//! 3. `clerk.apply_batch` (see migrations/README.md for where each function is defined) writes
//!    the plan server-side in one round trip, one `jsonb` argument per resource, under the
//!    ordering guard, and returns the rows it wrote alive.
//! 4. [`outcome::decide`] gives each message its outcome from that; the few recorded in step 1 that
//!    the write decided otherwise (guard refusals) are corrected, in a third round trip only then.
//! 5. The fresh events that carry a body go to the event history with their outcomes (one more
//!    round trip), and the users this batch deleted (or already deleted, named by its events) have
//!    their stored bodies scrubbed, with those of the invitations and waitlist entries sent to
//!    their addresses or by them (looked up before step 3 removes the addresses).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::ms;
use super::outcome::{self, Alive, Outcome};
use super::plan::Plan;
use super::resources::Rows;
use crate::catalogue::Resource;
use crate::event::Event;
use crate::history;

/// Applies `batch` inside the caller's transaction; returns one outcome per message.
pub async fn apply_batch(conn: &mut PgConnection, batch: &[&Event]) -> Result<Vec<Outcome>, sqlx::Error> {
    // A repeat of an svix-id inside the batch is a duplicate of its first occurrence.
    let mut seen = HashSet::new();
    let first: Vec<bool> = batch.iter().map(|e| seen.insert(e.svix_id.as_str())).collect();
    let likely = Plan::build(batch, &first);
    let recorded = outcome::decide_all(batch, &first, &likely, None);
    let fresh = record_events(conn, batch, &first, &recorded).await?;
    // Usually nothing was recorded before, and the plan of the fresh events is the likely one.
    let plan = if fresh == first { likely } else { Plan::build(batch, &fresh) };
    // The change feed's triggers read the svix-ids of deletions from the transaction (migration 10).
    crate::feed::name_deletions(conn, batch, &fresh).await?;
    // Read before the tombstones remove the deleted users' addresses. Only with the history on
    // (the events then carry their bodies).
    let addressed = if !plan.user_deletes.is_empty() && batch.iter().any(|e| e.body.is_some()) {
        let deleted: Vec<&str> = plan.user_deletes.keys().copied().collect();
        Some(history::AddressedObjects::of(conn, batch, &deleted).await?)
    } else {
        None
    };
    let alive = write(conn, &plan).await?;
    let outcomes = outcome::decide_all(batch, &fresh, &plan, Some(&alive));
    let corrections: Vec<(&str, &str)> = (0..batch.len())
        .filter(|&i| fresh[i] && outcomes[i] != recorded[i])
        .map(|i| (batch[i].svix_id.as_str(), outcomes[i].as_str()))
        .collect();
    if !corrections.is_empty() {
        correct(conn, &corrections).await?;
    }
    let mut deleted_users = history::record(conn, batch, &fresh, &outcomes).await?;
    deleted_users.extend(plan.user_deletes.keys().map(|id| (*id).to_owned()));
    if !deleted_users.is_empty() {
        deleted_users.sort();
        deleted_users.dedup();
        let users: Vec<&str> = deleted_users.iter().map(String::as_str).collect();
        history::scrub_users(conn, &users).await?;
    }
    if let Some(objects) = addressed {
        objects.scrub(conn).await?;
    }
    Ok(outcomes)
}

/// Writes `batch` again for `clerk-sync reproject`: every event counts as fresh, nothing is
/// recorded (the events were deduplicated and recorded when they arrived), and a version equal to
/// the stored one is written again (`clerk.reproject`), so a column added since is filled; an
/// older version still never overwrites a newer one, so live webhooks win. Returns the rows
/// written alive.
pub async fn reproject_batch(conn: &mut PgConnection, batch: &[&Event]) -> Result<usize, sqlx::Error> {
    let plan = Plan::build(batch, &vec![true; batch.len()]);
    sqlx::query("SELECT set_config('clerk.reproject', 'on', true)").execute(&mut *conn).await?;
    // On an error the transaction is aborted (and the setting is transaction-local): nothing to undo.
    let alive = write(conn, &plan).await?;
    sqlx::query("SELECT set_config('clerk.reproject', 'off', true)").execute(&mut *conn).await?;
    Ok(alive.len())
}

/// Inserts the svix-id of each first occurrence with its likely outcome; returns, per message,
/// whether it is new (its first occurrence, and not recorded by an earlier transaction).
async fn record_events(
    conn: &mut PgConnection,
    batch: &[&Event],
    first: &[bool],
    likely: &[Outcome],
) -> Result<Vec<bool>, sqlx::Error> {
    let rows = || batch.iter().zip(first).zip(likely).filter(|((_, f), _)| **f).map(|((e, _), o)| (e, o));
    let ids: Vec<&str> = rows().map(|(e, _)| e.svix_id.as_str()).collect();
    let types: Vec<&str> = rows().map(|(e, _)| e.event_type.as_str()).collect();
    let occurred: Vec<Option<DateTime<Utc>>> = rows().map(|(e, _)| e.occurred_at_ms.and_then(ms)).collect();
    let received: Vec<DateTime<Utc>> = rows().map(|(e, _)| ms(e.received_at_ms).unwrap_or_else(Utc::now)).collect();
    let outcomes: Vec<&str> = rows().map(|(_, o)| o.as_str()).collect();
    let inserted: HashSet<String> = sqlx::query_scalar(
        "INSERT INTO clerk.webhook_events (svix_id, event_type, occurred_at, received_at, processed_at, outcome)
         SELECT x.svix_id, x.event_type, x.occurred_at, x.received_at, now(), x.outcome
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[])
             AS x(svix_id, event_type, occurred_at, received_at, outcome)
         ORDER BY 1
         ON CONFLICT (svix_id) DO NOTHING
         RETURNING svix_id",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&occurred)
    .bind(&received)
    .bind(&outcomes)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    Ok(batch.iter().zip(first).map(|(e, f)| *f && inserted.contains(e.svix_id.as_str())).collect())
}

/// Sends the plan to `clerk.apply_batch`; returns the rows written and alive.
async fn write(conn: &mut PgConnection, plan: &Plan<'_>) -> Result<Alive, sqlx::Error> {
    let mut alive = Alive::default();
    if plan.is_empty() {
        return Ok(alive);
    }
    let rows = Rows::of(plan);
    let written: Vec<(String, String)> = sqlx::query_as(
        "SELECT resource, id FROM clerk.apply_batch(organizations => $1, users => $2, memberships => $3,
             sessions => $4, invitations => $5, roles => $6, permissions => $7, domains => $8,
             waitlist_entries => $9, subscriptions => $10, subscription_items => $11, payment_attempts => $12)",
    )
    .bind(Json(&rows.organizations))
    .bind(Json(&rows.users))
    .bind(Json(&rows.memberships))
    .bind(Json(&rows.sessions))
    .bind(Json(&rows.invitations))
    .bind(Json(&rows.roles))
    .bind(Json(&rows.permissions))
    .bind(Json(&rows.domains))
    .bind(Json(&rows.waitlist_entries))
    .bind(Json(&rows.subscriptions))
    .bind(Json(&rows.subscription_items))
    .bind(Json(&rows.payment_attempts))
    .fetch_all(conn)
    .await?;
    for (resource, id) in written {
        if let Some(resource) = Resource::from_sql(&resource) {
            alive.insert(resource, id);
        }
    }
    Ok(alive)
}

/// Rewrites the recorded outcome of the messages the write decided otherwise.
async fn correct(conn: &mut PgConnection, corrections: &[(&str, &str)]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = corrections.iter().map(|(id, _)| *id).collect();
    let outcomes: Vec<&str> = corrections.iter().map(|(_, o)| *o).collect();
    sqlx::query(
        "UPDATE clerk.webhook_events AS e SET outcome = x.outcome
         FROM UNNEST($1::text[], $2::text[]) AS x(svix_id, outcome)
         WHERE e.svix_id = x.svix_id",
    )
    .bind(&ids)
    .bind(&outcomes)
    .execute(conn)
    .await?;
    Ok(())
}

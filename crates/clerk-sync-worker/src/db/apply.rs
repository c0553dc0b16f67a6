//! Applying a batch of events in one transaction (the caller begins and commits it).
//!
//! 1. Record every svix-id in `clerk.webhook_events` (`ON CONFLICT DO NOTHING`): an id already
//!    there is a duplicate and changes nothing.
//! 2. Upsert the newest version of each object only if its `updated_at` is not older than the
//!    stored one. A tombstone (a row with `deleted_at`) is never revived: a late version updates
//!    only its non-personal columns (ids, role, flags, timestamps), so the final state does not
//!    depend on the order events arrived in, and personal columns stay NULL.
//! 3. Tombstone deletions (earliest `deleted_at` wins) and remove personal data; memberships of a
//!    deleted user or organization are tombstoned too, including ones that arrive later.
//! 4. Correct the recorded outcome of events that turned out stale.
//!
//! Statements touch organizations, then users, then memberships, each in id order, so concurrent
//! batches lock rows in the same order.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::ms;
use super::rows::{DeletionsById, Newest, NewestById, keep_earliest, keep_newest};
use crate::event::{Change, Membership, Organization, ParsedEvent, User};

/// One message ready for the database.
#[derive(Debug)]
pub struct Incoming<'a> {
    pub svix_id: &'a str,
    pub event: &'a ParsedEvent,
    /// When the gateway received it (ms); dates a deletion whose envelope has no timestamp.
    pub received_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Applied,
    /// Older than what is stored, superseded in its batch, or for an object already deleted.
    Stale,
    /// A type this service does not store.
    Ignored,
    /// Its svix-id was processed before.
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Stale => "stale",
            Self::Ignored => "ignored",
            Self::Duplicate => "duplicate",
        }
    }
}

#[derive(Default)]
struct Plan<'a> {
    users: NewestById<'a, User>,
    user_deletes: DeletionsById<'a>,
    orgs: NewestById<'a, Organization>,
    org_deletes: DeletionsById<'a>,
    members: NewestById<'a, Membership>,
    member_deletes: DeletionsById<'a>,
}

fn plan<'a>(batch: &'a [Incoming<'a>], fresh: &[bool]) -> Plan<'a> {
    let mut p = Plan::default();
    for (i, inc) in batch.iter().enumerate().filter(|(i, _)| fresh[*i]) {
        let deleted_at = inc.event.occurred_at_ms.unwrap_or(inc.received_at_ms);
        let raw = inc.event.data.get();
        let membership = |p: &mut Plan<'a>, m: &'a Membership, org: &'a Option<Organization>| {
            keep_newest(
                &mut p.members,
                &m.id,
                Newest { owner: Some(i), updated_at: m.updated_at.unwrap_or(0), object: m, raw },
            );
            if let (Some(org), Some(org_raw)) = (org, &m.organization) {
                let candidate =
                    Newest { owner: None, updated_at: org.updated_at.unwrap_or(0), object: org, raw: org_raw.get() };
                keep_newest(&mut p.orgs, &org.id, candidate);
            }
        };
        match &inc.event.change {
            Change::UpsertUser(u) => keep_newest(
                &mut p.users,
                &u.id,
                Newest { owner: Some(i), updated_at: u.updated_at.unwrap_or(0), object: u, raw },
            ),
            Change::DeleteUser(d) => keep_earliest(&mut p.user_deletes, &d.id, deleted_at, d.external_id.as_deref()),
            Change::UpsertOrganization(o) => keep_newest(
                &mut p.orgs,
                &o.id,
                Newest { owner: Some(i), updated_at: o.updated_at.unwrap_or(0), object: o, raw },
            ),
            Change::DeleteOrganization(d) => keep_earliest(&mut p.org_deletes, &d.id, deleted_at, None),
            Change::UpsertMembership { membership: m, organization } => membership(&mut p, m, organization),
            Change::DeleteMembership { membership: m, organization } => {
                membership(&mut p, m, organization);
                keep_earliest(&mut p.member_deletes, &m.id, deleted_at, None);
            }
            Change::Ignore => {}
        }
    }
    p
}

/// Applies `batch` inside the caller's transaction; returns one outcome per message.
pub async fn apply_batch(conn: &mut PgConnection, batch: &[Incoming<'_>]) -> Result<Vec<Outcome>, sqlx::Error> {
    let fresh = record_events(conn, batch).await?;
    let p = plan(batch, &fresh);

    let orgs_alive = upsert_orgs(conn, &p.orgs).await?;
    tombstone(conn, TOMBSTONE_ORGS, &p.org_deletes).await?;
    let users_alive = upsert_users(conn, &p.users).await?;
    tombstone(conn, TOMBSTONE_USERS, &p.user_deletes).await?;
    let members_alive = upsert_memberships(conn, &p.members).await?;
    tombstone(conn, TOMBSTONE_MEMBERSHIPS, &p.member_deletes).await?;
    let touched: Vec<&str> = p.members.keys().copied().collect();
    cascade(conn, CASCADE_FROM_USERS, &p.user_deletes, &touched).await?;
    cascade(conn, CASCADE_FROM_ORGS, &p.org_deletes, &touched).await?;

    let won = |map_owner: Option<usize>, alive: &HashSet<String>, id: &str, i: usize| {
        if map_owner == Some(i) && alive.contains(id) { Outcome::Applied } else { Outcome::Stale }
    };
    let outcomes: Vec<Outcome> = batch
        .iter()
        .enumerate()
        .map(|(i, inc)| {
            if !fresh[i] {
                return Outcome::Duplicate;
            }
            match &inc.event.change {
                Change::UpsertUser(u) => won(p.users.get(u.id.as_str()).and_then(|n| n.owner), &users_alive, &u.id, i),
                Change::UpsertOrganization(o) => {
                    won(p.orgs.get(o.id.as_str()).and_then(|n| n.owner), &orgs_alive, &o.id, i)
                }
                Change::UpsertMembership { membership: m, .. } => {
                    won(p.members.get(m.id.as_str()).and_then(|n| n.owner), &members_alive, &m.id, i)
                }
                Change::DeleteUser(_) | Change::DeleteOrganization(_) | Change::DeleteMembership { .. } => {
                    Outcome::Applied
                }
                Change::Ignore => Outcome::Ignored,
            }
        })
        .collect();
    record_stale(conn, batch, &outcomes).await?;
    Ok(outcomes)
}

/// Inserts every svix-id with its provisional outcome (`ignored` for types not stored, else
/// `applied`); returns, per message, whether it is new (its first occurrence, and not recorded by an
/// earlier transaction). The insert comes first so that a concurrent transaction holding the same
/// id waits here, then finds it.
async fn record_events(conn: &mut PgConnection, batch: &[Incoming<'_>]) -> Result<Vec<bool>, sqlx::Error> {
    let ids: Vec<&str> = batch.iter().map(|m| m.svix_id).collect();
    let types: Vec<&str> = batch.iter().map(|m| m.event.event_type.as_str()).collect();
    let occurred: Vec<Option<DateTime<Utc>>> = batch.iter().map(|m| m.event.occurred_at_ms.and_then(ms)).collect();
    let received: Vec<DateTime<Utc>> = batch.iter().map(|m| ms(m.received_at_ms).unwrap_or_else(Utc::now)).collect();
    let provisional: Vec<&str> = batch
        .iter()
        .map(|m| {
            if matches!(m.event.change, Change::Ignore) { Outcome::Ignored.as_str() } else { Outcome::Applied.as_str() }
        })
        .collect();
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
    .bind(&provisional)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut seen = HashSet::new();
    Ok(ids.iter().map(|id| inserted.contains(*id) && seen.insert(*id)).collect())
}

/// Corrects the provisional outcome of the events that turned out stale (usually few).
async fn record_stale(
    conn: &mut PgConnection,
    batch: &[Incoming<'_>],
    outcomes: &[Outcome],
) -> Result<(), sqlx::Error> {
    let stale: Vec<&str> =
        batch.iter().zip(outcomes).filter(|(_, o)| **o == Outcome::Stale).map(|(m, _)| m.svix_id).collect();
    if stale.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE clerk.webhook_events SET outcome = 'stale' WHERE svix_id = ANY($1)")
        .bind(&stale)
        .execute(conn)
        .await?;
    Ok(())
}

fn raw_text(v: &Option<Box<serde_json::value::RawValue>>) -> Option<&str> {
    v.as_deref().map(serde_json::value::RawValue::get)
}

/// Ids of rows written and still alive (not tombstones).
async fn alive(
    query: sqlx::query::QueryAs<'_, sqlx::Postgres, (String, bool), sqlx::postgres::PgArguments>,
    conn: &mut PgConnection,
) -> Result<HashSet<String>, sqlx::Error> {
    Ok(query.fetch_all(conn).await?.into_iter().filter(|(_, a)| *a).map(|(id, _)| id).collect())
}

async fn upsert_users(conn: &mut PgConnection, rows: &NewestById<'_, User>) -> Result<HashSet<String>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let v: Vec<&Newest<'_, User>> = rows.values().collect();
    let ids: Vec<&str> = rows.keys().copied().collect();
    let q = sqlx::query_as(
        "INSERT INTO clerk.users AS u (id, external_id, username, first_name, last_name, primary_email_address,
             primary_phone_number, image_url, public_metadata, private_metadata, unsafe_metadata, banned, locked,
             last_sign_in_at, created_at, updated_at, raw, synced_at)
         SELECT x.id, x.external_id, x.username, x.first_name, x.last_name, x.email, x.phone, x.image_url,
             x.pub::jsonb, x.priv::jsonb, x.uns::jsonb, x.banned, x.locked, x.last_sign_in_at, x.created_at,
             x.updated_at, x.raw::jsonb, now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
             $9::text[], $10::text[], $11::text[], $12::bool[], $13::bool[], $14::timestamptz[], $15::timestamptz[],
             $16::timestamptz[], $17::text[])
             AS x(id, external_id, username, first_name, last_name, email, phone, image_url, pub, priv, uns, banned,
                  locked, last_sign_in_at, created_at, updated_at, raw)
         ORDER BY x.id
         ON CONFLICT (id) DO UPDATE SET
             external_id = EXCLUDED.external_id,
             username = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.username END,
             first_name = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.first_name END,
             last_name = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.last_name END,
             primary_email_address = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.primary_email_address END,
             primary_phone_number = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.primary_phone_number END,
             image_url = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.image_url END,
             public_metadata = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.public_metadata END,
             private_metadata = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.private_metadata END,
             unsafe_metadata = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.unsafe_metadata END,
             last_sign_in_at = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.last_sign_in_at END,
             raw = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.raw END,
             banned = EXCLUDED.banned,
             locked = EXCLUDED.locked,
             created_at = EXCLUDED.created_at,
             updated_at = EXCLUDED.updated_at,
             synced_at = now()
         WHERE u.updated_at IS NULL OR u.updated_at < EXCLUDED.updated_at
             OR (u.updated_at = EXCLUDED.updated_at AND u.raw IS DISTINCT FROM EXCLUDED.raw)
         RETURNING u.id, u.deleted_at IS NULL",
    )
    .bind(ids)
    .bind(v.iter().map(|n| n.object.external_id.as_deref()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.username.as_deref()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.first_name.as_deref()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.last_name.as_deref()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.primary_email()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.primary_phone()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.image_url.as_deref()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| raw_text(&n.object.public_metadata)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| raw_text(&n.object.private_metadata)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| raw_text(&n.object.unsafe_metadata)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.banned).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.locked).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.last_sign_in_at.and_then(ms)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.created_at.and_then(ms)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| ms(n.updated_at)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.raw).collect::<Vec<_>>());
    alive(q, conn).await
}

async fn upsert_orgs(
    conn: &mut PgConnection,
    rows: &NewestById<'_, Organization>,
) -> Result<HashSet<String>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let v: Vec<&Newest<'_, Organization>> = rows.values().collect();
    let ids: Vec<&str> = rows.keys().copied().collect();
    let q = sqlx::query_as(
        "INSERT INTO clerk.organizations AS o (id, name, slug, image_url, created_by, members_count,
             max_allowed_memberships, public_metadata, private_metadata, created_at, updated_at, raw, synced_at)
         SELECT x.id, x.name, x.slug, x.image_url, x.created_by, x.members_count, x.max_allowed, x.pub::jsonb,
             x.priv::jsonb, x.created_at, x.updated_at, x.raw::jsonb, now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int4[], $8::text[],
             $9::text[], $10::timestamptz[], $11::timestamptz[], $12::text[])
             AS x(id, name, slug, image_url, created_by, members_count, max_allowed, pub, priv, created_at, updated_at, raw)
         ORDER BY x.id
         ON CONFLICT (id) DO UPDATE SET
             name = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.name END,
             slug = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.slug END,
             image_url = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.image_url END,
             public_metadata = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.public_metadata END,
             private_metadata = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.private_metadata END,
             raw = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.raw END,
             created_by = EXCLUDED.created_by,
             members_count = EXCLUDED.members_count,
             max_allowed_memberships = EXCLUDED.max_allowed_memberships,
             created_at = EXCLUDED.created_at,
             updated_at = EXCLUDED.updated_at,
             synced_at = now()
         WHERE o.updated_at IS NULL OR o.updated_at < EXCLUDED.updated_at
             OR (o.updated_at = EXCLUDED.updated_at AND o.raw IS DISTINCT FROM EXCLUDED.raw)
         RETURNING o.id, o.deleted_at IS NULL",
    )
    .bind(ids)
    .bind(v.iter().map(|n| n.object.name.as_deref()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.slug.as_deref()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.image_url.as_deref()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.created_by.as_deref()).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.members_count).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.max_allowed_memberships).collect::<Vec<_>>())
    .bind(v.iter().map(|n| raw_text(&n.object.public_metadata)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| raw_text(&n.object.private_metadata)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.created_at.and_then(ms)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| ms(n.updated_at)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.raw).collect::<Vec<_>>());
    alive(q, conn).await
}

async fn upsert_memberships(
    conn: &mut PgConnection,
    rows: &NewestById<'_, Membership>,
) -> Result<HashSet<String>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let v: Vec<&Newest<'_, Membership>> = rows.values().collect();
    let ids: Vec<&str> = rows.keys().copied().collect();
    let org_ids: Vec<Option<String>> = v.iter().map(|n| nested_org_id(n.object)).collect();
    let permissions: Vec<Option<String>> =
        v.iter().map(|n| n.object.permissions.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default())).collect();
    let q = sqlx::query_as(
        "INSERT INTO clerk.organization_memberships AS m (id, organization_id, user_id, role, permissions,
             public_metadata, private_metadata, created_at, updated_at, raw, synced_at)
         SELECT x.id, x.organization_id, x.user_id, x.role,
             CASE WHEN x.permissions IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(x.permissions::jsonb)) END,
             x.pub::jsonb, x.priv::jsonb, x.created_at, x.updated_at, x.raw::jsonb, now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::timestamptz[], $9::timestamptz[], $10::text[])
             AS x(id, organization_id, user_id, role, permissions, pub, priv, created_at, updated_at, raw)
         ORDER BY x.id
         ON CONFLICT (id) DO UPDATE SET
             public_metadata = CASE WHEN m.deleted_at IS NULL THEN EXCLUDED.public_metadata END,
             private_metadata = CASE WHEN m.deleted_at IS NULL THEN EXCLUDED.private_metadata END,
             raw = CASE WHEN m.deleted_at IS NULL THEN EXCLUDED.raw END,
             organization_id = EXCLUDED.organization_id,
             user_id = EXCLUDED.user_id,
             role = EXCLUDED.role,
             permissions = EXCLUDED.permissions,
             created_at = EXCLUDED.created_at,
             updated_at = EXCLUDED.updated_at,
             synced_at = now()
         WHERE m.updated_at IS NULL OR m.updated_at < EXCLUDED.updated_at
             OR (m.updated_at = EXCLUDED.updated_at AND m.raw IS DISTINCT FROM EXCLUDED.raw)
         RETURNING m.id, m.deleted_at IS NULL",
    )
    .bind(ids)
    .bind(org_ids)
    .bind(v.iter().map(|n| n.object.public_user_data.as_ref().and_then(|p| p.user_id.as_deref())).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.role.as_deref()).collect::<Vec<_>>())
    .bind(permissions)
    .bind(v.iter().map(|n| raw_text(&n.object.public_metadata)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| raw_text(&n.object.private_metadata)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.object.created_at.and_then(ms)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| ms(n.updated_at)).collect::<Vec<_>>())
    .bind(v.iter().map(|n| n.raw).collect::<Vec<_>>());
    alive(q, conn).await
}

/// The organization id of a membership, read from its nested organization even when that
/// organization was too incomplete to upsert.
fn nested_org_id(m: &Membership) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    m.organization.as_ref().and_then(|raw| serde_json::from_str::<Id>(raw.get()).ok()).and_then(|o| o.id)
}

const TOMBSTONE_USERS: &str = "INSERT INTO clerk.users AS t (id, external_id, deleted_at, synced_at)
     SELECT x.id, x.external_id, x.deleted_at, now()
     FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS x(id, external_id, deleted_at) ORDER BY x.id
     ON CONFLICT (id) DO UPDATE SET
         deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
         external_id = COALESCE(EXCLUDED.external_id, t.external_id),
         username = NULL, first_name = NULL, last_name = NULL, primary_email_address = NULL,
         primary_phone_number = NULL, image_url = NULL, public_metadata = NULL, private_metadata = NULL,
         unsafe_metadata = NULL, last_sign_in_at = NULL, raw = NULL, synced_at = now()";

const TOMBSTONE_ORGS: &str = "INSERT INTO clerk.organizations AS t (id, deleted_at, synced_at)
     SELECT x.id, x.deleted_at, now()
     FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS x(id, external_id, deleted_at) ORDER BY x.id
     ON CONFLICT (id) DO UPDATE SET
         deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
         name = NULL, slug = NULL, image_url = NULL, public_metadata = NULL, private_metadata = NULL,
         raw = NULL, synced_at = now()";

const TOMBSTONE_MEMBERSHIPS: &str = "INSERT INTO clerk.organization_memberships AS t (id, deleted_at, synced_at)
     SELECT x.id, x.deleted_at, now()
     FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS x(id, external_id, deleted_at) ORDER BY x.id
     ON CONFLICT (id) DO UPDATE SET
         deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
         public_metadata = NULL, private_metadata = NULL, raw = NULL, synced_at = now()";

async fn tombstone(conn: &mut PgConnection, sql: &'static str, rows: &DeletionsById<'_>) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(sql)
        .bind(rows.keys().copied().collect::<Vec<_>>())
        .bind(rows.values().map(|d| d.external_id).collect::<Vec<_>>())
        .bind(rows.values().map(|d| ms(d.deleted_at)).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(())
}

/// Memberships of a tombstoned user: those of users deleted in this batch, and those written in
/// this batch whose user was deleted before. The earliest deletion wins, as for the rows themselves.
const CASCADE_FROM_USERS: &str = "UPDATE clerk.organization_memberships AS m SET
         deleted_at = LEAST(COALESCE(m.deleted_at, p.deleted_at), p.deleted_at),
         public_metadata = NULL, private_metadata = NULL, raw = NULL, synced_at = now()
     FROM clerk.users AS p
     WHERE m.id IN (SELECT id FROM clerk.organization_memberships WHERE user_id = ANY($1)
                    UNION SELECT unnest($2::text[]))
       AND p.id = m.user_id AND p.deleted_at IS NOT NULL
       AND (m.deleted_at IS NULL OR m.deleted_at > p.deleted_at OR m.raw IS NOT NULL
            OR m.public_metadata IS NOT NULL OR m.private_metadata IS NOT NULL)";

const CASCADE_FROM_ORGS: &str = "UPDATE clerk.organization_memberships AS m SET
         deleted_at = LEAST(COALESCE(m.deleted_at, p.deleted_at), p.deleted_at),
         public_metadata = NULL, private_metadata = NULL, raw = NULL, synced_at = now()
     FROM clerk.organizations AS p
     WHERE m.id IN (SELECT id FROM clerk.organization_memberships WHERE organization_id = ANY($1)
                    UNION SELECT unnest($2::text[]))
       AND p.id = m.organization_id AND p.deleted_at IS NOT NULL
       AND (m.deleted_at IS NULL OR m.deleted_at > p.deleted_at OR m.raw IS NOT NULL
            OR m.public_metadata IS NOT NULL OR m.private_metadata IS NOT NULL)";

async fn cascade(
    conn: &mut PgConnection,
    sql: &'static str,
    deleted: &DeletionsById<'_>,
    touched: &[&str],
) -> Result<(), sqlx::Error> {
    if deleted.is_empty() && touched.is_empty() {
        return Ok(());
    }
    sqlx::query(sql).bind(deleted.keys().copied().collect::<Vec<_>>()).bind(touched).execute(conn).await?;
    Ok(())
}

//! Applying a batch of events in one transaction (the caller begins and commits it).
//!
//! 1. Record every svix-id in `clerk.webhook_events` (`ON CONFLICT DO NOTHING`): an id already
//!    there is a duplicate and changes nothing.
//! 2. Reduce the fresh events to a plan: the newest version of each object and the earliest
//!    deletion, as applying them one by one would end up.
//! 3. `clerk.apply_changes` (migration 3, revised in 4 and 5) writes the plan server-side, in one
//!    round trip:
//!    - upserts only a version newer than the stored one in the total order of versions
//!      (`rows::Version`: `updated_at`, own event over nested copy, envelope time, svix-id), so
//!      ties and nested copies end the same whatever the arrival order. A tombstone (a row with
//!      `deleted_at`) is never revived: a late version updates only its non-personal columns (ids,
//!      role, flags, timestamps), so the final state does not depend on the order events arrived
//!      in, and personal columns stay NULL. Versions already stored are filtered out before the
//!      insert: `ON CONFLICT DO UPDATE ... WHERE` locks the existing row even when it writes
//!      nothing, and every membership event carries its organization, so without the filter
//!      concurrent batches queue behind each other on the same few organization rows;
//!    - tombstones deletions (earliest `deleted_at` wins) and removes personal data; memberships of
//!      a deleted user or organization are tombstoned too, including ones that arrive later;
//!    - corrects the recorded outcome of the events the writes decided otherwise (step 1 records
//!      each event as stale unless it is the newest version of its object in the batch).
//!
//! Rows are written organizations, then users, then memberships, each in id order, so concurrent
//! batches lock rows in the same order.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::ms;
use super::rows::{DeletionsById, Newest, NewestById, Version, keep_earliest, keep_newest};
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

impl Plan<'_> {
    fn is_empty(&self) -> bool {
        self.orgs.is_empty()
            && self.users.is_empty()
            && self.members.is_empty()
            && self.org_deletes.is_empty()
            && self.user_deletes.is_empty()
            && self.member_deletes.is_empty()
    }

    /// The message whose version of this object the plan kept (`None` for a nested organization).
    fn owner(&self, kind: Kind, id: &str) -> Option<usize> {
        match kind {
            Kind::Organization => self.orgs.get(id).and_then(|n| n.owner),
            Kind::User => self.users.get(id).and_then(|n| n.owner),
            Kind::Membership => self.members.get(id).and_then(|n| n.owner),
        }
    }
}

/// When a deletion happened: the envelope's time, else the gateway's receipt, else now. Never
/// absent: a tombstone without a time would not be a tombstone.
fn deleted_at(inc: &Incoming<'_>) -> DateTime<Utc> {
    inc.event.occurred_at_ms.and_then(ms).or_else(|| ms(inc.received_at_ms)).unwrap_or_else(Utc::now)
}

fn plan<'a>(batch: &'a [Incoming<'a>], fresh: &[bool]) -> Plan<'a> {
    let mut p = Plan::default();
    for (i, inc) in batch.iter().enumerate().filter(|(i, _)| fresh[*i]) {
        let deleted_at = deleted_at(inc);
        let raw = inc.event.data.get();
        let at = inc.event.occurred_at_ms.filter(|t| ms(*t).is_some());
        let version = |updated_at: Option<i64>, own: bool| Version {
            updated_at: updated_at.unwrap_or(0),
            own,
            at,
            svix_id: inc.svix_id,
        };
        let membership = |p: &mut Plan<'a>, m: &'a Membership, org: &'a Option<Organization>| {
            keep_newest(
                &mut p.members,
                &m.id,
                Newest { owner: Some(i), version: version(m.updated_at, true), object: m, raw },
            );
            // A nested copy ranks below the organization's own event of the same `updated_at`.
            if let (Some(org), Some(org_raw)) = (org, &m.organization) {
                let nested =
                    Newest { owner: None, version: version(org.updated_at, false), object: org, raw: org_raw.get() };
                keep_newest(&mut p.orgs, &org.id, nested);
            }
        };
        match &inc.event.change {
            Change::UpsertUser(u) => keep_newest(
                &mut p.users,
                &u.id,
                Newest { owner: Some(i), version: version(u.updated_at, true), object: u, raw },
            ),
            Change::DeleteUser(d) => keep_earliest(&mut p.user_deletes, &d.id, deleted_at, d.external_id.as_deref()),
            Change::UpsertOrganization(o) => keep_newest(
                &mut p.orgs,
                &o.id,
                Newest { owner: Some(i), version: version(o.updated_at, true), object: o, raw },
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
///
/// Two round trips: recording the svix-ids with their likely outcomes (which decides what is fresh),
/// then the plan written by `clerk.apply_changes` (migration 3, revised in 4), which also corrects
/// the outcomes the writes decided otherwise.
pub async fn apply_batch(conn: &mut PgConnection, batch: &[Incoming<'_>]) -> Result<Vec<Outcome>, sqlx::Error> {
    // A repeat of an svix-id inside the batch is a duplicate of its first occurrence.
    let mut seen = HashSet::new();
    let first: Vec<bool> = batch.iter().map(|m| seen.insert(m.svix_id)).collect();
    // Events are recorded with the outcome they will most likely get, so that only the few the
    // writes decide otherwise (guard refusals) are rewritten afterwards.
    let likely = plan(batch, &first);
    let provisional: Vec<Outcome> =
        batch.iter().enumerate().map(|(i, inc)| likely_outcome(&likely, i, &inc.event.change)).collect();
    let fresh = record_events(conn, batch, &first, &provisional).await?;
    // Usually nothing was recorded before, and the plan of the fresh events is the likely one.
    let p = if fresh == first { likely } else { plan(batch, &fresh) };
    let alive = write_plan(conn, batch, &p).await?;

    Ok(batch
        .iter()
        .enumerate()
        .map(|(i, inc)| {
            if !fresh[i] {
                return Outcome::Duplicate;
            }
            // As likely, unless the write of an owner was refused or hit a tombstone.
            match (likely_outcome(&p, i, &inc.event.change), written_object(&inc.event.change)) {
                (Outcome::Applied, Some((kind, id))) if !alive.contains(kind, id) => Outcome::Stale,
                (outcome, _) => outcome,
            }
        })
        .collect())
}

/// The ids `clerk.apply_changes` wrote and left alive (not tombstones), by kind.
#[derive(Default)]
struct Alive {
    orgs: HashSet<String>,
    users: HashSet<String>,
    members: HashSet<String>,
}

impl Alive {
    fn contains(&self, kind: Kind, id: &str) -> bool {
        match kind {
            Kind::Organization => self.orgs.contains(id),
            Kind::User => self.users.contains(id),
            Kind::Membership => self.members.contains(id),
        }
    }
}

/// What `clerk.apply_changes` calls each table, as a Postgres `"char"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Organization,
    User,
    Membership,
}

impl Kind {
    fn code(self) -> i8 {
        (match self {
            Self::Organization => b'o',
            Self::User => b'u',
            Self::Membership => b'm',
        }) as i8
    }

    fn from_code(code: i8) -> Option<Self> {
        [Self::Organization, Self::User, Self::Membership].into_iter().find(|k| k.code() == code)
    }
}

/// Stale unless the event carries the newest version of its object in the batch (deletions and
/// other writes count as applied, types not stored as ignored).
fn likely_outcome(p: &Plan<'_>, i: usize, change: &Change) -> Outcome {
    match written_object(change) {
        Some((kind, id)) if p.owner(kind, id) != Some(i) => Outcome::Stale,
        _ if matches!(change, Change::Ignore) => Outcome::Ignored,
        _ => Outcome::Applied,
    }
}

/// The object an upsert event writes (deletions and ignored types write none that can be stale).
fn written_object(change: &Change) -> Option<(Kind, &str)> {
    match change {
        Change::UpsertUser(u) => Some((Kind::User, &u.id)),
        Change::UpsertOrganization(o) => Some((Kind::Organization, &o.id)),
        Change::UpsertMembership { membership: m, .. } => Some((Kind::Membership, &m.id)),
        _ => None,
    }
}

/// Inserts the svix-id of each first occurrence with its provisional outcome; returns, per
/// message, whether it is new (its first occurrence, and not recorded by an earlier transaction).
/// The insert comes first so that a concurrent transaction holding the same id waits here, then
/// finds it.
async fn record_events(
    conn: &mut PgConnection,
    batch: &[Incoming<'_>],
    first: &[bool],
    provisional: &[Outcome],
) -> Result<Vec<bool>, sqlx::Error> {
    let rows = || batch.iter().zip(first).zip(provisional).filter(|((_, f), _)| **f).map(|((m, _), o)| (m, o));
    let ids: Vec<&str> = rows().map(|(m, _)| m.svix_id).collect();
    let types: Vec<&str> = rows().map(|(m, _)| m.event.event_type.as_str()).collect();
    let occurred: Vec<Option<DateTime<Utc>>> = rows().map(|(m, _)| m.event.occurred_at_ms.and_then(ms)).collect();
    let received: Vec<DateTime<Utc>> = rows().map(|(m, _)| ms(m.received_at_ms).unwrap_or_else(Utc::now)).collect();
    let provisional: Vec<&str> = rows().map(|(_, o)| o.as_str()).collect();
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
    Ok(batch.iter().zip(first).map(|(m, f)| *f && inserted.contains(m.svix_id)).collect())
}

fn raw_text(v: &Option<Box<serde_json::value::RawValue>>) -> Option<&str> {
    v.as_deref().map(serde_json::value::RawValue::get)
}

/// One column of the plan's rows, as a Postgres array parameter.
fn col<'a, T: 'a, U>(rows: &NewestById<'a, T>, f: impl Fn(&Newest<'a, T>) -> U) -> Vec<U> {
    rows.values().map(f).collect()
}

/// Sends the plan to `clerk.apply_changes`; returns the (kind, id) of rows written and alive.
async fn write_plan(conn: &mut PgConnection, batch: &[Incoming<'_>], p: &Plan<'_>) -> Result<Alive, sqlx::Error> {
    if p.is_empty() {
        return Ok(Alive::default());
    }
    let (o, u, m) = (&p.orgs, &p.users, &p.members);
    fn keys<'a>(d: &DeletionsById<'a>) -> Vec<&'a str> {
        d.keys().copied().collect()
    }
    let at = |d: &DeletionsById<'_>| d.values().map(|d| d.deleted_at).collect::<Vec<_>>();
    let version_at = |v: &Version<'_>| v.at.and_then(ms);
    // Only the owners (the plan holds fresh events only): every other fresh upsert was recorded as
    // stale, which it is (an event newest among the fresh ones is newest among all first
    // occurrences too).
    let events: Vec<(usize, Kind, &str)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, inc)| written_object(&inc.event.change).map(|(k, id)| (i, k, id)))
        .filter(|(i, k, id)| p.owner(*k, id) == Some(*i))
        .collect();
    let rows: Vec<(i8, String)> = sqlx::query_as(
        "SELECT written_kind, written_id FROM clerk.apply_changes(
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
             $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, $39,
             $40, $41, $42, $43, $44, $45, $46, $47, $48, $49, $50, $51, $52, $53, $54, $55, $56)",
    )
    // Organizations, their deletions.
    .bind(col(o, |n| n.object.id.as_str()))
    .bind(col(o, |n| n.object.name.as_deref()))
    .bind(col(o, |n| n.object.slug.as_deref()))
    .bind(col(o, |n| n.object.image_url.as_deref()))
    .bind(col(o, |n| n.object.created_by.as_deref()))
    .bind(col(o, |n| n.object.members_count))
    .bind(col(o, |n| n.object.max_allowed_memberships))
    .bind(col(o, |n| raw_text(&n.object.public_metadata)))
    .bind(col(o, |n| raw_text(&n.object.private_metadata)))
    .bind(col(o, |n| n.object.created_at.and_then(ms)))
    .bind(col(o, |n| ms(n.version.updated_at)))
    .bind(col(o, |n| n.raw))
    .bind(col(o, |n| !n.version.own))
    .bind(col(o, |n| version_at(&n.version)))
    .bind(col(o, |n| n.version.svix_id))
    .bind(keys(&p.org_deletes))
    .bind(at(&p.org_deletes))
    // Users, their deletions.
    .bind(col(u, |n| n.object.id.as_str()))
    .bind(col(u, |n| n.object.external_id.as_deref()))
    .bind(col(u, |n| n.object.username.as_deref()))
    .bind(col(u, |n| n.object.first_name.as_deref()))
    .bind(col(u, |n| n.object.last_name.as_deref()))
    .bind(col(u, |n| n.object.primary_email()))
    .bind(col(u, |n| n.object.primary_phone()))
    .bind(col(u, |n| n.object.image_url.as_deref()))
    .bind(col(u, |n| raw_text(&n.object.public_metadata)))
    .bind(col(u, |n| raw_text(&n.object.private_metadata)))
    .bind(col(u, |n| raw_text(&n.object.unsafe_metadata)))
    .bind(col(u, |n| n.object.banned))
    .bind(col(u, |n| n.object.locked))
    .bind(col(u, |n| n.object.last_sign_in_at.and_then(ms)))
    .bind(col(u, |n| n.object.created_at.and_then(ms)))
    .bind(col(u, |n| ms(n.version.updated_at)))
    .bind(col(u, |n| n.raw))
    .bind(col(u, |n| version_at(&n.version)))
    .bind(col(u, |n| n.version.svix_id))
    .bind(keys(&p.user_deletes))
    .bind(p.user_deletes.values().map(|d| d.external_id).collect::<Vec<_>>())
    .bind(at(&p.user_deletes))
    // Memberships, their deletions.
    .bind(col(m, |n| n.object.id.as_str()))
    .bind(col(m, |n| nested_org_id(n.object)))
    .bind(col(m, |n| n.object.public_user_data.as_ref().and_then(|p| p.user_id.as_deref())))
    .bind(col(m, |n| n.object.role.as_deref()))
    .bind(col(m, |n| n.object.permissions.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default())))
    .bind(col(m, |n| raw_text(&n.object.public_metadata)))
    .bind(col(m, |n| raw_text(&n.object.private_metadata)))
    .bind(col(m, |n| n.object.created_at.and_then(ms)))
    .bind(col(m, |n| ms(n.version.updated_at)))
    .bind(col(m, |n| n.raw))
    .bind(col(m, |n| version_at(&n.version)))
    .bind(col(m, |n| n.version.svix_id))
    .bind(keys(&p.member_deletes))
    .bind(at(&p.member_deletes))
    // The owners, for their outcomes.
    .bind(events.iter().map(|(i, _, _)| batch[*i].svix_id).collect::<Vec<&str>>())
    .bind(events.iter().map(|(_, k, _)| k.code()).collect::<Vec<i8>>())
    .bind(events.iter().map(|(_, _, id)| *id).collect::<Vec<&str>>())
    .fetch_all(conn)
    .await?;
    let mut alive = Alive::default();
    for (code, id) in rows {
        match Kind::from_code(code) {
            Some(Kind::Organization) => alive.orgs.insert(id),
            Some(Kind::User) => alive.users.insert(id),
            Some(Kind::Membership) => alive.members.insert(id),
            None => false,
        };
    }
    Ok(alive)
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

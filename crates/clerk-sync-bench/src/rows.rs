//! Turning a batch of parsed events into the column vectors of batched `UNNEST` upserts: one row
//! per object (the last event in the batch wins, since one `INSERT ... ON CONFLICT` cannot touch a
//! row twice), sorted by id so concurrent transactions lock rows in the same order.
//!
//! This is the database ceiling's "plain" batch (no dedup table, no ordering guard) and what the
//! Criterion bench times as "building a batch", next to `clerk_sync_worker::event::parse`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clerk_sync_worker::event::{Change, Membership, Organization, ParsedEvent, User};
use serde_json::value::RawValue;

/// What one object's row is built from: its latest version in the batch, or its deletion.
enum Version<'a, T> {
    Upsert { object: &'a T, raw: &'a str },
    Delete { deleted_at: i64, external_id: Option<&'a str> },
}

fn ts(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

fn raw(v: &Option<Box<RawValue>>) -> Option<&str> {
    v.as_deref().map(RawValue::get)
}

#[derive(Debug, Default)]
pub struct UserColumns<'a> {
    pub id: Vec<&'a str>,
    pub external_id: Vec<Option<&'a str>>,
    pub username: Vec<Option<&'a str>>,
    pub first_name: Vec<Option<&'a str>>,
    pub last_name: Vec<Option<&'a str>>,
    pub email: Vec<Option<&'a str>>,
    pub phone: Vec<Option<&'a str>>,
    pub image_url: Vec<Option<&'a str>>,
    pub public_metadata: Vec<Option<&'a str>>,
    pub private_metadata: Vec<Option<&'a str>>,
    pub unsafe_metadata: Vec<Option<&'a str>>,
    pub banned: Vec<Option<bool>>,
    pub locked: Vec<Option<bool>>,
    pub last_sign_in_at: Vec<Option<DateTime<Utc>>>,
    pub created_at: Vec<Option<DateTime<Utc>>>,
    pub updated_at: Vec<Option<DateTime<Utc>>>,
    pub deleted_at: Vec<Option<DateTime<Utc>>>,
    pub raw: Vec<Option<&'a str>>,
}

#[derive(Debug, Default)]
pub struct OrgColumns<'a> {
    pub id: Vec<&'a str>,
    pub name: Vec<Option<&'a str>>,
    pub slug: Vec<Option<&'a str>>,
    pub image_url: Vec<Option<&'a str>>,
    pub created_by: Vec<Option<&'a str>>,
    pub members_count: Vec<Option<i32>>,
    pub max_allowed: Vec<Option<i32>>,
    pub public_metadata: Vec<Option<&'a str>>,
    pub private_metadata: Vec<Option<&'a str>>,
    pub created_at: Vec<Option<DateTime<Utc>>>,
    pub updated_at: Vec<Option<DateTime<Utc>>>,
    pub deleted_at: Vec<Option<DateTime<Utc>>>,
    pub raw: Vec<Option<&'a str>>,
}

#[derive(Debug, Default)]
pub struct MembershipColumns<'a> {
    pub id: Vec<&'a str>,
    pub organization_id: Vec<Option<&'a str>>,
    pub user_id: Vec<Option<&'a str>>,
    pub role: Vec<Option<&'a str>>,
    /// JSON array text; the SQL expands it into `text[]` (sqlx binds no nested arrays).
    pub permissions: Vec<Option<String>>,
    pub public_metadata: Vec<Option<&'a str>>,
    pub private_metadata: Vec<Option<&'a str>>,
    pub created_at: Vec<Option<DateTime<Utc>>>,
    pub updated_at: Vec<Option<DateTime<Utc>>>,
    pub deleted_at: Vec<Option<DateTime<Utc>>>,
    pub raw: Vec<Option<&'a str>>,
}

#[derive(Debug, Default)]
pub struct BatchColumns<'a> {
    pub users: UserColumns<'a>,
    pub orgs: OrgColumns<'a>,
    pub members: MembershipColumns<'a>,
}

impl BatchColumns<'_> {
    pub fn rows(&self) -> usize {
        self.users.id.len() + self.orgs.id.len() + self.members.id.len()
    }
}

/// The membership's organization id, from its nested organization.
fn org_id_of<'a>(m: &'a Membership, nested: &'a Option<Organization>) -> Option<&'a str> {
    nested.as_ref().map(|o| o.id.as_str()).or_else(|| {
        let raw = m.organization.as_deref()?.get();
        let start = raw.find("\"id\":\"")? + 6;
        raw[start..].find('"').map(|end| &raw[start..start + end])
    })
}

type Latest<'a, T> = BTreeMap<&'a str, Version<'a, T>>;

/// Builds the columns of one batch; `received_at_ms[i]` dates event `i`'s deletion when its
/// envelope has no timestamp.
pub fn build<'a>(events: &'a [ParsedEvent], received_at_ms: &[i64]) -> BatchColumns<'a> {
    let mut users: Latest<'a, User> = BTreeMap::new();
    let mut orgs: Latest<'a, Organization> = BTreeMap::new();
    let mut members: BTreeMap<&'a str, (Version<'a, Membership>, Option<&'a str>)> = BTreeMap::new();
    for (e, received) in events.iter().zip(received_at_ms) {
        let deleted_at = e.occurred_at_ms.unwrap_or(*received);
        let raw_data = e.data.get();
        match &e.change {
            Change::UpsertUser(u) => {
                users.insert(&u.id, Version::Upsert { object: u, raw: raw_data });
            }
            Change::DeleteUser(d) => {
                users.insert(&d.id, Version::Delete { deleted_at, external_id: d.external_id.as_deref() });
            }
            Change::UpsertOrganization(o) => {
                orgs.insert(&o.id, Version::Upsert { object: o, raw: raw_data });
            }
            Change::DeleteOrganization(d) => {
                orgs.insert(&d.id, Version::Delete { deleted_at, external_id: None });
            }
            Change::UpsertMembership { membership: m, organization }
            | Change::DeleteMembership { membership: m, organization } => {
                if let (Some(o), Some(o_raw)) = (organization, &m.organization) {
                    orgs.insert(&o.id, Version::Upsert { object: o, raw: o_raw.get() });
                }
                let org_id = org_id_of(m, organization);
                let version = if matches!(e.change, Change::DeleteMembership { .. }) {
                    Version::Delete { deleted_at, external_id: None }
                } else {
                    Version::Upsert { object: m, raw: raw_data }
                };
                members.insert(&m.id, (version, org_id));
            }
            Change::Ignore => {}
        }
    }
    let mut out = BatchColumns::default();
    for (id, v) in users {
        let c = &mut out.users;
        c.id.push(id);
        match v {
            Version::Upsert { object: u, raw: r } => {
                c.external_id.push(u.external_id.as_deref());
                c.username.push(u.username.as_deref());
                c.first_name.push(u.first_name.as_deref());
                c.last_name.push(u.last_name.as_deref());
                c.email.push(u.primary_email());
                c.phone.push(u.primary_phone());
                c.image_url.push(u.image_url.as_deref());
                c.public_metadata.push(raw(&u.public_metadata));
                c.private_metadata.push(raw(&u.private_metadata));
                c.unsafe_metadata.push(raw(&u.unsafe_metadata));
                c.banned.push(u.banned);
                c.locked.push(u.locked);
                c.last_sign_in_at.push(ts(u.last_sign_in_at));
                c.created_at.push(ts(u.created_at));
                c.updated_at.push(ts(u.updated_at));
                c.deleted_at.push(None);
                c.raw.push(Some(r));
            }
            Version::Delete { deleted_at, external_id } => {
                c.external_id.push(external_id);
                for col in [
                    &mut c.username,
                    &mut c.first_name,
                    &mut c.last_name,
                    &mut c.email,
                    &mut c.phone,
                    &mut c.image_url,
                    &mut c.public_metadata,
                    &mut c.private_metadata,
                    &mut c.unsafe_metadata,
                    &mut c.raw,
                ] {
                    col.push(None);
                }
                c.banned.push(None);
                c.locked.push(None);
                c.last_sign_in_at.push(None);
                c.created_at.push(None);
                c.updated_at.push(None);
                c.deleted_at.push(ts(Some(deleted_at)));
            }
        }
    }
    for (id, v) in orgs {
        let c = &mut out.orgs;
        c.id.push(id);
        let (o, r, deleted_at) = match v {
            Version::Upsert { object, raw } => (Some(object), Some(raw), None),
            Version::Delete { deleted_at, .. } => (None, None, ts(Some(deleted_at))),
        };
        c.name.push(o.and_then(|o| o.name.as_deref()));
        c.slug.push(o.and_then(|o| o.slug.as_deref()));
        c.image_url.push(o.and_then(|o| o.image_url.as_deref()));
        c.created_by.push(o.and_then(|o| o.created_by.as_deref()));
        c.members_count.push(o.and_then(|o| o.members_count));
        c.max_allowed.push(o.and_then(|o| o.max_allowed_memberships));
        c.public_metadata.push(o.and_then(|o| raw(&o.public_metadata)));
        c.private_metadata.push(o.and_then(|o| raw(&o.private_metadata)));
        c.created_at.push(o.and_then(|o| ts(o.created_at)));
        c.updated_at.push(o.and_then(|o| ts(o.updated_at)));
        c.deleted_at.push(deleted_at);
        c.raw.push(r);
    }
    for (id, (v, org_id)) in members {
        let c = &mut out.members;
        c.id.push(id);
        c.organization_id.push(org_id);
        let (m, r, deleted_at) = match v {
            Version::Upsert { object, raw } => (Some(object), Some(raw), None),
            Version::Delete { deleted_at, .. } => (None, None, ts(Some(deleted_at))),
        };
        c.user_id.push(m.and_then(|m| m.public_user_data.as_ref()?.user_id.as_deref()));
        c.role.push(m.and_then(|m| m.role.as_deref()));
        c.permissions.push(m.and_then(|m| m.permissions.as_ref()).and_then(|p| serde_json::to_string(p).ok()));
        c.public_metadata.push(m.and_then(|m| raw(&m.public_metadata)));
        c.private_metadata.push(m.and_then(|m| raw(&m.private_metadata)));
        c.created_at.push(m.and_then(|m| ts(m.created_at)));
        c.updated_at.push(m.and_then(|m| ts(m.updated_at)));
        c.deleted_at.push(deleted_at);
        c.raw.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{Template, event};

    #[test]
    fn the_last_version_of_each_object_wins_and_rows_are_sorted_by_id() {
        let bodies: Vec<Vec<u8>> = [("user.updated", 2, 0), ("user.updated", 1, 0), ("user.deleted", 2, 0)]
            .iter()
            .chain(&[("organizationMembership.created", 1, 3)])
            .map(|(t, u, o)| Template::new(t, &event(t, *u, *o), 1_716_883_200_000).render(1_716_883_200_000))
            .collect();
        let events: Vec<ParsedEvent> = bodies.iter().map(|b| clerk_sync_worker::event::parse(b).unwrap()).collect();
        let cols = build(&events, &[0; 4]);
        assert_eq!(cols.users.id, vec![crate::corpus::user_id(1), crate::corpus::user_id(2)]);
        assert!(cols.users.deleted_at[1].is_some() && cols.users.first_name[1].is_none());
        assert_eq!(cols.users.email[0], Some("grace.1@example.com"));
        assert_eq!(cols.orgs.id, vec![crate::corpus::org_id(3)], "the nested organization is upserted");
        assert_eq!(cols.members.organization_id[0], Some(crate::corpus::org_id(3).as_str()));
        assert_eq!(cols.rows(), 4);
    }
}

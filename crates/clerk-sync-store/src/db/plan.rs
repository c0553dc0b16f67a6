//! Reducing a batch to one row per entity, the way applying its events one by one would end up:
//! the newest version of each object (in the total order of [`Version`], the one the SQL apply
//! functions compare too), and the earliest deletion. Entities are kept sorted by id, so every
//! transaction locks rows in the same order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::ms;
use crate::catalogue::Resource;
use crate::event::billing;
use crate::event::{
    Change, Domain, Event, Invitation, Membership, Organization, Permission, Role, Session, User, WaitlistEntry,
};

/// Where a version stands in the one total order of versions of an object: Clerk's `updated_at`,
/// then the object's own event above a copy nested in another event's payload, then the
/// envelope timestamp (absent lowest), then the svix-id (bytewise). Fields compare in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version<'a> {
    pub updated_at: i64,
    pub own: bool,
    /// The envelope timestamp, if it can be stored (see `super::ms`).
    pub at: Option<i64>,
    pub svix_id: &'a str,
}

/// The newest version of one object seen in the batch.
pub struct Newest<'a, T> {
    /// The message that carried it; `None` for an organization nested in a membership.
    pub owner: Option<usize>,
    pub version: Version<'a>,
    pub object: &'a T,
    /// The object's JSON exactly as sent, stored as `raw`.
    pub raw: &'a RawValue,
}

pub type NewestById<'a, T> = BTreeMap<&'a str, Newest<'a, T>>;

/// Keeps `candidate` if it is newer than what the batch already has for `id`.
pub fn keep_newest<'a, T>(map: &mut NewestById<'a, T>, id: &'a str, candidate: Newest<'a, T>) {
    if map.get(id).is_none_or(|current| current.version < candidate.version) {
        map.insert(id, candidate);
    }
}

/// A deletion: the earliest time it was deleted, and the external id if the event named one.
pub struct Deletion<'a> {
    pub deleted_at: DateTime<Utc>,
    pub external_id: Option<&'a str>,
}

pub type DeletionsById<'a> = BTreeMap<&'a str, Deletion<'a>>;

pub fn keep_earliest<'a>(
    map: &mut DeletionsById<'a>,
    id: &'a str,
    deleted_at: DateTime<Utc>,
    external_id: Option<&'a str>,
) {
    let entry = map.entry(id).or_insert(Deletion { deleted_at, external_id });
    entry.deleted_at = entry.deleted_at.min(deleted_at);
    entry.external_id = entry.external_id.or(external_id);
}

/// The rank of a session's status in the merge of final statuses (migration 11): 0 for a status
/// that is not final, else `ended` < `removed` < `revoked`. Must match `clerk.session_final_rank`.
pub fn session_final_rank(status: Option<&str>) -> u8 {
    match status {
        Some("ended") => 1,
        Some("removed") => 2,
        Some("revoked") => 3,
        _ => 0,
    }
}

/// The rank of an invitation's status (migration 12): `revoked` < `accepted`, 0 if not final.
/// Must match `clerk.invitation_final_rank`.
pub fn invitation_final_rank(status: Option<&str>) -> u8 {
    match status {
        Some("revoked") => 1,
        Some("accepted") => 2,
        _ => 0,
    }
}

/// The highest-ranked final status seen per object in a batch (ranked by `rank`).
pub type FinalById<'a> = BTreeMap<&'a str, &'a str>;

fn keep_final<'a>(map: &mut FinalById<'a>, id: &'a str, status: Option<&'a str>, rank: fn(Option<&str>) -> u8) {
    if let Some(status) = status.filter(|s| rank(Some(s)) > 0) {
        let current = map.get(id).copied();
        if rank(Some(status)) > rank(current) {
            map.insert(id, status);
        }
    }
}

/// The status a row is written with: the highest-ranked final status seen for it in the batch,
/// if that outranks the newest version's own status; else the newest version's.
pub fn merged_status<'a>(
    newest: Option<&'a str>,
    finals: &FinalById<'a>,
    id: &str,
    rank: fn(Option<&str>) -> u8,
) -> Option<&'a str> {
    match finals.get(id).copied() {
        Some(f) if rank(Some(f)) > rank(newest) => Some(f),
        _ => newest,
    }
}

/// A batch reduced to what must be written: per resource, the newest version of each object and
/// the earliest deletion, each sorted by id.
#[derive(Default)]
pub struct Plan<'a> {
    pub users: NewestById<'a, User>,
    pub user_deletes: DeletionsById<'a>,
    pub orgs: NewestById<'a, Organization>,
    pub org_deletes: DeletionsById<'a>,
    pub members: NewestById<'a, Membership>,
    pub member_deletes: DeletionsById<'a>,
    pub sessions: NewestById<'a, Session>,
    /// Final statuses seen per session, merged into the row whatever their version.
    pub session_finals: FinalById<'a>,
    pub invitations: NewestById<'a, Invitation>,
    pub invitation_finals: FinalById<'a>,
    /// The accepting user of an `accepted` seen in the batch, kept with the merged status.
    pub invitation_users: BTreeMap<&'a str, &'a str>,
    pub roles: NewestById<'a, Role>,
    pub role_deletes: DeletionsById<'a>,
    pub permissions: NewestById<'a, Permission>,
    pub permission_deletes: DeletionsById<'a>,
    pub domains: NewestById<'a, Domain>,
    pub domain_deletes: DeletionsById<'a>,
    pub waitlist: NewestById<'a, WaitlistEntry>,
    pub subscriptions: NewestById<'a, billing::Subscription>,
    pub subscription_items: NewestById<'a, billing::SubscriptionItem>,
    pub payment_attempts: NewestById<'a, billing::PaymentAttempt>,
}

impl<'a> Plan<'a> {
    /// The plan of the events of `batch` marked `fresh` (first occurrences not recorded before).
    pub fn build(batch: &[&'a Event], fresh: &[bool]) -> Self {
        let mut p = Plan::default();
        for (i, event) in batch.iter().copied().enumerate().filter(|(i, _)| fresh[*i]) {
            p.add(i, event);
        }
        p
    }

    fn add(&mut self, i: usize, event: &'a Event) {
        let raw = &*event.data;
        let at = event.occurred_at_ms.filter(|t| ms(*t).is_some());
        let version = |updated_at: Option<i64>, own: bool| Version {
            updated_at: updated_at.unwrap_or(0),
            own,
            at,
            svix_id: event.version_id(),
        };
        fn newest<'a, T>(i: usize, version: Version<'a>, object: &'a T, raw: &'a RawValue) -> Newest<'a, T> {
            Newest { owner: Some(i), version, object, raw }
        }
        match &event.change {
            Change::UpsertUser(u) => {
                keep_newest(&mut self.users, &u.id, newest(i, version(u.updated_at, true), u, raw))
            }
            Change::DeleteUser(d) => {
                keep_earliest(&mut self.user_deletes, &d.id, deleted_at(event), d.external_id.as_deref())
            }
            Change::UpsertOrganization(o) => {
                keep_newest(&mut self.orgs, &o.id, newest(i, version(o.updated_at, true), o, raw))
            }
            Change::DeleteOrganization(d) => keep_earliest(&mut self.org_deletes, &d.id, deleted_at(event), None),
            Change::UpsertMembership { membership: m, organization } => {
                keep_newest(&mut self.members, &m.id, newest(i, version(m.updated_at, true), m, raw));
                self.nested_organization(m, organization.as_ref(), version);
            }
            Change::DeleteMembership { membership: m, organization } => {
                keep_newest(&mut self.members, &m.id, newest(i, version(m.updated_at, true), m, raw));
                self.nested_organization(m, organization.as_ref(), version);
                keep_earliest(&mut self.member_deletes, &m.id, deleted_at(event), None);
            }
            Change::UpsertSession(s) => {
                keep_newest(&mut self.sessions, &s.id, newest(i, version(s.updated_at, true), s, raw));
                keep_final(&mut self.session_finals, &s.id, s.status.as_deref(), session_final_rank);
            }
            Change::UpsertInvitation(v) => {
                keep_newest(&mut self.invitations, &v.id, newest(i, version(v.updated_at, true), v, raw));
                keep_final(&mut self.invitation_finals, &v.id, v.status.as_deref(), invitation_final_rank);
                if let Some(user) = v.user_id.as_deref() {
                    self.invitation_users.entry(&v.id).or_insert(user);
                }
            }
            Change::UpsertRole(r) => {
                keep_newest(&mut self.roles, &r.id, newest(i, version(r.updated_at, true), r, raw))
            }
            Change::DeleteRole(d) => keep_earliest(&mut self.role_deletes, &d.id, deleted_at(event), None),
            Change::UpsertPermission(p) => {
                keep_newest(&mut self.permissions, &p.id, newest(i, version(p.updated_at, true), p, raw))
            }
            Change::DeletePermission(d) => keep_earliest(&mut self.permission_deletes, &d.id, deleted_at(event), None),
            Change::UpsertDomain(d) => {
                keep_newest(&mut self.domains, &d.id, newest(i, version(d.updated_at, true), d, raw))
            }
            Change::DeleteDomain(d) => keep_earliest(&mut self.domain_deletes, &d.id, deleted_at(event), None),
            Change::UpsertWaitlistEntry(w) => {
                keep_newest(&mut self.waitlist, &w.id, newest(i, version(w.updated_at, true), w, raw))
            }
            Change::UpsertSubscription(s) => {
                keep_newest(&mut self.subscriptions, &s.id, newest(i, version(s.updated_at, true), s, raw))
            }
            Change::UpsertSubscriptionItem(s) => {
                keep_newest(&mut self.subscription_items, &s.id, newest(i, version(s.updated_at, true), s, raw))
            }
            Change::UpsertPaymentAttempt(p) => {
                keep_newest(&mut self.payment_attempts, &p.id, newest(i, version(p.updated_at, true), p, raw))
            }
            Change::Ignore => {}
        }
    }

    /// A copy of an organization nested in a membership event: it ranks below the organization's
    /// own event of the same `updated_at`, and no message owns it.
    fn nested_organization(
        &mut self,
        m: &'a Membership,
        org: Option<&'a Organization>,
        version: impl Fn(Option<i64>, bool) -> Version<'a>,
    ) {
        if let (Some(org), Some(raw)) = (org, &m.organization) {
            let nested = Newest { owner: None, version: version(org.updated_at, false), object: org, raw };
            keep_newest(&mut self.orgs, &org.id, nested);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.orgs.is_empty()
            && self.users.is_empty()
            && self.members.is_empty()
            && self.org_deletes.is_empty()
            && self.user_deletes.is_empty()
            && self.member_deletes.is_empty()
            && self.sessions.is_empty()
            && self.invitations.is_empty()
            && self.roles.is_empty()
            && self.role_deletes.is_empty()
            && self.permissions.is_empty()
            && self.permission_deletes.is_empty()
            && self.domains.is_empty()
            && self.domain_deletes.is_empty()
            && self.waitlist.is_empty()
            && self.subscriptions.is_empty()
            && self.subscription_items.is_empty()
            && self.payment_attempts.is_empty()
    }

    /// The message whose version of this object the plan kept (`None` for a nested organization
    /// or an object the batch does not write).
    pub fn owner(&self, resource: Resource, id: &str) -> Option<usize> {
        match resource {
            Resource::Organization => self.orgs.get(id).and_then(|n| n.owner),
            Resource::User => self.users.get(id).and_then(|n| n.owner),
            Resource::Membership => self.members.get(id).and_then(|n| n.owner),
            Resource::Session => self.sessions.get(id).and_then(|n| n.owner),
            Resource::Invitation => self.invitations.get(id).and_then(|n| n.owner),
            Resource::Role => self.roles.get(id).and_then(|n| n.owner),
            Resource::Permission => self.permissions.get(id).and_then(|n| n.owner),
            Resource::Domain => self.domains.get(id).and_then(|n| n.owner),
            Resource::WaitlistEntry => self.waitlist.get(id).and_then(|n| n.owner),
            Resource::Subscription => self.subscriptions.get(id).and_then(|n| n.owner),
            Resource::SubscriptionItem => self.subscription_items.get(id).and_then(|n| n.owner),
            Resource::PaymentAttempt => self.payment_attempts.get(id).and_then(|n| n.owner),
        }
    }
}

/// When a deletion happened: the envelope's time, else the gateway's receipt, else now. Never
/// absent: a tombstone without a time would not be a tombstone.
fn deleted_at(event: &Event) -> DateTime<Utc> {
    event.occurred_at_ms.and_then(ms).or_else(|| ms(event.received_at_ms)).unwrap_or_else(Utc::now)
}

/// The object an upsert event writes (deletions and ignored types write none that can be stale).
pub fn written_object(change: &Change) -> Option<(Resource, &str)> {
    match change {
        Change::UpsertUser(u) => Some((Resource::User, &u.id)),
        Change::UpsertOrganization(o) => Some((Resource::Organization, &o.id)),
        Change::UpsertMembership { membership: m, .. } => Some((Resource::Membership, &m.id)),
        Change::UpsertSession(s) => Some((Resource::Session, &s.id)),
        Change::UpsertInvitation(v) => Some((Resource::Invitation, &v.id)),
        Change::UpsertRole(r) => Some((Resource::Role, &r.id)),
        Change::UpsertPermission(p) => Some((Resource::Permission, &p.id)),
        Change::UpsertDomain(d) => Some((Resource::Domain, &d.id)),
        Change::UpsertWaitlistEntry(w) => Some((Resource::WaitlistEntry, &w.id)),
        Change::UpsertSubscription(s) => Some((Resource::Subscription, &s.id)),
        Change::UpsertSubscriptionItem(s) => Some((Resource::SubscriptionItem, &s.id)),
        Change::UpsertPaymentAttempt(p) => Some((Resource::PaymentAttempt, &p.id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest(owner: usize, updated_at: i64, own: bool, at: Option<i64>, svix_id: &'static str) -> Newest<'static, ()> {
        let raw: &'static RawValue = serde_json::from_str("{}").unwrap();
        Newest { owner: Some(owner), version: Version { updated_at, own, at, svix_id }, object: &(), raw }
    }

    /// Every order of `candidates` keeps the same one: the greatest.
    fn kept(candidates: &[Newest<'static, ()>]) -> Option<usize> {
        let mut map = NewestById::new();
        for c in candidates {
            keep_newest(&mut map, "o1", Newest { ..*c });
        }
        map["o1"].owner
    }

    #[test]
    fn the_newest_version_wins_whatever_the_order_and_ties_break_the_same_way_every_time() {
        let versions = [
            newest(0, 20, true, Some(5), "msg_b"),
            newest(1, 10, true, Some(9), "msg_z"),
            newest(2, 20, false, Some(9), "msg_z"),
            newest(3, 20, true, Some(5), "msg_a"),
            newest(4, 20, true, None, "msg_c"),
        ];
        // updated_at first; then own event over a nested copy; then envelope time; then svix-id.
        let mut order: Vec<usize> = (0..versions.len()).collect();
        for _ in 0..versions.len() {
            order.rotate_left(1);
            let shuffled: Vec<_> = order.iter().map(|&i| Newest { ..versions[i] }).collect();
            assert_eq!(kept(&shuffled), Some(0));
            let mut reversed = shuffled;
            reversed.reverse();
            assert_eq!(kept(&reversed), Some(0));
        }
        let mut map = NewestById::new();
        keep_newest(&mut map, "u1", newest(0, 1, true, None, "m"));
        keep_newest(&mut map, "u0", newest(1, 1, true, None, "m"));
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), vec!["u0", "u1"], "sorted by id");
    }

    #[test]
    fn a_final_status_outranks_any_other_whatever_the_order_and_the_highest_final_wins() {
        let statuses = [Some("active"), Some("ended"), Some("pending"), Some("revoked"), Some("removed")];
        for rotation in 0..statuses.len() {
            let mut order = statuses;
            order.rotate_left(rotation);
            let mut finals = FinalById::new();
            for s in order {
                keep_final(&mut finals, "sess_1", s, session_final_rank);
            }
            assert_eq!(merged_status(Some("active"), &finals, "sess_1", session_final_rank), Some("revoked"));
        }
        let mut finals = FinalById::new();
        keep_final(&mut finals, "sess_1", Some("active"), session_final_rank);
        assert!(finals.is_empty(), "a status that is not final is not kept");
        assert_eq!(merged_status(Some("pending"), &finals, "sess_1", session_final_rank), Some("pending"));
        keep_final(&mut finals, "sess_1", Some("ended"), session_final_rank);
        assert_eq!(merged_status(Some("revoked"), &finals, "sess_1", session_final_rank), Some("revoked"));
    }

    #[test]
    fn the_earliest_deletion_wins_and_keeps_any_external_id() {
        let at = |ms| DateTime::from_timestamp_millis(ms).unwrap();
        let mut map = DeletionsById::new();
        keep_earliest(&mut map, "u1", at(30), None);
        keep_earliest(&mut map, "u1", at(10), Some("ext"));
        keep_earliest(&mut map, "u1", at(20), None);
        assert_eq!(map["u1"].deleted_at, at(10));
        assert_eq!(map["u1"].external_id, Some("ext"));
    }
}

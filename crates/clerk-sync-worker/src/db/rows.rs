//! Reducing a batch to one row per entity, the way applying its events one by one would end up:
//! the newest version of each object (in the total order of [`Version`], the one
//! `clerk.apply_changes` compares too), and the earliest deletion. Entities are kept sorted by id,
//! so every transaction locks rows in the same order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// Where a version stands in the one total order of versions of an object: Clerk's `updated_at`,
/// then the object's own event above a copy nested in another event's payload, then the
/// envelope timestamp (absent lowest), then the svix-id (bytewise). Fields compare in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Version<'a> {
    pub updated_at: i64,
    pub own: bool,
    /// The envelope timestamp, if it can be stored (see `super::ms`).
    pub at: Option<i64>,
    pub svix_id: &'a str,
}

/// The newest version of one object seen in the batch.
pub(super) struct Newest<'a, T> {
    /// The message that carried it; `None` for an organization nested in a membership.
    pub owner: Option<usize>,
    pub version: Version<'a>,
    pub object: &'a T,
    /// The object's JSON exactly as sent, stored as `raw`.
    pub raw: &'a str,
}

pub(super) type NewestById<'a, T> = BTreeMap<&'a str, Newest<'a, T>>;

/// Keeps `candidate` if it is newer than what the batch already has for `id`.
pub(super) fn keep_newest<'a, T>(map: &mut NewestById<'a, T>, id: &'a str, candidate: Newest<'a, T>) {
    if map.get(id).is_none_or(|current| current.version < candidate.version) {
        map.insert(id, candidate);
    }
}

/// A deletion: the earliest time it was deleted, and the external id if the event named one.
pub(super) struct Deletion<'a> {
    pub deleted_at: DateTime<Utc>,
    pub external_id: Option<&'a str>,
}

pub(super) type DeletionsById<'a> = BTreeMap<&'a str, Deletion<'a>>;

pub(super) fn keep_earliest<'a>(
    map: &mut DeletionsById<'a>,
    id: &'a str,
    deleted_at: DateTime<Utc>,
    external_id: Option<&'a str>,
) {
    let entry = map.entry(id).or_insert(Deletion { deleted_at, external_id });
    entry.deleted_at = entry.deleted_at.min(deleted_at);
    entry.external_id = entry.external_id.or(external_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest(owner: usize, updated_at: i64, own: bool, at: Option<i64>, svix_id: &'static str) -> Newest<'static, ()> {
        Newest { owner: Some(owner), version: Version { updated_at, own, at, svix_id }, object: &(), raw: "{}" }
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

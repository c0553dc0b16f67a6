//! Reducing a batch to one row per entity, the way applying its events one by one would end up:
//! the newest version (by Clerk's `updated_at`) of each object, and the earliest deletion.
//! Entities are kept sorted by id, so every transaction locks rows in the same order.

use std::collections::BTreeMap;

/// The newest version of one object seen in the batch.
pub(super) struct Newest<'a, T> {
    /// The message that carried it; `None` for an organization nested in a membership.
    pub owner: Option<usize>,
    pub updated_at: i64,
    pub object: &'a T,
    /// The object's JSON exactly as sent, stored as `raw`.
    pub raw: &'a str,
}

pub(super) type NewestById<'a, T> = BTreeMap<&'a str, Newest<'a, T>>;

/// Keeps `candidate` if it is at least as new as what the batch already has for `id`.
pub(super) fn keep_newest<'a, T>(map: &mut NewestById<'a, T>, id: &'a str, candidate: Newest<'a, T>) {
    match map.get(id) {
        Some(current) if current.updated_at > candidate.updated_at => {}
        _ => {
            map.insert(id, candidate);
        }
    }
}

/// A deletion: the earliest time it was deleted, and the external id if the event named one.
pub(super) struct Deletion<'a> {
    pub deleted_at: i64,
    pub external_id: Option<&'a str>,
}

pub(super) type DeletionsById<'a> = BTreeMap<&'a str, Deletion<'a>>;

pub(super) fn keep_earliest<'a>(
    map: &mut DeletionsById<'a>,
    id: &'a str,
    deleted_at: i64,
    external_id: Option<&'a str>,
) {
    let entry = map.entry(id).or_insert(Deletion { deleted_at, external_id });
    entry.deleted_at = entry.deleted_at.min(deleted_at);
    entry.external_id = entry.external_id.or(external_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest(owner: usize, updated_at: i64) -> Newest<'static, ()> {
        Newest { owner: Some(owner), updated_at, object: &(), raw: "{}" }
    }

    #[test]
    fn the_newest_version_wins_whatever_the_order_and_ties_go_to_the_later_message() {
        let mut map = NewestById::new();
        keep_newest(&mut map, "u1", newest(0, 20));
        keep_newest(&mut map, "u1", newest(1, 10));
        assert_eq!(map["u1"].owner, Some(0));
        keep_newest(&mut map, "u1", newest(2, 20));
        assert_eq!(map["u1"].owner, Some(2));
        keep_newest(&mut map, "u0", newest(3, 1));
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), vec!["u0", "u1"], "sorted by id");
    }

    #[test]
    fn the_earliest_deletion_wins_and_keeps_any_external_id() {
        let mut map = DeletionsById::new();
        keep_earliest(&mut map, "u1", 30, None);
        keep_earliest(&mut map, "u1", 10, Some("ext"));
        keep_earliest(&mut map, "u1", 20, None);
        assert_eq!(map["u1"].deleted_at, 10);
        assert_eq!(map["u1"].external_id, Some("ext"));
    }
}

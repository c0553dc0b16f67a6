//! What became of each message: decided here, once, by [`decide`], from what deduplication and the
//! write reported. The SQL functions only write rows and say which rows they wrote alive.

use std::collections::{HashMap, HashSet};

use super::plan::{Plan, written_object};
use crate::catalogue::Resource;
use crate::event::{Change, Event};

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

/// The rows the apply functions wrote and left alive (not tombstones).
#[derive(Debug, Default)]
pub struct Alive(HashMap<Resource, HashSet<String>>);

impl Alive {
    pub fn insert(&mut self, resource: Resource, id: String) {
        self.0.entry(resource).or_default().insert(id);
    }

    pub fn len(&self) -> usize {
        self.0.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, resource: Resource, id: &str) -> bool {
        self.0.get(&resource).is_some_and(|ids| ids.contains(id))
    }
}

/// The outcome of message `i` of a batch:
/// - a message already processed (by an earlier transaction, or earlier in this batch) is a
///   duplicate;
/// - a type this service does not store is ignored;
/// - an upsert is stale unless its version is the one the plan kept for its object and the write
///   left that row alive (`written` is `None` before the write: the outcome it will most likely
///   get, recorded with the dedup row so that usually nothing is rewritten);
/// - a deletion is applied: the earliest deletion wins, and a repeat changes nothing.
pub fn decide(i: usize, event: &Event, fresh: bool, plan: &Plan<'_>, written: Option<&Alive>) -> Outcome {
    if !fresh {
        return Outcome::Duplicate;
    }
    match written_object(&event.change) {
        Some((resource, id)) if plan.owner(resource, id) != Some(i) => Outcome::Stale,
        Some((resource, id)) if written.is_some_and(|alive| !alive.contains(resource, id)) => Outcome::Stale,
        _ if matches!(event.change, Change::Ignore) => Outcome::Ignored,
        _ => Outcome::Applied,
    }
}

/// [`decide`] for every message of `batch`.
pub fn decide_all(batch: &[&Event], fresh: &[bool], plan: &Plan<'_>, written: Option<&Alive>) -> Vec<Outcome> {
    batch.iter().enumerate().map(|(i, event)| decide(i, event, fresh[i], plan, written)).collect()
}

//! The dead-letter queue, read and emptied without losing anything, with bounded memory.
//!
//! RabbitMQ has no "peek": every command takes letters from the queue without acknowledging them
//! ([`cursor`]), and only what an operator asked to move or delete is acknowledged; the rest goes
//! back in its original order when the command ends. Commands take only what they need: `list`
//! stops at `--limit` matches, `show` at the id, `stats` counts with the queue's own counter and
//! breaks down the first [`inspect::STATS_SCAN`] letters; `replay` and `purge` stream through the
//! queue a prefetch at a time, publishing with a window of confirms outstanding, so their memory
//! does not grow with the queue.
//!
//! While one operator holds letters, another does not see them, so no letter is replayed or purged
//! twice by two operators at once. Interrupting (Ctrl-C, or killing the process) loses nothing: a
//! replayed letter is acknowledged only after RabbitMQ confirmed its copy, so at worst it is in
//! both queues and the worker skips the copy by its svix-id. After a Ctrl-C the held letters go
//! back in order; after a kill the broker returns them itself, in no particular order.

mod cursor;
mod inspect;
mod letter;
mod replay;

pub use inspect::{list, show, stats};
pub use replay::{purge, replay};

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use cursor::Want;
use letter::DeadLetter;

/// Which letters a command acts on, and when it has all it needs.
#[derive(Debug, Default)]
pub struct Selector {
    /// Still to find; with `by_id`, finding them all ends the command.
    ids: HashSet<String>,
    by_id: bool,
    event_type: Option<String>,
    error_kind: Option<String>,
    failed_since: Option<DateTime<Utc>>,
    failed_before: Option<DateTime<Utc>>,
    /// Only letters about this user (`dlq purge --user`, after the user was deleted).
    user_id: Option<String>,
    limit: Option<usize>,
    taken: usize,
}

fn ago(d: Duration) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Selector {
    fn ids(mut self, ids: &[String]) -> Self {
        self.by_id = !ids.is_empty();
        self.ids = ids.iter().cloned().collect();
        self
    }

    /// Every letter, in queue order: each one taken is used.
    fn is_everything(&self) -> bool {
        !self.by_id
            && self.event_type.is_none()
            && self.error_kind.is_none()
            && self.failed_since.is_none()
            && self.failed_before.is_none()
            && self.user_id.is_none()
    }

    fn matches(&self, d: &DeadLetter) -> bool {
        (!self.by_id || self.ids.contains(&d.svix_id))
            && self.event_type.as_ref().is_none_or(|t| &d.event_type == t)
            && self.error_kind.as_ref().is_none_or(|k| &d.error_kind == k)
            && self.failed_since.is_none_or(|c| d.first_failed_at.is_some_and(|t| t >= c))
            && self.failed_before.is_none_or(|c| d.first_failed_at.is_some_and(|t| t < c))
            && self.user_id.as_ref().is_none_or(|u| d.user_id.as_ref() == Some(u))
    }

    /// True if `d` is selected (and counts towards the limit); the first letter with an id ends
    /// that id's search, so a second copy of it stays.
    fn take(&mut self, d: &DeadLetter) -> bool {
        if self.done() || !self.matches(d) {
            return false;
        }
        self.taken += 1;
        if self.by_id {
            self.ids.remove(&d.svix_id);
        }
        true
    }

    /// Whether matching needs the user a body concerns ([`DeadLetter::with_user`]).
    fn by_user(&self) -> bool {
        self.user_id.is_some()
    }

    fn done(&self) -> bool {
        self.limit.is_some_and(|l| self.taken >= l) || (self.by_id && self.ids.is_empty())
    }

    /// How many more letters to take, for the cursor's prefetch.
    fn want(&self) -> Want {
        let left = self.limit.map_or(usize::MAX, |l| l.saturating_sub(self.taken));
        if self.is_everything() {
            Want::Exactly(left)
        } else if self.by_id {
            Want::AtLeast(self.ids.len().min(left))
        } else {
            Want::AtLeast(left)
        }
    }

    /// At most how many letters the command will look at, for the progress bar.
    fn expected(&self, ready: u32) -> u64 {
        let ready = u64::from(ready);
        match self.limit {
            Some(l) if self.is_everything() => ready.min(l as u64),
            _ => ready,
        }
    }
}

//! Acknowledgements for one consumer channel, sent cumulatively.
//!
//! Batches finish out of order (several are in flight), so a batch cannot ack `multiple` up to its
//! own last tag: that would ack an earlier batch's messages before they are committed. Acking one
//! by one is correct but costs a frame per message on our side and, above all, work per message in
//! the quorum queue. This window records which deliveries are settled (committed, moved to a retry
//! or dead-letter queue, or nacked) and sends one `basic.ack` with `multiple` up to the end of the
//! longest settled run from the start: exactly the messages whose effect is safe.
//!
//! Acks leave under the window's lock, so a smaller cumulative ack never follows a larger one
//! (RabbitMQ closes the channel on an unknown delivery tag).

use std::collections::BTreeMap;

use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use tokio::sync::Mutex;

#[derive(Debug, Default)]
pub struct AckWindow {
    state: Mutex<State<Acker>>,
}

/// Generic over what is kept per delivery only so the bookkeeping can be tested without a broker.
#[derive(Debug)]
struct State<A> {
    /// Every tag up to this one is acknowledged (delivery tags start at 1 on each channel).
    acked_through: u64,
    /// Settled deliveries above a gap, waiting for the earlier ones.
    settled: BTreeMap<u64, A>,
}

impl<A> Default for State<A> {
    fn default() -> Self {
        Self { acked_through: 0, settled: BTreeMap::new() }
    }
}

impl<A> State<A> {
    /// Takes the settled run that now continues from `acked_through`; returns its last acker.
    fn advance(&mut self) -> Option<A> {
        let mut last = None;
        while let Some(entry) = self.settled.first_entry() {
            if *entry.key() != self.acked_through + 1 {
                break;
            }
            self.acked_through += 1;
            last = Some(entry.remove());
        }
        last
    }
}

impl AckWindow {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `deliveries` as settled and acks everything now contiguous. A delivery that was
    /// nacked counts as settled too: it is no longer outstanding, so a cumulative ack skips it.
    pub async fn settled<'a>(&self, deliveries: impl IntoIterator<Item = &'a Delivery>) {
        let mut state = self.state.lock().await;
        for d in deliveries {
            if d.delivery_tag > state.acked_through {
                state.settled.insert(d.delivery_tag, d.acker.clone());
            }
        }
        if let Some(acker) = state.advance() {
            ack(&acker, true).await;
        }
    }

    /// At shutdown: acks, one by one, the settled deliveries still waiting behind a gap (a batch
    /// given up on while the database was down). The gap's messages return to the queue when the
    /// channel closes; these must not, since their effect is committed.
    pub async fn flush(&self) {
        let mut state = self.state.lock().await;
        for (_, acker) in std::mem::take(&mut state.settled) {
            ack(&acker, false).await;
        }
    }
}

async fn ack(acker: &Acker, multiple: bool) {
    if let Err(e) = acker.ack(BasicAckOptions { multiple }).await {
        // The effect is committed; a redelivery will be recognised as a duplicate.
        tracing::warn!(error = %e, "ack failed after commit; the redelivery will be deduplicated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(state: &mut State<()>, tags: &[u64]) -> Option<u64> {
        for &t in tags {
            if t > state.acked_through {
                state.settled.insert(t, ());
            }
        }
        state.advance().map(|_| state.acked_through)
    }

    #[test]
    fn a_later_batch_finishing_first_is_held_until_the_earlier_one_settles() {
        let mut s = State::default();
        assert_eq!(settle(&mut s, &[4, 5, 6]), None, "1..=3 are still in flight");
        assert_eq!(s.acked_through, 0);
        assert_eq!(settle(&mut s, &[1, 2]), Some(2));
        assert_eq!(settle(&mut s, &[3]), Some(6), "one cumulative ack covers both batches");
        assert!(s.settled.is_empty());
    }

    #[test]
    fn a_gap_holds_back_everything_after_it_and_nothing_before_it() {
        let mut s = State::default();
        assert_eq!(settle(&mut s, &[1, 2, 3, 5, 6]), Some(3));
        assert_eq!(s.settled.keys().copied().collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(settle(&mut s, &[7]), None);
        assert_eq!(settle(&mut s, &[4]), Some(7));
    }

    #[test]
    fn tags_already_acknowledged_are_ignored() {
        let mut s = State::default();
        assert_eq!(settle(&mut s, &[1, 2]), Some(2));
        assert_eq!(settle(&mut s, &[2, 1]), None);
        assert!(s.settled.is_empty());
    }
}

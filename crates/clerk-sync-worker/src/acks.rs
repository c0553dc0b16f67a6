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
    /// Settled deliveries above a gap, waiting for the earlier ones: the acker of each one that
    /// is to be acked, `None` for one that was nacked.
    settled: BTreeMap<u64, Option<A>>,
}

impl<A> Default for State<A> {
    fn default() -> Self {
        Self { acked_through: 0, settled: BTreeMap::new() }
    }
}

impl<A> State<A> {
    /// Records settled deliveries: `Some(acker)` to be acked, `None` if nacked.
    fn record(&mut self, tag: u64, acker: Option<A>) {
        if tag > self.acked_through {
            self.settled.insert(tag, acker);
        }
    }

    /// Takes the settled run that now continues from `acked_through`; returns the acker of its last
    /// delivery that is to be acked, with that delivery's tag.
    fn advance(&mut self) -> Option<(u64, A)> {
        let mut last = None;
        while let Some(entry) = self.settled.first_entry() {
            if *entry.key() != self.acked_through + 1 {
                break;
            }
            self.acked_through += 1;
            if let Some(acker) = entry.remove() {
                last = Some((self.acked_through, acker));
            }
        }
        last
    }
}

impl AckWindow {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `acked` (committed or moved) and `nacked` (returned to the queue) as settled, and
    /// acks everything now contiguous.
    pub async fn settled<'a>(
        &self,
        acked: impl IntoIterator<Item = &'a Delivery>,
        nacked: impl IntoIterator<Item = &'a Delivery>,
    ) {
        let mut state = self.state.lock().await;
        for d in acked {
            state.record(d.delivery_tag, Some(d.acker.clone()));
        }
        for d in nacked {
            state.record(d.delivery_tag, None);
        }
        if let Some((tag, acker)) = state.advance() {
            ack(&acker, tag, true).await;
        }
    }

    /// At shutdown: acks, one by one, the settled deliveries still waiting behind a gap (a batch
    /// given up on while the database was down). The gap's messages return to the queue when the
    /// channel closes; these must not, since their effect is committed.
    pub async fn flush(&self) {
        let mut state = self.state.lock().await;
        for (tag, acker) in std::mem::take(&mut state.settled) {
            if let Some(acker) = acker {
                ack(&acker, tag, false).await;
            }
        }
    }
}

async fn ack(acker: &Acker, tag: u64, multiple: bool) {
    match acker.ack(BasicAckOptions { multiple }).await {
        Ok(true) => {}
        // Nothing was sent: without this line the committed messages would wait, unacked, for a
        // redelivery or the broker's consumer timeout.
        Ok(false) => tracing::error!(
            delivery_tag = tag,
            multiple,
            "the acker refused (already used or its channel is gone); these messages will be redelivered and deduplicated"
        ),
        // The effect is committed; a redelivery will be recognised as a duplicate.
        Err(e) => tracing::warn!(error = %e, "ack failed after commit; the redelivery will be deduplicated"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settles `tags` (a negative one: that tag, nacked); returns the tag the cumulative ack goes
    /// to, if one is sent.
    fn settle(state: &mut State<u64>, tags: &[i64]) -> Option<u64> {
        for &t in tags {
            let tag = t.unsigned_abs();
            state.record(tag, (t > 0).then_some(tag));
        }
        state.advance().map(|(tag, acker)| {
            assert_eq!(tag, acker, "the ack goes through the acker of the tag it names");
            tag
        })
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
    fn a_nacked_delivery_is_passed_over_but_never_sends_the_ack() {
        let mut s = State::default();
        assert_eq!(settle(&mut s, &[1, 2, -3]), Some(2), "ack through 2's acker; 3 went back to the queue");
        assert_eq!(s.acked_through, 3);
        assert_eq!(settle(&mut s, &[-4]), None, "a run of nacks alone sends nothing");
        assert_eq!(settle(&mut s, &[6, 5]), Some(6));
        assert_eq!(settle(&mut s, &[-8, 9]), None, "7 is still in flight");
        assert_eq!(settle(&mut s, &[7]), Some(9));
    }

    #[test]
    fn tags_already_acknowledged_are_ignored() {
        let mut s = State::default();
        assert_eq!(settle(&mut s, &[1, 2]), Some(2));
        assert_eq!(settle(&mut s, &[2, 1]), None);
        assert!(s.settled.is_empty());
    }
}

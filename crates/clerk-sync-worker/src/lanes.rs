//! Lanes: the worker's concurrent transactions, each owning a share of the objects.
//!
//! Each message goes to the lane of the object it writes: a user event to its user's lane, an
//! organization event and every membership event to the organization's lane, the other stored
//! types (sessions, invitations, roles, Billing, ...) to their own object's lane. A lane cuts its
//! messages into batches (by size, or after a short linger) and applies one batch at a time.
//!
//! Why not hand consecutive batches to whichever transaction is free: consecutive batches share
//! rows (a user updated twice a second, the organization nested in every membership event), and a
//! transaction that meets a row another open transaction has written waits for that one to commit.
//! Measured on the bench workload, two such transactions went barely faster than one. With lanes,
//! concurrent transactions of one process never write the same user, organization or membership
//! row, and copies of a message (same svix-id, same body) always land in the same lane, where the
//! dedup insert of a later batch finds the earlier one committed. Only a user deletion reaches
//! across lanes (its memberships live in their organizations' lanes); the advisory locks in
//! `clerk.apply_changes` serialize exactly those pairs.
//!
//! The lanes of one channel live and die with it ([`LaneControl`]): once the channel is gone its
//! deliveries can never be acked, so the lanes drop what is queued at once and the batch in hand at
//! its next wait ([`channel_gone`]: a batch paused on the database gives up; the broker has already
//! given those messages to someone else), and the consumer starts no new channel until they have.
//! A batch is never dropped in the middle of a statement: a cancelled query can leave its pooled
//! connection unusable. Every delivery in hand is counted in `clerk_sync_worker_messages_held`,
//! which therefore never exceeds one prefetch.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use prometheus::IntGauge;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acks::AckWindow;
use crate::process::{Prepared, Processor};
use clerk_sync_store::event::Change;

tokio::task_local! {
    /// The token of the channel whose batch this task is applying.
    static CHANNEL_GONE: CancellationToken;
}

/// Resolves once the channel of the batch being applied by this task is gone (never outside a
/// lane): where a batch waits (a database pause, a settle backoff), it stops waiting and gives up.
pub async fn channel_gone() {
    match CHANNEL_GONE.try_with(CancellationToken::clone) {
        Ok(token) => token.cancelled().await,
        Err(_) => std::future::pending().await,
    }
}

/// How one channel's lanes are told to stop, and where they run.
#[derive(Debug, Clone, Default)]
pub struct LaneControl {
    /// Stop taking new batches; the batch in hand finishes (and acks on the live channel).
    pub stop: CancellationToken,
    /// The channel is gone: drop what is queued, and give up on the batch in hand at its next wait.
    pub gone: CancellationToken,
    /// The lane tasks of this channel only, to wait for them before another channel starts.
    pub tasks: TaskTracker,
}

/// A delivery counted in `messages_held` from its arrival until it is dropped: settled (the batch
/// is done with it) or given back (its lane ended with it still queued, or its channel is gone).
struct InHand {
    prepared: Prepared,
    count: HeldCount,
}

struct HeldCount(IntGauge);

impl HeldCount {
    fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for HeldCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Sends each delivery to its lane; dropping it lets the lanes end once their channel is empty.
pub struct Lanes {
    senders: Vec<mpsc::UnboundedSender<InHand>>,
    hasher: std::hash::RandomState,
    held: IntGauge,
}

impl Lanes {
    /// Starts `count` lane tasks on `tracker` and `control.tasks`. They stop taking new batches
    /// when `control.stop` fires (the messages still queued then are left unacknowledged, for the
    /// broker to redeliver) and drop everything when `control.gone` fires.
    pub fn start(
        count: usize,
        processor: &Arc<Processor>,
        acks: &Arc<AckWindow>,
        batching: (usize, Duration),
        control: &LaneControl,
        tracker: &TaskTracker,
    ) -> Self {
        let (batch_size, linger) = batching;
        let senders = (0..count.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let lane = run(rx, processor.clone(), acks.clone(), (batch_size.max(1), linger), control.clone());
                tracker.spawn(control.tasks.track_future(lane));
                tx
            })
            .collect();
        Self { senders, hasher: std::hash::RandomState::new(), held: processor.metrics.messages_held.clone() }
    }

    /// Parses `delivery` and queues it on its lane. Unbounded: the prefetch window bounds it.
    pub fn send(&self, delivery: Delivery) {
        let prepared = Prepared::new(delivery);
        let key = match &prepared.event {
            Ok(e) => partition_key(&e.change).unwrap_or(&e.svix_id),
            // Unparseable: any lane will settle it; its copies still go together.
            Err(_) => prepared.delivery.properties.message_id().as_ref().map_or("", |s| s.as_str()),
        };
        let lane = self.lane_of(key);
        // A lane only ends after `stop` or when this sender is dropped; a send to an ended lane
        // drops the delivery unacked, and the broker redelivers it.
        let _ = self.senders[lane].send(InHand { prepared, count: HeldCount::new(&self.held) });
    }

    fn lane_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % self.senders.len() as u64) as usize
    }
}

/// The id that decides a message's lane: the user for user events, the organization for
/// organization and membership events. `None` for types that write nothing.
fn partition_key(change: &Change) -> Option<&str> {
    match change {
        Change::UpsertUser(u) => Some(&u.id),
        Change::DeleteUser(d) | Change::DeleteOrganization(d) => Some(&d.id),
        Change::UpsertOrganization(o) => Some(&o.id),
        Change::UpsertMembership { membership: m, organization }
        | Change::DeleteMembership { membership: m, organization } => {
            // A nested organization too incomplete to parse still names the lane by membership:
            // that membership's events then share a lane, which is what matters for its row.
            Some(organization.as_ref().map_or(m.id.as_str(), |o| o.id.as_str()))
        }
        // Its own id: a session's events write only its row (a user's deletion reaches it under
        // the driver's advisory lock, from whichever lane).
        Change::UpsertSession(s) => Some(&s.id),
        // Likewise: an invitation's events write only its row.
        Change::UpsertInvitation(v) => Some(&v.id),
        // Their own ids: no event of these writes another object's row.
        Change::UpsertRole(r) => Some(&r.id),
        Change::UpsertPermission(p) => Some(&p.id),
        Change::UpsertDomain(d) => Some(&d.id),
        Change::DeleteRole(d) | Change::DeletePermission(d) | Change::DeleteDomain(d) => Some(&d.id),
        Change::UpsertWaitlistEntry(w) => Some(&w.id),
        Change::UpsertSubscription(s) => Some(&s.id),
        Change::UpsertSubscriptionItem(s) => Some(&s.id),
        Change::UpsertPaymentAttempt(p) => Some(&p.id),
        Change::Ignore => None,
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<InHand>,
    processor: Arc<Processor>,
    acks: Arc<AckWindow>,
    (batch_size, linger): (usize, Duration),
    control: LaneControl,
) {
    loop {
        let first = tokio::select! {
            biased;
            () = control.gone.cancelled() => break,
            () = control.stop.cancelled() => break,
            next = rx.recv() => match next {
                Some(p) => p,
                None => break,
            },
        };
        // While the previous batch was applied the next one queued up: under load a lane takes a
        // full batch at once; when idle it waits `linger` for company.
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < batch_size {
            tokio::select! {
                biased;
                next = rx.recv() => match next {
                    Some(p) => batch.push(p),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let (batch, counts): (Vec<Prepared>, Vec<HeldCount>) = batch.into_iter().map(|h| (h.prepared, h.count)).unzip();
        // Giving up mid-way is safe: nothing is acked without a commit, and what was committed
        // but not acked comes back as a duplicate the dedup insert recognises.
        CHANNEL_GONE.scope(control.gone.clone(), processor.process(batch, &acks)).await;
        drop(counts);
    }
    // Whatever is still queued is dropped with `rx` (and uncounted): the broker redelivers it.
}

#[cfg(test)]
mod tests {
    use super::*;
    use clerk_sync_store::event;

    fn change(json: &str) -> Change {
        event::parse("msg_test", 0, json.as_bytes()).expect("test event parses").change
    }

    #[test]
    fn a_membership_event_shares_the_lane_of_its_organization_and_a_user_event_its_user() {
        let membership = change(
            r#"{"type":"organizationMembership.updated","timestamp":1,"data":{"id":"orgmem_1","role":"org:admin",
               "organization":{"id":"org_1","name":"Acme","slug":"acme","created_at":1,"updated_at":2},
               "public_user_data":{"user_id":"user_1"},"created_at":1,"updated_at":2}}"#,
        );
        assert_eq!(partition_key(&membership), Some("org_1"));
        let org = change(
            r#"{"type":"organization.updated","timestamp":1,"data":{"id":"org_1","name":"Acme","slug":"acme",
               "created_at":1,"updated_at":3}}"#,
        );
        assert_eq!(partition_key(&org), Some("org_1"));
        let user = change(r#"{"type":"user.deleted","timestamp":1,"data":{"id":"user_1","deleted":true}}"#);
        assert_eq!(partition_key(&user), Some("user_1"));
        let session = change(r#"{"type":"session.created","timestamp":1,"data":{"id":"sess_1","updated_at":1}}"#);
        assert_eq!(partition_key(&session), Some("sess_1"));
        let email = change(r#"{"type":"email.created","timestamp":1,"data":{"id":"ema_1"}}"#);
        assert_eq!(partition_key(&email), None);
    }
}

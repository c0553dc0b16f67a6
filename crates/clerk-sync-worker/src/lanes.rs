//! Lanes: the worker's concurrent transactions, each owning a share of the objects.
//!
//! Each message goes to the lane of the object it writes: a user event to its user's lane, an
//! organization event and every membership event to the organization's lane. A lane cuts its
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

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acks::AckWindow;
use crate::process::{Prepared, Processor};
use clerk_sync_store::event::Change;

/// Sends each delivery to its lane; dropping it lets the lanes end once their channel is empty.
pub struct Lanes {
    senders: Vec<mpsc::UnboundedSender<Prepared>>,
    hasher: std::hash::RandomState,
}

impl Lanes {
    /// Starts `count` lane tasks on `tracker`. They stop taking new batches when `stop` fires; the
    /// messages still queued then are left unacknowledged, for the broker to redeliver.
    pub fn start(
        count: usize,
        processor: &Arc<Processor>,
        acks: &Arc<AckWindow>,
        (batch_size, linger): (usize, Duration),
        stop: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let senders = (0..count.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tracker.spawn(run(rx, processor.clone(), acks.clone(), (batch_size.max(1), linger), stop.clone()));
                tx
            })
            .collect();
        Self { senders, hasher: std::hash::RandomState::new() }
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
        let _ = self.senders[lane].send(prepared);
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
        Change::Ignore => None,
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Prepared>,
    processor: Arc<Processor>,
    acks: Arc<AckWindow>,
    (batch_size, linger): (usize, Duration),
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => break,
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
        processor.process(batch, &acks).await;
    }
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
        let session = change(r#"{"type":"session.created","timestamp":1,"data":{"id":"sess_1"}}"#);
        assert_eq!(partition_key(&session), None);
    }
}

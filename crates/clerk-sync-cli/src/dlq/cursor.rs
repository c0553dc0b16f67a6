//! Taking dead letters one at a time, in queue order, with bounded memory, and handing back the
//! ones not settled in their original order.
//!
//! A consumer with a bounded prefetch feeds the cursor; what the caller keeps without settling
//! (a letter it only looked at, or one not selected) stays unacknowledged at the broker and only its
//! delivery tag is kept here. A consumer whose prefetch is used up by such letters is cancelled and a
//! new one started ("rounds"), so the CLI can look through a million letters while holding only a
//! prefetch's worth of bodies.
//!
//! A consumer is cancelled only once its whole prefetch has arrived, and letters it delivered are
//! acknowledged only after it is cancelled: a delivery still on its way when a consumer is cancelled
//! is requeued by the broker at once, ahead of everything held, and an acknowledgement to a live
//! consumer would send it one more.
//!
//! Handing back in order takes care: RabbitMQ 3.10's quorum queues return a batch of more than 32
//! messages (a closed channel's, one nack covering them, or acks the channel merged) in hash order.
//! [`Cursor::finish`] therefore nacks at most 32 at a time, never across two consumers (one nack
//! spanning two is two commands applied in either order), and lets the queue apply each few
//! batches (its ready count shows them) before sending more. If the CLI is killed instead, the
//! broker still hands everything back (nothing is lost) but the order of the held letters is not
//! kept.
//!
//! Where the letters go back is the broker's choice: a quorum queue delivers handed-back letters
//! before all others, and queues each hand-back behind the earlier ones still waiting. So a command
//! that looks at only the front part of letters handed back before (by any earlier command that
//! looked further) moves that part behind the rest of them: nothing is lost and no letter overtakes
//! another within either part, but the queue is rotated. A pass over the whole queue (a filtered
//! replay or purge, `list` of everything) puts it back in its original order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clerk_sync_core::amqp::{Nodes, Topology, declare_topology_on};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::Notify;
use tokio::time::Instant;

/// With no delivery for this long, the queue's counter decides whether anything is left to take.
const IDLE: Duration = Duration::from_millis(500);
/// RabbitMQ 3.10 applies a return of up to 32 messages in order (a small Erlang map is sorted).
const RETURN_BATCH: usize = 32;
/// Return commands in flight before waiting for the queue to apply them; the queue's client
/// merges commands (and so reorders them) only past 32 pending.
const RETURNS_IN_FLIGHT: usize = 8;
/// Longest to wait for a group of returns to show in the ready count (another consumer may take
/// them as they come back, so the count need not rise; then the rest go back unpaced).
const RETURN_WAIT: Duration = Duration::from_secs(2);

/// How many more letters a caller can use, which sizes the next consumer's prefetch.
#[derive(Debug, Clone, Copy)]
pub enum Want {
    /// Every letter taken is used: take no more than this.
    Exactly(usize),
    /// Looking for something: at least this many, and as many as were taken so far (doubling
    /// rounds, so a search never takes more than twice what it needed).
    AtLeast(usize),
}

/// Set by the first Ctrl-C: stop taking, settle what is in flight, hand the rest back in order.
/// A second Ctrl-C exits at once (the broker still returns everything, unordered).
#[derive(Clone, Default)]
struct Interrupt(Arc<(AtomicBool, Notify)>);

impl Interrupt {
    fn listen(&self) {
        let flag = self.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\ninterrupted: finishing what is in flight and handing the rest back (Ctrl-C again to quit now)"
                );
                flag.0.0.store(true, Ordering::SeqCst);
                flag.0.1.notify_waiters();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }

    fn is_set(&self) -> bool {
        self.0.0.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        let notified = self.0.1.notified();
        tokio::pin!(notified);
        // Registered before the flag is read, so a Ctrl-C in between is not missed.
        notified.as_mut().enable();
        if !self.is_set() {
            notified.await;
        }
    }
}

/// One consumer, and what it delivered.
struct Round {
    consumer: Consumer,
    prefetch: usize,
    received: usize,
    first_tag: Option<u64>,
}

impl Round {
    fn note(&mut self, delivery: &Delivery, round_starts: &mut Vec<u64>) {
        self.received += 1;
        if self.first_tag.is_none() {
            self.first_tag = Some(delivery.delivery_tag);
            round_starts.push(delivery.delivery_tag);
        }
    }
}

pub struct Cursor {
    connection: Connection,
    channel: Channel,
    counters: Channel,
    queue: String,
    max_prefetch: usize,
    initial: u32,
    round: Option<Round>,
    /// Delivered by a cancelled consumer, not yet handed out.
    pending: VecDeque<Delivery>,
    /// Taken and kept unsettled, to be handed back by [`Cursor::finish`].
    held: Vec<u64>,
    held_min: Option<u64>,
    /// Acknowledgements for the live consumer's letters, sent once it is cancelled.
    deferred: Vec<u64>,
    /// The first delivery tag of each consumer, ascending.
    round_starts: Vec<u64>,
    received: usize,
    handed: usize,
    interrupt: Interrupt,
}

impl Cursor {
    /// Connects, declares the topology (idempotent: the CLI may run before any service) and reads
    /// how many letters are ready: the cursor takes no more than that many.
    pub async fn open(nodes: &Nodes, topology: &Topology, max_prefetch: u16) -> anyhow::Result<Self> {
        let props = ConnectionProperties::default().with_connection_name("clerk-sync-cli".into());
        // Any node of the cluster will do: the queues are reachable from every one.
        let connection = nodes
            .connect(props)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to RabbitMQ ({}): {e}", nodes.addresses().join(", ")))?
            .connection;
        declare_topology_on(&connection, topology, &[]).await?;
        let channel = connection.create_channel().await?;
        let counters = connection.create_channel().await?;
        let mut cursor = Self {
            connection,
            channel,
            counters,
            queue: topology.dead_queue(),
            max_prefetch: usize::from(max_prefetch.max(1)),
            initial: 0,
            round: None,
            pending: VecDeque::new(),
            held: Vec::new(),
            held_min: None,
            deferred: Vec::new(),
            round_starts: Vec::new(),
            received: 0,
            handed: 0,
            interrupt: Interrupt::default(),
        };
        cursor.initial = cursor.ready().await?;
        Ok(cursor)
    }

    /// Letters ready when the cursor opened.
    pub fn initial(&self) -> u32 {
        self.initial
    }

    /// From now on a Ctrl-C ends the pass cleanly (see [`Interrupt`]); call it after any prompt,
    /// which a Ctrl-C should simply abort.
    pub fn stop_on_ctrl_c(&self) {
        self.interrupt.listen();
    }

    pub fn interrupted(&self) -> bool {
        self.interrupt.is_set()
    }

    /// A publisher-confirm channel on the same connection, for replays.
    pub async fn confirm_channel(&self) -> lapin::Result<Channel> {
        let channel = self.connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(channel)
    }

    /// Letters ready in the dead-letter queue, from the queue's own counter.
    pub async fn ready(&self) -> lapin::Result<u32> {
        let opts = QueueDeclareOptions { passive: true, ..Default::default() };
        let q = self.counters.queue_declare(self.queue.as_str().into(), opts, FieldTable::default()).await?;
        Ok(q.message_count())
    }

    /// The next letter in queue order; `None` once as many as were ready at the start were taken,
    /// the queue has nothing more to give, or the operator pressed Ctrl-C. The caller settles it
    /// ([`Cursor::ack`]) or keeps it ([`Cursor::hold`]).
    pub async fn next(&mut self, want: Want) -> anyhow::Result<Option<Delivery>> {
        loop {
            if self.handed >= self.initial as usize || self.interrupt.is_set() {
                return Ok(None);
            }
            if let Some(delivery) = self.pending.pop_front() {
                self.handed += 1;
                return Ok(Some(delivery));
            }
            // A consumer that delivered its whole prefetch gets nothing more: start the next one.
            if self.round.as_ref().is_some_and(|r| r.received >= r.prefetch) {
                self.end_round().await?;
                continue;
            }
            if self.round.is_none() {
                self.start_round(want).await?;
            }
            let Some(round) = self.round.as_mut() else { continue };
            let next = tokio::select! {
                next = tokio::time::timeout(IDLE, round.consumer.next()) => next,
                () = self.interrupt.wait() => return Ok(None),
            };
            match next {
                Ok(Some(Ok(delivery))) => {
                    round.note(&delivery, &mut self.round_starts);
                    self.received += 1;
                    self.handed += 1;
                    return Ok(Some(delivery));
                }
                Ok(Some(Err(e))) => return Err(anyhow::anyhow!("lost the dead-letter queue's consumer: {e}")),
                Ok(None) => anyhow::bail!("RabbitMQ cancelled the consumer of {} (was the queue deleted?)", self.queue),
                // Others may hold what was ready at the start; with nothing ready, we are done.
                Err(_) if self.ready().await? == 0 => return Ok(None),
                Err(_) => {}
            }
        }
    }

    async fn start_round(&mut self, want: Want) -> anyhow::Result<()> {
        let wanted = match want {
            Want::Exactly(n) => n,
            Want::AtLeast(n) => n.max(self.handed),
        };
        let left = (self.initial as usize).saturating_sub(self.received);
        let prefetch = wanted.min(left).min(self.max_prefetch).max(1);
        self.channel.basic_qos(u16::try_from(prefetch).unwrap_or(u16::MAX), BasicQosOptions::default()).await?;
        let consumer = self
            .channel
            .basic_consume(self.queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        self.round = Some(Round { consumer, prefetch, received: 0, first_tag: None });
        Ok(())
    }

    /// Waits for the rest of the live consumer's prefetch (up to [`IDLE`] between deliveries: the
    /// queue may have run dry), then cancels it with nothing on the way; what it delivered and was
    /// not handed out yet is handed out next. Its deferred acknowledgements go now.
    async fn end_round(&mut self) -> anyhow::Result<()> {
        let Some(mut round) = self.round.take() else { return Ok(()) };
        while round.received < round.prefetch {
            match tokio::time::timeout(IDLE, round.consumer.next()).await {
                Ok(Some(delivery)) => {
                    let delivery = delivery?;
                    round.note(&delivery, &mut self.round_starts);
                    self.received += 1;
                    self.pending.push_back(delivery);
                }
                Ok(None) | Err(_) => break,
            }
        }
        self.channel.basic_cancel(round.consumer.tag(), BasicCancelOptions::default()).await?;
        while let Some(delivery) = round.consumer.next().await {
            let delivery = delivery?;
            round.note(&delivery, &mut self.round_starts);
            self.received += 1;
            self.pending.push_back(delivery);
        }
        let deferred = std::mem::take(&mut self.deferred);
        self.send_acks(&deferred).await?;
        Ok(())
    }

    /// Keeps a taken letter in the queue: it goes back, in order, at [`Cursor::finish`].
    pub fn hold(&mut self, tag: u64) {
        self.held.push(tag);
        self.held_min = Some(self.held_min.map_or(tag, |m| m.min(tag)));
    }

    /// Removes these letters (confirmed copies, or purged; ascending) from the queue; those the
    /// live consumer delivered wait until it is cancelled.
    pub async fn ack(&mut self, tags: &[u64]) -> lapin::Result<()> {
        let live = self.round.as_ref().and_then(|r| r.first_tag).unwrap_or(u64::MAX);
        let split = tags.partition_point(|t| *t < live);
        self.deferred.extend_from_slice(&tags[split..]);
        self.send_acks(&tags[..split]).await
    }

    /// One frame for the lot when no held letter lies below them (an ack with `multiple` would
    /// take it too).
    async fn send_acks(&self, tags: &[u64]) -> lapin::Result<()> {
        let Some(&last) = tags.last() else { return Ok(()) };
        if self.held_min.is_none_or(|m| m > last) {
            return self.channel.basic_ack(last, BasicAckOptions { multiple: true }).await;
        }
        for tag in tags {
            self.channel.basic_ack(*tag, BasicAckOptions { multiple: false }).await?;
        }
        Ok(())
    }

    /// Hands back everything taken and not acknowledged, in queue order, and closes the connection.
    /// Returns the letters ready afterwards. Settle every letter in flight first.
    pub async fn finish(mut self) -> anyhow::Result<u32> {
        self.end_round().await?;
        let mut unsettled = std::mem::take(&mut self.held);
        unsettled.extend(self.pending.drain(..).map(|d| d.delivery_tag));
        unsettled.sort_unstable();
        self.hand_back(&unsettled).await?;
        let ready = self.ready().await?;
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connection.close(200, "bye".into()).await;
        Ok(ready)
    }

    async fn hand_back(&self, tags: &[u64]) -> anyhow::Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let base = self.ready().await? as usize;
        let round_of = |tag: u64| self.round_starts.partition_point(|start| *start <= tag);
        let (mut returned, mut batches, mut start, mut paced) = (0, 0, 0, true);
        while start < tags.len() {
            let round = round_of(tags[start]);
            let mut end = start + 1;
            while end < tags.len() && end - start < RETURN_BATCH && round_of(tags[end]) == round {
                end += 1;
            }
            // Every unsettled tag up to this one is in the batch: earlier ones went back already.
            let options = BasicNackOptions { multiple: true, requeue: true };
            self.channel.basic_nack(tags[end - 1], options).await?;
            returned += end - start;
            batches += 1;
            start = end;
            // The first wait also covers the acknowledgements sent before (the queue applies one
            // channel's commands in order), which may have left the queue's client merging.
            if paced && (batches == 1 || batches % RETURNS_IN_FLIGHT == 0 || start == tags.len()) {
                paced = self.applied(base + returned).await?;
            }
        }
        Ok(())
    }

    /// Waits until the queue shows `ready` letters, i.e. has applied the returns so far. False if
    /// it did not in time: another consumer is taking them as they come back, and the order is
    /// no longer ours to keep.
    async fn applied(&self, ready: usize) -> anyhow::Result<bool> {
        let deadline = Instant::now() + RETURN_WAIT;
        while (self.ready().await? as usize) < ready {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(true)
    }
}

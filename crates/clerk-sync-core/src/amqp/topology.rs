//! Exchange and queue names derived from one prefix, their arguments, and their declaration.
//!
//! ```text
//! <prefix>.events (topic) --#--> <prefix>.sync (quorum) --x-dead-letter--> <prefix>.dead (fanout) --> <prefix>.dead (quorum)
//! <prefix>.retry.<delay> (quorum, TTL) --expires into the default exchange--> <prefix>.sync
//! ```
//! The main queue dead-letters by itself only when RabbitMQ's delivery limit is hit; the worker
//! dead-letters with a reason long before. Dead-lettering is at-least-once (quorum queues, 3.10+),
//! so a broker-side dead letter is never dropped. Retry queues are named by their delay, so two
//! processes configured with different delays never disagree about one queue's arguments.
//!
//! Every quorum queue is declared with `x-quorum-initial-group-size` (replicas when created) and
//! `x-queue-leader-locator = balanced` (RabbitMQ 3.10 and 4.x both take it: the leader goes to the
//! node with the fewest leaders, so the main, dead and retry queues do not all lead on one node).
//!
//! Upgrades: RabbitMQ never changes a queue's arguments, and redeclaring one with other arguments
//! fails with PRECONDITION_FAILED (closing the channel). [`declare_topology_on`], which the
//! services use, then keeps the queue as it is (declared passively on a fresh channel) and logs,
//! once per queue, what the operator can do ([`upgrade_advice`]); the services run on.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};

/// See [`queue_specs`]: high enough that browsing never drops a dead letter.
const DEAD_QUEUE_DELIVERY_LIMIT: i64 = 1_000_000;

/// Replicas of each quorum queue when it is created (RabbitMQ takes fewer if the cluster is smaller).
pub const DEFAULT_INITIAL_GROUP_SIZE: u32 = 3;

/// Where a new quorum queue's leader goes: the node with the fewest leaders (3.10 and 4.x).
const LEADER_LOCATOR: &str = "balanced";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    delivery_limit: u32,
    initial_group_size: u32,
}

impl Topology {
    pub fn new(prefix: impl Into<String>, delivery_limit: u32) -> Self {
        Self { prefix: prefix.into(), delivery_limit, initial_group_size: DEFAULT_INITIAL_GROUP_SIZE }
    }

    /// From `[amqp]`: prefix, delivery limit and initial group size.
    pub fn from_settings(amqp: &crate::settings::AmqpSettings) -> Self {
        Self::new(amqp.prefix.clone(), amqp.delivery_limit).with_initial_group_size(amqp.quorum_initial_group_size)
    }

    /// Replicas of each quorum queue when it is first declared.
    pub fn with_initial_group_size(mut self, size: u32) -> Self {
        self.initial_group_size = size.max(1);
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn delivery_limit(&self) -> u32 {
        self.delivery_limit
    }

    /// Where the gateway publishes; routing key = event type.
    pub fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The quorum queue the workers consume.
    pub fn queue(&self) -> String {
        format!("{}.sync", self.prefix)
    }

    /// Dead letters are published here, by the worker (with a reason) or by the broker.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Where dead letters wait for an operator.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The retry queue holding messages for `delay` before they return to the main queue.
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.prefix, humantime::format_duration(delay)).replace(' ', "")
    }

    /// Every queue name, for cleanup and inspection.
    pub fn queues(&self, retry_delays: &[Duration]) -> Vec<String> {
        let mut out = vec![self.queue(), self.dead_queue()];
        out.extend(retry_delays.iter().map(|d| self.retry_queue(*d)));
        out
    }
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in pairs {
        table.insert(ShortString::from(*k), v.clone());
    }
    table
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Every queue with the arguments it is declared with, the main queue first.
pub fn queue_specs(topology: &Topology, retry_delays: &[Duration]) -> Vec<(String, FieldTable)> {
    let quorum = || {
        vec![
            ("x-queue-type", text("quorum")),
            ("x-quorum-initial-group-size", AMQPValue::LongLongInt(i64::from(topology.initial_group_size))),
            ("x-queue-leader-locator", text(LEADER_LOCATOR)),
        ]
    };
    let mut main = quorum();
    main.extend([
        ("x-dead-letter-exchange", text(&topology.dead_exchange())),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
        // amqp.delivery_limit (1000 by default; default.toml says why): it counts returns of this
        // copy only, since the worker's retries republish a new one; no fault comes near it.
        ("x-delivery-limit", AMQPValue::LongLongInt(i64::from(topology.delivery_limit))),
    ]);
    // Operators browse the dead-letter queue by taking messages and handing them back; RabbitMQ 4
    // gives quorum queues a default delivery limit of 20 and, with no dead-letter exchange here,
    // would drop a message browsed that often. This limit is never reached in practice.
    let mut dead = quorum();
    dead.push(("x-delivery-limit", AMQPValue::LongLongInt(DEAD_QUEUE_DELIVERY_LIMIT)));
    let mut out = vec![(topology.queue(), args(&main)), (topology.dead_queue(), args(&dead))];
    for delay in retry_delays {
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let mut retry = quorum();
        retry.extend([
            ("x-message-ttl", AMQPValue::LongLongInt(ttl)),
            // The default exchange with the main queue's name: straight back to the workers, and
            // never to other queues an application may have bound to the events exchange.
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&topology.queue())),
            ("x-dead-letter-strategy", text("at-least-once")),
            ("x-overflow", text("reject-publish")),
        ]);
        out.push((topology.retry_queue(*delay), args(&retry)));
    }
    out
}

const DURABLE_QUEUE: QueueDeclareOptions =
    QueueDeclareOptions { durable: true, passive: false, exclusive: false, auto_delete: false, nowait: false };

async fn declare_exchanges(channel: &Channel, topology: &Topology) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel.exchange_declare(topology.exchange().into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
    channel
        .exchange_declare(topology.dead_exchange().into(), ExchangeKind::Fanout, durable, FieldTable::default())
        .await
}

async fn bind_queues(channel: &Channel, topology: &Topology) -> lapin::Result<()> {
    let bind = |queue: String, exchange: String, key: &'static str| {
        channel.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
    };
    bind(topology.queue(), topology.exchange(), "#").await?;
    bind(topology.dead_queue(), topology.dead_exchange(), "").await
}

/// Declares everything on `channel`, strictly: a queue that exists with other arguments fails the
/// declaration (and closes the channel). For topologies this process owns (tests, the bench);
/// the services use [`declare_topology_on`].
pub async fn declare_topology(channel: &Channel, topology: &Topology, retry_delays: &[Duration]) -> lapin::Result<()> {
    declare_exchanges(channel, topology).await?;
    for (name, arguments) in queue_specs(topology, retry_delays) {
        channel.queue_declare(name.into(), DURABLE_QUEUE, arguments).await?;
    }
    bind_queues(channel, topology).await
}

/// A queue kept with the arguments it already had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptQueue {
    pub queue: String,
    /// What the broker said (names the first argument that differs and both values).
    pub reason: String,
}

/// Declares everything on channels of its own; safe to run from any number of processes at once.
/// A queue that already exists with other arguments (declared by an older release, e.g. a 3.10
/// deployment's `x-delivery-limit` 20 without a leader locator) is kept as it is: returned, and
/// logged once per queue with [`upgrade_advice`]. Any other failure is an error.
pub async fn declare_topology_on(
    connection: &Connection,
    topology: &Topology,
    retry_delays: &[Duration],
) -> lapin::Result<Vec<KeptQueue>> {
    let mut channel = connection.create_channel().await?;
    declare_exchanges(&channel, topology).await?;
    let mut kept = Vec::new();
    let passive = QueueDeclareOptions { passive: true, ..DURABLE_QUEUE };
    for (name, arguments) in queue_specs(topology, retry_delays) {
        // Known to be old (from an earlier connection of this process): checked passively, so the
        // broker's refusal (and lapin's error line about it) comes once per process, not per reconnect.
        if let Some(reason) = known_old(&name) {
            channel.queue_declare(name.as_str().into(), passive, FieldTable::default()).await?;
            kept.push(KeptQueue { queue: name, reason });
            continue;
        }
        match channel.queue_declare(name.as_str().into(), DURABLE_QUEUE, arguments).await {
            Ok(_) => {}
            Err(e) if inequivalent(&e) => {
                // The broker closed that channel; the queue exists, so a passive declaration on a
                // new one checks it is still there without touching its arguments.
                channel = connection.create_channel().await?;
                channel.queue_declare(name.as_str().into(), passive, FieldTable::default()).await?;
                let reason = match e.kind() {
                    ErrorKind::ProtocolError(amqp) => amqp.get_message().to_string(),
                    _ => e.to_string(),
                };
                remember_old(topology, &name, &reason);
                kept.push(KeptQueue { queue: name, reason });
            }
            Err(e) => return Err(e),
        }
    }
    bind_queues(&channel, topology).await?;
    let _ = channel.close(200, "topology declared".into()).await;
    Ok(kept)
}

/// PRECONDITION_FAILED: the queue exists with other arguments (or another type or durability).
fn inequivalent(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406)
}

/// Queues this process found declared with older arguments, with the broker's words.
fn old_queues() -> std::sync::MutexGuard<'static, HashMap<String, String>> {
    static OLD: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    OLD.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner())
}

fn known_old(queue: &str) -> Option<String> {
    old_queues().get(queue).cloned()
}

/// Logs, once per queue and process, what the broker said and what the operator can do.
fn remember_old(topology: &Topology, queue: &str, reason: &str) {
    if old_queues().insert(queue.to_owned(), reason.to_owned()).is_none() {
        tracing::warn!(queue, broker = reason, advice = %upgrade_advice(topology, queue), "a queue exists with older arguments; keeping it as it is");
    }
}

/// What an operator can do about a queue declared with older arguments. RabbitMQ never changes a
/// queue's arguments, and a policy cannot raise a delivery limit (it takes the lower of the
/// policy's and the queue's own): the queue keeps its limit until it is recreated, empty. Leaders
/// and replicas of existing queues can be spread and grown in place.
pub fn upgrade_advice(topology: &Topology, queue: &str) -> String {
    let limit = if queue == topology.queue() {
        format!(
            "Its delivery limit stays what it was (this release declares {}); to apply the new one, recreate it while it is empty: \
             stop the gateways (Clerk retries), wait until `rabbitmqctl list_queues name messages` shows 0 for {queue}, \
             `rabbitmqctl delete_queue {queue} --if-empty`, start a worker (it declares the queue anew), then the gateways. ",
            topology.delivery_limit
        )
    } else {
        format!(
            "It works as it is; to give it the new arguments, delete it while it is empty (`rabbitmqctl delete_queue {queue} --if-empty`) \
             and restart a worker, which declares it anew. "
        )
    };
    format!(
        "{limit}Leaders and replicas of existing queues change in place: `rabbitmq-queues rebalance quorum` spreads the leaders, \
         `rabbitmq-queues grow <node> all` adds a replica on a node that has none."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_derives_from_the_prefix() {
        let t = Topology::new("t1", 20);
        assert_eq!(t.exchange(), "t1.events");
        assert_eq!(t.queue(), "t1.sync");
        assert_eq!(t.dead_exchange(), "t1.dead");
        assert_eq!(t.retry_queue(Duration::from_secs(90)), "t1.retry.1m30s");
        assert_eq!(t.queues(&[Duration::from_secs(1)]), vec!["t1.sync", "t1.dead", "t1.retry.1s"]);
    }

    fn arg(table: &FieldTable, key: &str) -> Option<AMQPValue> {
        table.inner().get(key).cloned()
    }

    #[test]
    fn every_queue_spreads_its_leader_and_starts_with_the_configured_replicas() {
        let t = Topology::new("t1", 1000).with_initial_group_size(5);
        let specs = queue_specs(&t, &[Duration::from_secs(1)]);
        assert_eq!(
            specs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            vec!["t1.sync", "t1.dead", "t1.retry.1s"]
        );
        for (name, args) in &specs {
            assert_eq!(arg(args, "x-queue-type"), Some(text("quorum")), "{name}");
            assert_eq!(arg(args, "x-queue-leader-locator"), Some(text("balanced")), "{name}");
            assert_eq!(arg(args, "x-quorum-initial-group-size"), Some(AMQPValue::LongLongInt(5)), "{name}");
        }
        assert_eq!(arg(&specs[0].1, "x-delivery-limit"), Some(AMQPValue::LongLongInt(1000)));
        assert_eq!(arg(&specs[1].1, "x-delivery-limit"), Some(AMQPValue::LongLongInt(DEAD_QUEUE_DELIVERY_LIMIT)));
        assert_eq!(arg(&specs[2].1, "x-delivery-limit"), None, "a retry queue only holds a copy for its TTL");
        assert_eq!(Topology::new("t1", 1).with_initial_group_size(0).initial_group_size, 1);
    }

    #[test]
    fn the_upgrade_advice_names_the_queue_and_the_commands() {
        let t = Topology::new("clerk", 1000);
        let main = upgrade_advice(&t, "clerk.sync");
        assert!(main.contains("rabbitmqctl delete_queue clerk.sync --if-empty"), "{main}");
        assert!(main.contains("declares 1000"), "{main}");
        assert!(main.contains("rabbitmq-queues rebalance quorum"), "{main}");
        let retry = upgrade_advice(&t, "clerk.retry.1s");
        assert!(retry.contains("rabbitmqctl delete_queue clerk.retry.1s --if-empty"), "{retry}");
    }
}

//! Exchange and queue names derived from one prefix, and their idempotent declaration.
//!
//! ```text
//! <prefix>.events (topic) --#--> <prefix>.sync (quorum) --x-dead-letter--> <prefix>.dead (fanout) --> <prefix>.dead (quorum)
//! <prefix>.retry.<delay> (quorum, TTL) --expires into the default exchange--> <prefix>.sync
//! ```
//! The main queue dead-letters by itself only when RabbitMQ's delivery limit is hit; the worker
//! dead-letters with a reason long before. Dead-lettering is at-least-once (quorum queues, 3.10+),
//! so a broker-side dead letter is never dropped. Retry queues are named by their delay, so two
//! processes configured with different delays never disagree about one queue's arguments.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// See [`declare_topology`]: high enough that browsing never drops a dead letter.
const DEAD_QUEUE_DELIVERY_LIMIT: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    delivery_limit: u32,
}

impl Topology {
    pub fn new(prefix: impl Into<String>, delivery_limit: u32) -> Self {
        Self { prefix: prefix.into(), delivery_limit }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
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

/// Declares everything; safe to run from any number of processes at once.
pub async fn declare_topology(channel: &Channel, topology: &Topology, retry_delays: &[Duration]) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel.exchange_declare(topology.exchange().into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
    channel
        .exchange_declare(topology.dead_exchange().into(), ExchangeKind::Fanout, durable, FieldTable::default())
        .await?;

    let queue_opts = QueueDeclareOptions { durable: true, ..Default::default() };
    let quorum = || vec![("x-queue-type", text("quorum"))];

    let mut main = quorum();
    main.extend([
        ("x-dead-letter-exchange", text(&topology.dead_exchange())),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
        ("x-delivery-limit", AMQPValue::LongLongInt(i64::from(topology.delivery_limit))),
    ]);
    channel.queue_declare(topology.queue().into(), queue_opts, args(&main)).await?;
    channel
        .queue_bind(
            topology.queue().into(),
            topology.exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    // Operators browse the dead-letter queue by taking messages and handing them back; RabbitMQ 4
    // gives quorum queues a default delivery limit of 20 and, with no dead-letter exchange here,
    // would drop a message browsed that often. This limit is never reached in practice.
    let mut dead = quorum();
    dead.push(("x-delivery-limit", AMQPValue::LongLongInt(DEAD_QUEUE_DELIVERY_LIMIT)));
    channel.queue_declare(topology.dead_queue().into(), queue_opts, args(&dead)).await?;
    channel
        .queue_bind(
            topology.dead_queue().into(),
            topology.dead_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

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
        channel.queue_declare(topology.retry_queue(*delay).into(), queue_opts, args(&retry)).await?;
    }
    Ok(())
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
}

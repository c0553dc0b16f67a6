//! The relay: publishes positioned changes to the topic exchange `<prefix>.changes` with routing
//! key `<resource>.<operation>`, confirmed, at least once and in order per object.
//!
//! A round's changes (in position order) go out in waves holding at most one change per object;
//! a wave's publishes run concurrently and all must be confirmed before the next wave starts. So
//! the broker has taken a change before the object's next one is published: order per object holds
//! across the publisher's channels, while changes of different objects pipeline. The leader stores
//! the progress (`relayed_position`) only after a whole round is confirmed; a crash or a broker
//! failure before that publishes the round again (duplicates, never a gap; the message id is the
//! position, for consumers that deduplicate).
//!
//! No queue of clerk-sync's is bound to the exchange (applications bind their own), so a publish
//! that no queue takes comes back unroutable: the broker has handled it, and the relay counts it
//! as delivered.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use clerk_sync_core::amqp::{Nodes, OutgoingMessage, PublishError, Publisher};
use clerk_sync_store::feed::Change;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, ConnectionProperties, ExchangeKind};

pub struct Relay {
    publisher: Publisher,
    nodes: Arc<Nodes>,
    exchange: String,
    declared: bool,
    backoff: backoff::ExponentialBackoff,
    not_before: Option<Instant>,
}

impl Relay {
    pub fn new(publisher: Publisher, nodes: Arc<Nodes>, exchange: String) -> Self {
        Self {
            publisher,
            nodes,
            exchange,
            declared: false,
            backoff: clerk_sync_core::backoff::exponential(Duration::from_millis(200), Duration::from_secs(10)),
            not_before: None,
        }
    }

    /// False while backing off after a failure.
    pub fn ready(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    /// Publishes `changes` (in position order); true when every one is confirmed. On failure it
    /// logs, backs off and redeclares the exchange before the next attempt.
    pub async fn publish(&mut self, changes: &[Change]) -> bool {
        match self.try_publish(changes).await {
            Ok(()) => {
                self.backoff.reset();
                self.not_before = None;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "change feed relay: publishing failed; will retry from the stored progress");
                self.declared = false;
                self.not_before = Some(Instant::now() + self.backoff.next_backoff().unwrap_or(Duration::from_secs(10)));
                false
            }
        }
    }

    async fn try_publish(&mut self, changes: &[Change]) -> anyhow::Result<()> {
        if !self.declared {
            self.declare().await?;
            self.declared = true;
        }
        let mut rest = changes;
        while !rest.is_empty() {
            let mut objects = HashSet::new();
            let n = rest.iter().take_while(|c| objects.insert((c.resource.as_str(), c.object_id.as_str()))).count();
            let (wave, next) = rest.split_at(n);
            futures_util::future::try_join_all(wave.iter().map(|c| self.publish_one(c))).await?;
            rest = next;
        }
        Ok(())
    }

    async fn publish_one(&self, change: &Change) -> Result<(), PublishError> {
        let body = serde_json::to_vec(change).expect("a change serializes");
        let routing_key = change.routing_key();
        let mut headers = FieldTable::default();
        headers.insert("position".into(), AMQPValue::LongLongInt(change.position));
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(change.position.to_string()))
            .with_headers(headers);
        let msg = OutgoingMessage { exchange: &self.exchange, routing_key: &routing_key, body: &body, properties };
        match self.publisher.publish(msg).await {
            Ok(()) | Err(PublishError::Unroutable(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Declares the durable topic exchange on a short-lived connection (the core publisher
    /// declares only the ingest topology).
    async fn declare(&self) -> anyhow::Result<()> {
        let connected = self.nodes.connect(ConnectionProperties::default()).await?;
        let channel = connected.connection.create_channel().await?;
        let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        let declared = channel
            .exchange_declare(self.exchange.as_str().into(), ExchangeKind::Topic, options, FieldTable::default())
            .await;
        let _ = connected.connection.close(200, "exchange declared".into()).await;
        declared?;
        Ok(())
    }
}

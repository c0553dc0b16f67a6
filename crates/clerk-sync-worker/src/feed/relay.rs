//! The relay: publishes positioned changes to the topic exchange `<prefix>.changes` with routing
//! key `<resource>.<operation>`, confirmed, at least once and in order per object.
//!
//! One confirm-mode channel of its own: RabbitMQ routes the messages of one channel in the order
//! they were published, so a round (in position order) is published pipelined and then every
//! confirm awaited; order per object (indeed the whole order) holds at each bound queue. The
//! leader stores the progress (`relayed_position`) only after a whole round is confirmed; a crash
//! or a broker failure before that publishes the round again (duplicates, never a gap; the message
//! id is the position, for consumers that deduplicate).
//!
//! Not the core `Publisher`: it publishes `mandatory`, and no queue of clerk-sync's is bound here
//! (applications bind their own, or none yet), so every change nobody listens to would come back
//! as a returned message, body and all, logged by lapin as a warning. Unroutable is fine here:
//! the broker has handled the message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use clerk_sync_core::amqp::Nodes;
use clerk_sync_store::feed::Change;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

pub struct Relay {
    nodes: Arc<Nodes>,
    exchange: String,
    confirm_timeout: Duration,
    link: Option<(Connection, Channel)>,
    backoff: backoff::ExponentialBackoff,
    not_before: Option<Instant>,
}

impl Relay {
    pub fn new(nodes: Arc<Nodes>, exchange: String, confirm_timeout: Duration) -> Self {
        Self {
            nodes,
            exchange,
            confirm_timeout,
            link: None,
            backoff: clerk_sync_core::backoff::exponential(Duration::from_millis(200), Duration::from_secs(10)),
            not_before: None,
        }
    }

    /// False while backing off after a failure.
    pub fn ready(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    /// Publishes `changes` (in position order); true when every one is confirmed. On failure it
    /// logs, drops the connection and backs off; the next attempt reconnects and redeclares.
    pub async fn publish(&mut self, changes: &[Change]) -> bool {
        match self.try_publish(changes).await {
            Ok(()) => {
                self.backoff.reset();
                self.not_before = None;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "change feed relay: publishing failed; will retry from the stored progress");
                if let Some((connection, _)) = self.link.take() {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), connection.close(200, "relay retry".into())).await;
                }
                self.not_before = Some(Instant::now() + self.backoff.next_backoff().unwrap_or(Duration::from_secs(10)));
                false
            }
        }
    }

    /// Connects (declaring the exchange, so applications can bind to it before the first change)
    /// unless connected or backing off.
    pub async fn keep_connected(&mut self) {
        if self.link.is_some() || !self.ready() {
            return;
        }
        match self.connect().await {
            Ok(link) => self.link = Some(link),
            Err(e) => {
                tracing::warn!(error = %e, "change feed relay: cannot connect to RabbitMQ; will retry");
                self.not_before = Some(Instant::now() + self.backoff.next_backoff().unwrap_or(Duration::from_secs(10)));
            }
        }
    }

    pub async fn close(&mut self) {
        if let Some((connection, _)) = self.link.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), connection.close(200, "relay stopped".into())).await;
        }
    }

    async fn try_publish(&mut self, changes: &[Change]) -> anyhow::Result<()> {
        if self.link.is_none() {
            self.link = Some(self.connect().await?);
        }
        let Some((_, channel)) = &self.link else { unreachable!("connected above") };
        let options = BasicPublishOptions { mandatory: false, immediate: false };
        let mut confirms = Vec::with_capacity(changes.len());
        for change in changes {
            let body = serde_json::to_vec(change)?;
            let mut headers = FieldTable::default();
            headers.insert("position".into(), AMQPValue::LongLongInt(change.position));
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(change.position.to_string()))
                .with_headers(headers);
            let key = change.routing_key();
            confirms.push(
                channel
                    .basic_publish(self.exchange.as_str().into(), key.as_str().into(), options, &body, properties)
                    .await?,
            );
        }
        let all = futures_util::future::try_join_all(confirms);
        let outcome = tokio::time::timeout(self.confirm_timeout, all)
            .await
            .map_err(|_| anyhow::anyhow!("no confirm within {:?}", self.confirm_timeout))??;
        anyhow::ensure!(
            outcome.iter().all(|c| matches!(c, Confirmation::Ack(_))),
            "the broker refused (nack) a change"
        );
        Ok(())
    }

    /// A connection and a confirm channel, the durable topic exchange declared on it.
    async fn connect(&self) -> anyhow::Result<(Connection, Channel)> {
        let connected = self
            .nodes
            .connect(ConnectionProperties::default().with_connection_name("clerk-sync-worker-relay".into()))
            .await?;
        let channel = connected.connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel
            .exchange_declare(self.exchange.as_str().into(), ExchangeKind::Topic, options, FieldTable::default())
            .await?;
        tracing::info!(node = %connected.node, exchange = %self.exchange, "change feed relay connected");
        Ok((connected.connection, channel))
    }
}

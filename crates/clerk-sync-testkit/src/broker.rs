//! A plain lapin connection for tests to look into queues and to delete a test's topology.

use std::time::Duration;

use clerk_sync_core::amqp::Topology;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The broker the tests use: `AMQP_URL`, or the local default.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The host:port of [`amqp_url`], for a [`crate::TcpProxy`] in front of the tests' broker.
pub fn amqp_addr() -> std::net::SocketAddr {
    let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("AMQP_URL is an amqp:// URL");
    let host = if uri.authority.host == "localhost" { "127.0.0.1".to_owned() } else { uri.authority.host };
    format!("{host}:{}", uri.authority.port).parse().expect("AMQP_URL names an IP address and port")
}

pub struct BrokerProbe {
    connection: Connection,
    channel: Channel,
    confirm: Channel,
}

impl BrokerProbe {
    pub async fn connect() -> Self {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("tests need RabbitMQ at AMQP_URL or 127.0.0.1:5672");
        let channel = connection.create_channel().await.expect("channel");
        let confirm = connection.create_channel().await.expect("channel");
        confirm.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        Self { connection, channel, confirm }
    }

    /// Publishes persistently and waits for the broker's confirm; panics if not routed.
    pub async fn publish(&self, exchange: &str, routing_key: &str, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .confirm
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, immediate: false },
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(matches!(confirm, lapin::Confirmation::Ack(None)), "not routed: {confirm:?}");
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Messages ready in `queue` (0 if it does not exist).
    pub async fn ready_count(&self, queue: &str) -> u32 {
        let opts = QueueDeclareOptions { passive: true, ..Default::default() };
        let channel = self.connection.create_channel().await.expect("channel");
        let count = match channel.queue_declare(queue.into(), opts, FieldTable::default()).await {
            Ok(q) => q.message_count(),
            Err(_) => 0,
        };
        let _ = channel.close(200, "".into()).await;
        count
    }

    /// Takes (and acks) every message in `queue`, waiting up to `settle` for late arrivals.
    pub async fn drain(&self, queue: &str, settle: Duration) -> Vec<BasicGetMessage> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + settle;
        loop {
            match self.channel.basic_get(queue.into(), BasicGetOptions::default()).await {
                Ok(Some(msg)) => {
                    msg.delivery.ack(BasicAckOptions::default()).await.expect("ack");
                    out.push(msg);
                }
                _ if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => return out,
            }
        }
    }

    /// Deletes a test's queues and exchanges so the broker does not fill up with quorum queues.
    pub async fn delete_topology(&self, topology: &Topology, retry_delays: &[Duration]) {
        for queue in topology.queues(retry_delays) {
            let _ = self.channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
        }
        for exchange in [topology.exchange(), topology.dead_exchange()] {
            let _ = self.channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
        }
    }
}

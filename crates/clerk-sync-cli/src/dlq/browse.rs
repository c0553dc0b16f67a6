//! Taking every dead letter on an unacknowledged channel, and what each one says about itself.

use chrono::{DateTime, Utc};
use clerk_sync_core::amqp::{self, Topology, headers};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::AMQPValue;
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};

/// One dead letter, held (unacknowledged) by this process.
pub struct DeadLetter {
    pub svix_id: String,
    pub event_type: String,
    pub error_kind: String,
    pub error: String,
    pub attempts: i64,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub original_routing_key: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delivery: Delivery,
}

fn header_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

impl DeadLetter {
    fn from_delivery(delivery: Delivery) -> Self {
        let h = delivery.properties.headers().as_ref();
        let body_type = serde_json::from_slice::<Value>(&delivery.data)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
        let original_routing_key = amqp::get_str(h, headers::ORIGINAL_ROUTING_KEY)
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        // Dead-lettered by RabbitMQ itself (delivery limit) rather than by a worker: x-death only.
        let broker_reason = amqp::get_str(h, "x-first-death-reason");
        let error_kind = amqp::get_str(h, headers::ERROR_KIND)
            .or_else(|| broker_reason.clone())
            .unwrap_or_else(|| "unknown".to_owned());
        let error = amqp::get_str(h, headers::ERROR).unwrap_or_else(|| match &broker_reason {
            Some(r) => format!(
                "dead-lettered by RabbitMQ ({r}) from {}",
                amqp::get_str(h, "x-first-death-queue").unwrap_or_default()
            ),
            None => String::new(),
        });
        let first_failed_at = amqp::get_i64(h, headers::FIRST_FAILED_AT).and_then(DateTime::from_timestamp_millis);
        let headers = h
            .map(|t| t.inner().iter().map(|(k, v)| (k.as_str().to_owned(), header_text(v))).collect())
            .unwrap_or_default();
        Self {
            svix_id: delivery.properties.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            event_type: body_type.unwrap_or_else(|| original_routing_key.clone()),
            error_kind,
            error,
            attempts: amqp::get_i64(h, headers::ATTEMPTS).unwrap_or(0),
            first_failed_at,
            original_routing_key,
            headers,
            body: delivery.data.clone(),
            delivery,
        }
    }

    pub fn summary(&self) -> Value {
        json!({
            "svix_id": self.svix_id,
            "type": self.event_type,
            "error_kind": self.error_kind,
            "error": self.error,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at,
        })
    }

    pub fn detail(&self) -> Value {
        let mut v = self.summary();
        v["routing_key"] = json!(self.original_routing_key);
        v["headers"] = json!(self.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>());
        v["body"] = serde_json::from_slice(&self.body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&self.body)));
        v
    }

    pub fn pretty_body(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }

    /// Removes it from the dead-letter queue for good.
    pub async fn ack(&self) -> lapin::Result<()> {
        self.delivery.ack(BasicAckOptions::default()).await.map(|_| ())
    }
}

/// Holds every dead letter that was ready when it opened, until [`Browser::close`].
pub struct Browser {
    connection: Connection,
    channel: Channel,
    letters: Vec<DeadLetter>,
}

impl Browser {
    pub async fn open(amqp_url: &str, topology: &Topology) -> anyhow::Result<Self> {
        let props = ConnectionProperties::default().with_connection_name("clerk-sync-cli".into());
        let connection = Connection::connect(amqp_url, props)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to RabbitMQ: {e}"))?;
        let channel = connection.create_channel().await?;
        // Idempotent, and it lets the CLI run before any service has started.
        clerk_sync_core::amqp::declare_topology(&channel, topology, &[]).await?;
        let mut letters = Vec::new();
        while let Some(msg) = channel.basic_get(topology.dead_queue().into(), BasicGetOptions { no_ack: false }).await?
        {
            letters.push(DeadLetter::from_delivery(msg.delivery));
        }
        Ok(Self { connection, channel, letters })
    }

    pub fn letters(&self) -> &[DeadLetter] {
        &self.letters
    }

    /// Hands back everything not acknowledged; it returns to the queue in its original order.
    pub async fn close(self) {
        let _ = self.channel.close(200, "done browsing".into()).await;
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

//! What one dead letter says about itself, read from the delivery without copying its body.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clerk_sync_core::amqp::{self, headers};
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use serde_json::{Value, json};

/// The summary of one dead letter: what `list` prints and what a selection matches on.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub svix_id: String,
    pub event_type: String,
    pub error_kind: String,
    pub error: String,
    pub attempts: i64,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub original_routing_key: String,
    /// The user the body concerns; read only when a selector asks (it parses the whole body).
    pub user_id: Option<String>,
}

/// Only the envelope's `type`; serde skips the rest of the body without allocating it.
#[derive(serde::Deserialize)]
struct TypeOnly<'a> {
    #[serde(borrow, rename = "type")]
    event_type: Option<Cow<'a, str>>,
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
    pub fn parse(delivery: &Delivery) -> Self {
        let h = delivery.properties.headers().as_ref();
        let body_type =
            serde_json::from_slice::<TypeOnly<'_>>(&delivery.data).ok().and_then(|t| t.event_type.map(Cow::into_owned));
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
        Self {
            svix_id: delivery.properties.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            event_type: body_type.unwrap_or_else(|| original_routing_key.clone()),
            error_kind,
            error,
            attempts: amqp::get_i64(h, headers::ATTEMPTS).unwrap_or(0),
            first_failed_at: amqp::get_i64(h, headers::FIRST_FAILED_AT).and_then(DateTime::from_timestamp_millis),
            original_routing_key,
            user_id: None,
        }
    }

    /// Reads which user the body concerns (see [`Self::user_id`]).
    pub fn with_user(mut self, body: &[u8]) -> Self {
        self.user_id = clerk_sync_store::history::Subject::user_of_body(body);
        self
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
}

/// Everything `show` prints about one dead letter: its summary, every header and the body.
pub struct Detail {
    pub letter: DeadLetter,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Detail {
    pub fn new(delivery: Delivery) -> Self {
        let headers = delivery
            .properties
            .headers()
            .as_ref()
            .map(|t| t.inner().iter().map(|(k, v)| (k.as_str().to_owned(), header_text(v))).collect())
            .unwrap_or_default();
        Self { letter: DeadLetter::parse(&delivery), headers, body: delivery.data }
    }

    pub fn json(&self) -> Value {
        let mut v = self.letter.summary();
        v["routing_key"] = json!(self.letter.original_routing_key);
        v["headers"] = json!(self.headers);
        v["body"] = serde_json::from_slice(&self.body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&self.body)));
        v
    }

    pub fn pretty_body(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

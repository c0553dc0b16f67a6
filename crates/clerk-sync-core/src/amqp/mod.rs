//! RabbitMQ: the names and declaration of the topology, the message headers every process agrees
//! on, the broker's nodes and how to connect to one, and the confirmed publisher that reconnects by
//! itself.

pub mod nodes;
mod publisher;
mod topology;

pub use nodes::{Connected, Nodes};
pub use publisher::{OutgoingMessage, PublishError, Publisher, PublisherOptions};
pub use topology::{KeptQueue, Topology, declare_topology, declare_topology_on, queue_specs, upgrade_advice};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Message headers. `svix-id` travels as the AMQP `message_id`.
pub mod headers {
    /// The signed Svix timestamp (Unix seconds), as a signed 64-bit integer.
    pub const SVIX_TIMESTAMP: &str = "svix-timestamp";
    /// When the gateway received the request (Unix milliseconds).
    pub const RECEIVED_AT: &str = "x-received-at";
    /// Why a message was dead-lettered, in words.
    pub const ERROR: &str = "x-error";
    /// Why a message was dead-lettered, as a stable code (`not_an_envelope`, `invalid_payload`, ...).
    pub const ERROR_KIND: &str = "x-error-kind";
    /// Attempts made before dead-lettering or in the retry loop.
    pub const ATTEMPTS: &str = "x-attempts";
    /// When processing first failed (Unix milliseconds).
    pub const FIRST_FAILED_AT: &str = "x-first-failed-at";
    /// The routing key (event type) the message was first published with.
    pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
    /// On a message `clerk-sync events replay` published: the svix-id of the event it repeats.
    pub const REPLAY_OF: &str = "x-replay-of";
}

/// Adds a string header.
pub fn put_str(table: &mut FieldTable, key: &str, value: &str) {
    table.insert(ShortString::from(key), AMQPValue::LongString(LongString::from(value)));
}

/// Adds an integer header.
pub fn put_i64(table: &mut FieldTable, key: &str, value: i64) {
    table.insert(ShortString::from(key), AMQPValue::LongLongInt(value));
}

/// Reads an integer header, whichever integer width the sender chose.
pub fn get_i64(table: Option<&FieldTable>, key: &str) -> Option<i64> {
    match table?.inner().get(key)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

/// Reads a string header.
pub fn get_str(table: Option<&FieldTable>, key: &str) -> Option<String> {
    match table?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

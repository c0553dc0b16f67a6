//! An application consuming the change feed from RabbitMQ (docs/change-feed.md): its own durable
//! queue bound to the topic exchange `<prefix>.changes` with the routing keys it cares about
//! (`user.created`, `membership.deleted`, `user.*`, `#`), each change acknowledged after it is
//! handled.
//!
//! The relay publishes at least once and in order per object, so a repeat of a change is always at
//! or below the newest position already handled for that object: keeping that position per object
//! (here in memory; in a real application in its database, with its effects) drops the repeats.
//!
//! ```text
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f CLERK_SYNC__AMQP__PREFIX=clerk-sync \
//!   cargo run -p clerk-sync-worker --example changes_consumer -- my-app.welcome user.created
//! ```

use std::collections::HashMap;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde::Deserialize;

/// The part of a change this application reads (the body has every column of `clerk.changes`).
#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    pub position: i64,
    pub resource: String,
    pub object_id: String,
    pub operation: String,
    pub changed: Vec<String>,
    pub event_type: Option<String>,
}

/// Consumes `queue`, bound to `<prefix>.changes` by each of `bindings`, calling `handle` once per
/// change (repeats dropped) until it returns false.
pub async fn consume(
    amqp_url: &str,
    prefix: &str,
    queue: &str,
    bindings: &[&str],
    mut handle: impl FnMut(&Change) -> bool,
) -> anyhow::Result<()> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), durable, args).await?;
    let exchange = format!("{prefix}.changes");
    for key in bindings {
        channel
            .queue_bind(
                queue.into(),
                exchange.as_str().into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel.basic_qos(100, BasicQosOptions::default()).await?;
    let mut deliveries = channel
        .basic_consume(queue.into(), "changes-consumer".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let mut newest: HashMap<(String, String), i64> = HashMap::new();
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let change: Change = serde_json::from_slice(&delivery.data)?;
        let key = (change.resource.clone(), change.object_id.clone());
        let last = newest.entry(key).or_insert(0);
        let more = if change.position <= *last {
            true
        } else {
            *last = change.position;
            handle(&change)
        };
        delivery.ack(BasicAckOptions::default()).await?;
        if !more {
            break;
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let prefix = std::env::var("CLERK_SYNC__AMQP__PREFIX").unwrap_or_else(|_| "clerk-sync".to_owned());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (queue, bindings) = args.split_first().map_or(("changes-example", &[][..]), |(q, b)| (q.as_str(), b));
    let bindings: Vec<&str> =
        if bindings.is_empty() { vec!["#"] } else { bindings.iter().map(String::as_str).collect() };
    consume(&url, &prefix, queue, &bindings, |c| {
        println!(
            "{} {}.{} {} changed {:?} ({})",
            c.position,
            c.resource,
            c.operation,
            c.object_id,
            c.changed,
            c.event_type.as_deref().unwrap_or("-")
        );
        true
    })
    .await
}

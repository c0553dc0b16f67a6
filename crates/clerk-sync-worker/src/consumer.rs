//! Consuming the main queue: one AMQP connection with a prefetch window, each delivery parsed and
//! handed to its lane (`lanes`: `concurrency` transactions, each owning a share of the objects).
//! The prefetch window bounds what is in hand: a stalled database stops acks, so the broker stops
//! delivering. Reconnects with backoff when the broker goes away. On shutdown it cancels the
//! consumer, lets the batches in hand finish, and closes cleanly.
//!
//! When a channel is lost its lanes drop what they hold, and the next channel opens only once they
//! have ended: one prefetch in hand, however many reconnects. While the database is paused on a
//! condition the health probe can see end (unreachable, read-only, ...), no new consumer starts: a
//! channel the broker closed for `consumer_timeout` (or lost with its node) during a long outage
//! then returns each message once, not once per timeout, so the queue's delivery limit is never
//! approached by an outage, however long.

use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use clerk_sync_core::amqp::{Nodes, Topology, declare_topology_on};
use futures_util::StreamExt;
use lapin::ConnectionProperties;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acks::AckWindow;
use crate::lanes::{LaneControl, Lanes};
use crate::process::Processor;

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The broker's nodes: each reconnect goes to the next one, so a lost node is left behind.
    pub nodes: Arc<Nodes>,
    pub topology: Topology,
    pub retry_delays: Vec<Duration>,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_linger: Duration,
    pub concurrency: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Why one connection's consume loop ended.
enum Ended {
    Shutdown,
    Lost(String),
}

/// Consumes until `shutdown` fires, reconnecting as needed. Batches in flight are tracked by
/// `tracker`, which the caller waits on.
pub async fn run(opts: ConsumerOptions, processor: Arc<Processor>, shutdown: CancellationToken, tracker: TaskTracker) {
    let mut backoff = clerk_sync_core::backoff::exponential(opts.min_backoff, opts.max_backoff);
    loop {
        if !wait_for_database(&processor, &shutdown).await {
            break;
        }
        processor.metrics.set_state("disconnected");
        match consume_once(&opts, &processor, &shutdown, &tracker, &mut backoff).await {
            Ok(Ended::Shutdown) => break,
            Ok(Ended::Lost(reason)) => tracing::warn!(%reason, "lost the consumer connection; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "cannot consume from RabbitMQ; retrying"),
        }
        let delay = backoff.next_backoff().unwrap_or(opts.max_backoff);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    processor.metrics.set_state("stopped");
}

/// Holds off consuming while the database is paused on a condition the health probe can see end;
/// `false` if shutdown came first. Conditions only a write can clear (a statement timeout, a
/// conflict) do not hold it off: consuming is how the worker learns they are over.
async fn wait_for_database(processor: &Processor, shutdown: &CancellationToken) -> bool {
    let mut announced = false;
    while let Some(condition) = processor.health.condition().filter(|c| c.probe_can_clear()) {
        if !announced {
            tracing::info!(
                condition = condition.as_str(),
                "not consuming until the database is back (its messages wait in the queue)"
            );
            announced = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    true
}

async fn consume_once(
    opts: &ConsumerOptions,
    processor: &Arc<Processor>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    backoff: &mut backoff::ExponentialBackoff,
) -> lapin::Result<Ended> {
    let props = ConnectionProperties::default().with_connection_name("clerk-sync-worker".into());
    let connected = opts.nodes.connect(props).await?;
    let (connection, node) = (connected.connection, connected.node);
    // A queue declared by an older release with other arguments is kept (and logged with advice).
    declare_topology_on(&connection, &opts.topology, &opts.retry_delays).await?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(opts.prefetch, BasicQosOptions::default()).await?;
    let tag = format!("clerk-sync-worker-{}", std::process::id());
    let mut consumer = channel
        .basic_consume(
            opts.topology.queue().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Delivery tags are per channel: a new channel starts a new window.
    let acks = Arc::new(AckWindow::new());
    processor.metrics.set_state("consuming");
    backoff.reset();
    tracing::info!(queue = %opts.topology.queue(), prefetch = opts.prefetch, %node, "consuming");

    // The lanes of this channel stop with it: acks only work on the channel that delivered.
    let control = LaneControl { stop: shutdown.child_token(), ..LaneControl::default() };
    let lanes =
        Lanes::start(opts.concurrency, processor, &acks, (opts.batch_size, opts.batch_linger), &control, tracker);
    let ended = loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break Ended::Shutdown,
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => lanes.send(delivery),
            Some(Err(e)) => break Ended::Lost(e.to_string()),
            None => break Ended::Lost("the consumer was cancelled by the broker".into()),
        }
    };
    // Lanes finish the batch in hand; what is still queued returns to the broker.
    control.stop.cancel();
    drop(lanes);
    control.tasks.close();
    if matches!(ended, Ended::Shutdown) {
        let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
        // Let in-flight batches ack on this channel before it closes; unacked prefetched messages
        // then return to the queue.
        tracker.close();
        tracker.wait().await;
        acks.flush().await;
        let _ = channel.close(200, "shutting down".into()).await;
        let _ = connection.close(200, "shutting down".into()).await;
    } else {
        // Nothing in hand can be acked any more (the broker requeues it when the channel goes):
        // the lanes drop it, the batch paused on the database too, and the next channel waits for
        // them, so deliveries never pile up across reconnects.
        control.gone.cancel();
        control.tasks.wait().await;
        drop(consumer);
        let _ = tokio::time::timeout(Duration::from_secs(2), connection.close(200, "reconnecting".into())).await;
    }
    Ok(ended)
}

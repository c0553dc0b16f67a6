//! Consuming the main queue: one AMQP connection with a prefetch window, each delivery parsed and
//! handed to its lane (`lanes`: `concurrency` transactions, each owning a share of the objects).
//! The prefetch window bounds what is in hand: a stalled database stops acks, so the broker stops
//! delivering. Reconnects with backoff when the broker goes away. On shutdown it cancels the
//! consumer, lets the batches in hand finish, and closes cleanly.

use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use clerk_sync_core::amqp::{Nodes, Topology, declare_topology};
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::ConnectionProperties;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acks::AckWindow;
use crate::lanes::Lanes;
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
    let mut backoff = backoff::ExponentialBackoff {
        initial_interval: opts.min_backoff,
        current_interval: opts.min_backoff,
        max_interval: opts.max_backoff,
        max_elapsed_time: None,
        ..Default::default()
    };
    loop {
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
    let channel = connection.create_channel().await?;
    declare_topology(&channel, &opts.topology, &opts.retry_delays).await?;
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
    let stop_lanes = shutdown.child_token();
    let lanes =
        Lanes::start(opts.concurrency, processor, &acks, (opts.batch_size, opts.batch_linger), &stop_lanes, tracker);
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
    stop_lanes.cancel();
    drop(lanes);
    if matches!(ended, Ended::Shutdown) {
        let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
        // Let in-flight batches ack on this channel before it closes; unacked prefetched messages
        // then return to the queue.
        tracker.close();
        tracker.wait().await;
        acks.flush().await;
        let _ = channel.close(200, "shutting down".into()).await;
        let _ = connection.close(200, "shutting down".into()).await;
    }
    Ok(ended)
}

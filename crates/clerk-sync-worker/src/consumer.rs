//! Consuming the main queue: one AMQP connection with a prefetch window, batches cut by size or by
//! a short linger, and at most `concurrency` batches in flight (the rest wait, so a stalled
//! database stops the worker from taking more). Reconnects with backoff when the broker goes away.
//! On shutdown it cancels the consumer, lets the batches in hand finish, and closes cleanly.

use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use clerk_sync_core::amqp::{Topology, declare_topology};
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acks::AckWindow;
use crate::process::Processor;

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub url: SecretString,
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
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    loop {
        processor.metrics.set_state("disconnected");
        match consume_once(&opts, &processor, &shutdown, &tracker, &permits, &mut backoff).await {
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
    permits: &Arc<Semaphore>,
    backoff: &mut backoff::ExponentialBackoff,
) -> lapin::Result<Ended> {
    let props = ConnectionProperties::default().with_connection_name("clerk-sync-worker".into());
    let connection =
        tokio::time::timeout(Duration::from_secs(10), Connection::connect(opts.url.expose_secret(), props))
            .await
            .map_err(|_| {
                lapin::Error::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))
            })??;
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
    tracing::info!(queue = %opts.topology.queue(), prefetch = opts.prefetch, "consuming");

    let ended = loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break Ended::Shutdown,
            next = consumer.next() => next,
        };
        let mut batch = match first {
            Some(Ok(d)) => vec![d],
            Some(Err(e)) => break Ended::Lost(e.to_string()),
            None => break Ended::Lost("the consumer was cancelled by the broker".into()),
        };
        let deadline = tokio::time::Instant::now() + opts.batch_linger;
        let mut lost = None;
        while batch.len() < opts.batch_size {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                next = consumer.next() => match next {
                    Some(Ok(d)) => batch.push(d),
                    Some(Err(e)) => { lost = Some(e.to_string()); break }
                    None => { lost = Some("the consumer was cancelled by the broker".into()); break }
                },
            }
        }
        // Waits while `concurrency` batches are in flight: this is what stops intake when the
        // database stalls. The batch in hand is processed even if shutdown starts meanwhile.
        let Ok(permit) = permits.clone().acquire_owned().await else { break Ended::Shutdown };
        let processor = processor.clone();
        let acks = acks.clone();
        tracker.spawn(async move {
            processor.process(batch, &acks).await;
            drop(permit);
        });
        if let Some(reason) = lost {
            break Ended::Lost(reason);
        }
    };
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

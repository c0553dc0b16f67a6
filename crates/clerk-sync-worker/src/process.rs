//! One batch from delivery to acknowledgement: apply the parsed messages in one transaction
//! (falling back to one transaction per message when the batch is refused, so one bad message
//! cannot fail the others), then ack what was committed and settle the rest (retry queue or dead
//! letter). Messages are parsed when they arrive (`Prepared::new`), before their lane needs them.
//!
//! A transient database failure is never a reason to dead-letter: the batch waits, with backoff,
//! and holds its messages unacknowledged until the database is back or shutdown gives up on it
//! (then the broker redelivers them to someone else).

use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use clerk_sync_core::amqp::{self, Publisher, headers};
use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::acks::AckWindow;
use crate::db::{self, ErrorClass, Incoming, Outcome};
use crate::event::{self, ParsedEvent};
use crate::metrics::WorkerMetrics;
use crate::settle::{self, Failure, RetryPolicy, Settled};

pub struct Processor {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub policy: RetryPolicy,
    pub metrics: WorkerMetrics,
    /// Fired when shutdown stops waiting: a batch stuck on the database gives up without acking.
    pub give_up: CancellationToken,
}

/// A delivery and what parsing made of it.
pub struct Prepared {
    pub delivery: Delivery,
    pub ready: Result<Ready, Failure>,
}

impl Prepared {
    pub fn new(delivery: Delivery) -> Self {
        let ready = prepare(&delivery);
        Self { delivery, ready }
    }
}

pub struct Ready {
    pub svix_id: String,
    pub event: ParsedEvent,
    received_at_ms: i64,
}

fn prepare(d: &Delivery) -> Result<Ready, Failure> {
    let svix_id = d
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Failure::permanent("missing_svix_id", "the message has no message_id (svix-id)"))?;
    let event = event::parse(&d.data).map_err(|e| Failure::permanent(e.kind(), e.to_string()))?;
    let received_at_ms =
        amqp::get_i64(d.properties.headers().as_ref(), headers::RECEIVED_AT).unwrap_or_else(amqp::now_ms);
    Ok(Ready { svix_id, event, received_at_ms })
}

impl Processor {
    /// Processes one batch to the end: every delivery is acked, settled, or (only when giving up at
    /// shutdown or when the broker cannot take a dead letter) left for redelivery.
    pub async fn process(&self, batch: Vec<Prepared>, acks: &AckWindow) {
        let started = Instant::now();
        self.metrics.batch_size.observe(batch.len() as f64);
        let mut ready: Vec<(&Delivery, &Ready)> = Vec::with_capacity(batch.len());
        let mut failed: Vec<(&Delivery, Failure)> = Vec::new();
        for p in &batch {
            match &p.ready {
                Ok(r) => ready.push((&p.delivery, r)),
                Err(f) => failed.push((&p.delivery, f.clone())),
            }
        }
        let readies: Vec<&Ready> = ready.iter().map(|(_, r)| *r).collect();
        let Some(results) = self.apply_all(&readies).await else {
            tracing::warn!(messages = batch.len(), "gave up on a batch at shutdown; the broker will redeliver it");
            return;
        };
        let now_s = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let mut settled = Vec::with_capacity(batch.len());
        for ((d, r), result) in ready.into_iter().zip(results) {
            match result {
                Ok(outcome) => {
                    self.count(&r.event.event_type, outcome.as_str());
                    let signed = amqp::get_i64(d.properties.headers().as_ref(), headers::SVIX_TIMESTAMP)
                        .map_or(r.received_at_ms as f64 / 1000.0, |s| s as f64);
                    self.metrics.lag.observe((now_s - signed).max(0.0));
                    settled.push(d);
                }
                Err(f) => failed.push((d, f)),
            }
        }
        for (d, failure) in failed {
            self.settle(d, &failure).await;
            settled.push(d);
        }
        acks.settled(settled).await;
        self.metrics.batch_duration.observe(started.elapsed().as_secs_f64());
    }

    fn count(&self, event_type: &str, outcome: &str) {
        self.metrics.events.with_label_values(&[event::type_label(event_type), outcome]).inc();
    }

    /// Moves a failed message to a retry queue or the dead-letter queue (the caller then acks it),
    /// or, when the broker cannot take it, nacks it back to the queue.
    async fn settle(&self, d: &Delivery, failure: &Failure) {
        let event_type = serde_json::from_slice::<serde_json::Value>(&d.data)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let svix_id = d.properties.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default();
        match settle::settle(&self.publisher, &self.policy, d, failure).await {
            Ok(settled) => {
                let outcome = if settled == Settled::Retried { "retried" } else { "dead_lettered" };
                tracing::warn!(svix_id, event_type, error_kind = %failure.kind, error = %failure.message, outcome, "message not applied");
                self.count(&event_type, outcome);
            }
            Err(e) => {
                // Not lost: back to the queue. Repeated failures hit the queue's delivery limit,
                // which dead-letters through the broker.
                tracing::error!(svix_id, error = %e, "could not settle a failed message; requeueing it");
                let _ = d.nack(BasicNackOptions { multiple: false, requeue: true }).await;
            }
        }
    }

    /// Applies every ready message: the whole batch in one transaction, or one per message if the
    /// batch is refused. `None` if shutdown gave up while the database was unavailable.
    async fn apply_all(&self, ready: &[&Ready]) -> Option<Vec<Result<Outcome, Failure>>> {
        if ready.is_empty() {
            return Some(Vec::new());
        }
        let mut wait = self.transient_backoff();
        loop {
            match self.apply_tx(ready.iter().copied()).await {
                Ok(outcomes) => {
                    self.metrics.set_state_if_paused();
                    return Some(outcomes.into_iter().map(Ok).collect());
                }
                Err(e) if db::classify(&e) == ErrorClass::Transient => self.pause(&e, &mut wait).await?,
                Err(e) => {
                    tracing::info!(error = %e, messages = ready.len(), "batch refused; applying its messages one by one");
                    break;
                }
            }
        }
        let mut results = Vec::with_capacity(ready.len());
        for r in ready {
            loop {
                match self.apply_tx(std::iter::once(*r)).await {
                    Ok(mut outcomes) => {
                        results.push(Ok(outcomes.remove(0)));
                        break;
                    }
                    Err(e) => match db::classify(&e) {
                        ErrorClass::Transient => self.pause(&e, &mut wait).await?,
                        ErrorClass::Permanent => {
                            results.push(Err(Failure::permanent("database_rejected", e.to_string())));
                            break;
                        }
                        ErrorClass::Retryable => {
                            results.push(Err(Failure::retryable("database_error", e.to_string())));
                            break;
                        }
                    },
                }
            }
        }
        Some(results)
    }

    async fn apply_tx<'a>(&self, ready: impl Iterator<Item = &'a Ready>) -> Result<Vec<Outcome>, sqlx::Error> {
        let incoming: Vec<Incoming<'_>> = ready
            .map(|r| Incoming { svix_id: &r.svix_id, event: &r.event, received_at_ms: r.received_at_ms })
            .collect();
        let mut tx = self.pool.begin().await?;
        let outcomes = db::apply_batch(&mut tx, &incoming).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    fn transient_backoff(&self) -> backoff::ExponentialBackoff {
        backoff::ExponentialBackoff {
            initial_interval: Duration::from_millis(100),
            current_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(10),
            max_elapsed_time: None,
            ..Default::default()
        }
    }

    /// Waits out a transient failure; `None` if shutdown gives up first.
    async fn pause(&self, error: &sqlx::Error, wait: &mut backoff::ExponentialBackoff) -> Option<()> {
        self.metrics.transient_errors.inc();
        self.metrics.db_up.set(0);
        self.metrics.set_state("paused");
        let delay = wait.next_backoff().unwrap_or(Duration::from_secs(10));
        tracing::warn!(error = %error, retry_in = ?delay, "database unavailable; holding the batch and retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => Some(()),
            () = self.give_up.cancelled() => None,
        }
    }
}

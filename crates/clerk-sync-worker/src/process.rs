//! One batch from delivery to acknowledgement: apply the parsed messages in one transaction
//! (falling back to one transaction per message when the batch is refused, so one bad message
//! cannot fail the others), then ack what was committed and settle the rest (retry queue or dead
//! letter). Messages are parsed when they arrive (`Prepared::new`), before their lane needs them,
//! into the store's `Event`, which carries them to their outcome.
//!
//! A database outage (`db::ErrorClass::Outage`: unreachable, read-only, refusing our role, our
//! schema missing) is never a reason to dead-letter: the batch waits, with backoff, and holds its
//! messages unacknowledged until the database is back or shutdown gives up on it (then the broker
//! redelivers them to someone else). `DbHealth` logs the pause once, not once per retry.
//!
//! A failed message whose retry or dead-letter copy the broker will not confirm is held and
//! tried again with backoff (`SETTLE_BACKOFF`) before it is nacked back to the queue, so a broker
//! in trouble does not turn it into a tight redelivery loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use clerk_sync_core::amqp::{self, Publisher, headers};
use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use clerk_sync_store::catalogue;
use clerk_sync_store::db::{self, Condition, ErrorClass, Outcome};
use clerk_sync_store::event::{self, Event};

use crate::acks::AckWindow;
use crate::health::DbHealth;
use crate::metrics::WorkerMetrics;
use crate::settle::{self, Backoff as SettleBackoff, Failure, RetryPolicy, Settled};

/// Waits between attempts to settle a failed message while the broker refuses its copy; after
/// the last, it is nacked back to the queue.
pub const SETTLE_BACKOFF: SettleBackoff =
    SettleBackoff { first: Duration::from_millis(200), max: Duration::from_secs(5), attempts: 8 };

pub struct Processor {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub policy: RetryPolicy,
    pub metrics: WorkerMetrics,
    pub health: DbHealth,
    /// Fired when shutdown stops waiting: a batch stuck on the database gives up without acking.
    pub give_up: CancellationToken,
    /// `worker.keep_history`: whether events go to `clerk.event_history`.
    pub keep_history: bool,
    /// Signalled after each commit, for the change feed's sequencer ([`crate::feed::FeedOptions`]).
    pub committed: Arc<tokio::sync::Notify>,
}

/// A delivery and what parsing made of it.
pub struct Prepared {
    pub delivery: Delivery,
    pub event: Result<Event, Failure>,
}

impl Prepared {
    pub fn new(delivery: Delivery) -> Self {
        let event = prepare(&delivery);
        Self { delivery, event }
    }
}

fn prepare(d: &Delivery) -> Result<Event, Failure> {
    let svix_id = d
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Failure::permanent("missing_svix_id", "the message has no message_id (svix-id)"))?;
    let received_at_ms =
        amqp::get_i64(d.properties.headers().as_ref(), headers::RECEIVED_AT).unwrap_or_else(amqp::now_ms);
    let mut event =
        event::parse(&svix_id, received_at_ms, &d.data).map_err(|e| Failure::permanent(e.kind(), e.to_string()))?;
    event.replay_of = amqp::get_str(d.properties.headers().as_ref(), headers::REPLAY_OF);
    Ok(event)
}

impl Processor {
    /// Processes one batch to the end: every delivery is acked, settled, or (only when giving up at
    /// shutdown or when the broker cannot take a dead letter) left for redelivery.
    pub async fn process(&self, mut batch: Vec<Prepared>, acks: &AckWindow) {
        if !self.keep_history {
            // No body, no history row (the store records only events that carry one).
            batch.iter_mut().filter_map(|p| p.event.as_mut().ok()).for_each(|e| e.body = None);
        }
        let started = Instant::now();
        self.metrics.batch_size.observe(batch.len() as f64);
        let mut parsed: Vec<(&Delivery, &Event)> = Vec::with_capacity(batch.len());
        let mut failed: Vec<(&Delivery, Failure)> = Vec::new();
        for p in &batch {
            match &p.event {
                Ok(e) => parsed.push((&p.delivery, e)),
                Err(f) => failed.push((&p.delivery, f.clone())),
            }
        }
        let events: Vec<&Event> = parsed.iter().map(|(_, e)| *e).collect();
        let Some(results) = self.apply_all(&events).await else {
            // Either shutdown stopped waiting or the channel that delivered the batch is gone.
            tracing::warn!(
                messages = batch.len(),
                "gave up on a batch held on the database (shutdown, or its channel was lost); the broker redelivers it"
            );
            return;
        };
        let now_s = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let mut settled = Vec::with_capacity(batch.len());
        for ((d, e), result) in parsed.into_iter().zip(results) {
            match result {
                Ok(outcome) => {
                    self.count(&e.event_type, outcome.as_str());
                    let signed = amqp::get_i64(d.properties.headers().as_ref(), headers::SVIX_TIMESTAMP)
                        .map_or(e.received_at_ms as f64 / 1000.0, |s| s as f64);
                    self.metrics.lag.observe((now_s - signed).max(0.0));
                    settled.push(d);
                }
                Err(f) => failed.push((d, f)),
            }
        }
        let nacked = self.settle_all(failed, &mut settled).await;
        acks.settled(settled, nacked).await;
        self.metrics.batch_duration.observe(started.elapsed().as_secs_f64());
    }

    fn count(&self, event_type: &str, outcome: &str) {
        self.metrics.events.with_label_values(&[catalogue::label(event_type), outcome]).inc();
    }

    /// Moves each failed message to a retry queue or the dead-letter queue (adding it to `settled`,
    /// to be acked). What the broker will not take is tried again with backoff, then nacked back
    /// to the queue and returned; at shutdown what is left is neither (the channel's close returns it).
    async fn settle_all<'a>(
        &self,
        mut failed: Vec<(&'a Delivery, Failure)>,
        settled: &mut Vec<&'a Delivery>,
    ) -> Vec<&'a Delivery> {
        let mut attempt = 0;
        loop {
            let mut refused = Vec::new();
            for (d, failure) in failed {
                match self.settle(d, &failure).await {
                    Ok(()) => settled.push(d),
                    Err(e) => {
                        self.metrics.settle_failures.inc();
                        refused.push((d, failure, e));
                    }
                }
            }
            if refused.is_empty() {
                return Vec::new();
            }
            let Some(delay) = SETTLE_BACKOFF.delay(attempt) else {
                let mut nacked = Vec::with_capacity(refused.len());
                for (d, _, e) in refused {
                    // Not lost: back to the queue, after the backoff above. Repeated failures hit
                    // the queue's delivery limit, which dead-letters through the broker.
                    tracing::error!(svix_id = svix_id(d), error = %e, "could not settle a failed message; requeueing it");
                    if let Err(e) = d.nack(BasicNackOptions { multiple: false, requeue: true }).await {
                        tracing::warn!(error = %e, "nack failed; the message returns when the channel closes");
                    }
                    nacked.push(d);
                }
                return nacked;
            };
            if attempt == 0 {
                tracing::warn!(messages = refused.len(), error = %refused[0].2, "the broker does not take failed messages; retrying with backoff");
            }
            attempt += 1;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.give_up.cancelled() => return Vec::new(),
                () = crate::lanes::channel_gone() => return Vec::new(),
            }
            failed = refused.into_iter().map(|(d, f, _)| (d, f)).collect();
        }
    }

    /// Publishes a failed message's retry or dead-letter copy, confirmed.
    async fn settle(&self, d: &Delivery, failure: &Failure) -> Result<(), amqp::PublishError> {
        let settled = settle::settle(&self.publisher, &self.policy, d, failure).await?;
        let event_type = serde_json::from_slice::<serde_json::Value>(&d.data)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let outcome = if settled == Settled::Retried { "retried" } else { "dead_lettered" };
        tracing::warn!(svix_id = svix_id(d), event_type, error_kind = %failure.kind, error = %failure.message, outcome, "message not applied");
        self.count(&event_type, outcome);
        Ok(())
    }

    /// Applies every parsed message: the whole batch in one transaction, or one per message if the
    /// batch is refused. `None` if shutdown, or the loss of the batch's channel, gave up while the
    /// database was unavailable.
    async fn apply_all(&self, ready: &[&Event]) -> Option<Vec<Result<Outcome, Failure>>> {
        if ready.is_empty() {
            return Some(Vec::new());
        }
        let mut wait = self.transient_backoff();
        loop {
            match self.apply_tx(ready).await {
                Ok(outcomes) => {
                    self.health.recovered();
                    return Some(outcomes.into_iter().map(Ok).collect());
                }
                Err(e) => match db::classify(&e) {
                    ErrorClass::Outage(condition) => self.pause(condition, &e, &mut wait).await?,
                    _ => {
                        tracing::info!(error = %db::setup::explain(&e), messages = ready.len(), "batch refused; applying its messages one by one");
                        break;
                    }
                },
            }
        }
        let mut results = Vec::with_capacity(ready.len());
        for r in ready {
            loop {
                match self.apply_tx(std::slice::from_ref(r)).await {
                    Ok(mut outcomes) => {
                        self.health.recovered();
                        results.push(Ok(outcomes.remove(0)));
                        break;
                    }
                    Err(e) => match db::classify(&e) {
                        ErrorClass::Outage(condition) => self.pause(condition, &e, &mut wait).await?,
                        ErrorClass::Permanent => {
                            results.push(Err(Failure::permanent("database_rejected", db::setup::explain(&e))));
                            break;
                        }
                        ErrorClass::Retryable => {
                            results.push(Err(Failure::retryable("database_error", db::setup::explain(&e))));
                            break;
                        }
                    },
                }
            }
        }
        Some(results)
    }

    async fn apply_tx(&self, events: &[&Event]) -> Result<Vec<Outcome>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let outcomes = db::apply_batch(&mut tx, events).await?;
        tx.commit().await?;
        self.committed.notify_one();
        Ok(outcomes)
    }

    /// Short first waits, so a brief blip (a failover, a restart) costs little; at most 10 s, so a
    /// returning database is noticed soon without hammering one that is still down.
    fn transient_backoff(&self) -> backoff::ExponentialBackoff {
        clerk_sync_core::backoff::exponential(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Waits out an outage; `None` if shutdown gives up first. A conflict (deadlock, serialization)
    /// belongs to this transaction alone: it is retried without declaring the database paused.
    async fn pause(
        &self,
        condition: Condition,
        error: &sqlx::Error,
        wait: &mut backoff::ExponentialBackoff,
    ) -> Option<()> {
        self.metrics.transient_errors.inc();
        if condition != Condition::Conflict {
            self.health.failed(condition, &db::setup::explain(error));
        }
        let delay = wait.next_backoff().unwrap_or(Duration::from_secs(10));
        tracing::debug!(condition = condition.as_str(), error = %db::setup::explain(error), retry_in = ?delay, "holding the batch");
        tokio::select! {
            () = tokio::time::sleep(delay) => Some(()),
            () = self.give_up.cancelled() => None,
            // Its channel is gone: these deliveries can no longer be acked (see `lanes`).
            () = crate::lanes::channel_gone() => None,
        }
    }
}

fn svix_id(d: &Delivery) -> &str {
    d.properties.message_id().as_ref().map_or("", |s| s.as_str())
}

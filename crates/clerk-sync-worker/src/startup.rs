//! Building and running the worker (`Application::build`, `admin_port`, `run_until_stopped`),
//! shared by `main` and the tests: the consumer, the publisher for retries and dead letters, the
//! admin listener, and two housekeeping tasks (database health, pruning old dedup rows).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use anyhow::Context;
use backoff::backoff::Backoff;
use clerk_sync_core::admin;
use clerk_sync_core::amqp::{Nodes, Publisher, PublisherOptions, Topology};
use clerk_sync_core::settings::Settings;
use prometheus::Registry;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::consumer::{self, ConsumerOptions};
use crate::health::DbHealth;
use crate::metrics::WorkerMetrics;
use crate::process::Processor;
use crate::settle::RetryPolicy;
use clerk_sync_store::db::{self, SchemaError};

pub struct Application {
    admin_port: u16,
    admin: Server,
    processor: Arc<Processor>,
    consumer: ConsumerOptions,
    shutdown: CancellationToken,
    shutdown_timeout: Duration,
    retention: Duration,
    feed: crate::feed::FeedOptions,
}

/// Waits until the database is reachable and its schema is new enough: a worker started before
/// the database, or before `migrate` ran, waits (unready) instead of crash-looping. One log line
/// per change of what it waits for.
async fn wait_for_schema(pool: &PgPool, health: &DbHealth) -> anyhow::Result<()> {
    let mut wait = clerk_sync_core::backoff::exponential(Duration::from_millis(500), Duration::from_secs(60));
    loop {
        match db::check_schema(pool).await {
            Ok(()) => {
                health.recovered();
                return Ok(());
            }
            Err(e @ SchemaError::Outdated(_)) => health.failed(db::Condition::SchemaMissing, &e.to_string()),
            Err(SchemaError::Database(e)) => match db::classify(&e) {
                db::ErrorClass::Outage(condition) => health.failed(condition, &db::setup::explain(&e)),
                _ => return Err(SchemaError::Database(e).into()),
            },
        }
        tokio::time::sleep(wait.next_backoff().unwrap_or(Duration::from_secs(10))).await;
    }
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let metrics = WorkerMetrics::register(&registry).context("registering metrics")?;
        let pool = db::pool(&settings.database, "clerk-sync-worker").context("database.url")?;
        let health = DbHealth::new(metrics.clone());

        let publisher = Publisher::start(PublisherOptions::from_settings(settings, "clerk-sync-worker"));
        let topology = Topology::from_settings(&settings.amqp);
        let w = &settings.worker;
        let consumer = ConsumerOptions {
            nodes: Arc::new(Nodes::from_settings(&settings.amqp)),
            topology,
            retry_delays: w.retry_delays.clone(),
            prefetch: w.prefetch,
            batch_size: w.batch_size,
            batch_linger: w.batch_linger,
            concurrency: w.concurrency,
            min_backoff: settings.amqp.reconnect_min_backoff,
            max_backoff: settings.amqp.reconnect_max_backoff,
        };
        let feed = crate::feed::FeedOptions::from_settings(settings, pool.clone(), &registry)
            .context("registering metrics")?;
        let processor = Arc::new(Processor {
            pool,
            publisher,
            policy: RetryPolicy { max_attempts: w.max_attempts, delays: w.retry_delays.clone() },
            metrics: metrics.clone(),
            health,
            give_up: CancellationToken::new(),
            keep_history: w.keep_history,
            committed: feed.committed.clone(),
        });

        let listener = TcpListener::bind(w.admin_listen)
            .with_context(|| format!("binding worker.admin_listen {}", w.admin_listen))?;
        let admin_port = listener.local_addr()?.port();
        let ready: admin::ReadinessCheck = {
            let metrics = metrics.clone();
            Arc::new(move || match (metrics.state(), metrics.db_up.get()) {
                ("consuming", 1) => Ok(()),
                (_, 0) => Err("database unreachable".to_owned()),
                (state, _) => Err(format!("consumer {state}")),
            })
        };
        let details: admin::ReadinessDetails = {
            let (metrics, nodes, publisher) = (metrics.clone(), consumer.nodes.clone(), processor.publisher.clone());
            Arc::new(move || {
                // The consumer's node while it has a channel; the publisher (retries, dead letters)
                // may be on another.
                let connected = !matches!(metrics.state(), "disconnected" | "stopped");
                let mut details = serde_json::Map::new();
                details.insert("amqp_node".into(), connected.then(|| nodes.current()).flatten().into());
                details.insert("publisher_node".into(), publisher.node().into());
                details
            })
        };
        let admin = admin::serve_with_details(listener, registry, ready, Some(details))?;
        Ok(Self {
            admin_port,
            admin,
            processor,
            consumer,
            shutdown: CancellationToken::new(),
            shutdown_timeout: w.shutdown_timeout,
            retention: w.event_retention,
            feed,
        })
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Cancelling it stops the worker as SIGTERM would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn pool(&self) -> &PgPool {
        &self.processor.pool
    }

    /// Waits (serving health and metrics, unready) until the database is reachable and migrated,
    /// then consumes until SIGTERM/SIGINT or the shutdown token; then cancels the consumer, lets
    /// the batches in hand commit and ack (giving up after `worker.shutdown_timeout`), and closes.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let admin_handle = self.admin.handle();
        let admin = tokio::spawn(self.admin);
        let schema = tokio::select! {
            r = wait_for_schema(&self.processor.pool, &self.processor.health) => Some(r),
            () = clerk_sync_core::shutdown::signal() => None,
            () = self.shutdown.cancelled() => None,
        };
        if !matches!(schema, Some(Ok(()))) {
            self.processor.publisher.close().await;
            self.processor.pool.close().await;
            admin_handle.stop(true).await;
            let _ = admin.await;
            return schema.unwrap_or(Ok(()));
        }
        self.processor.metrics.db_up.set(1);
        self.processor.metrics.set_state("disconnected");
        let tracker = TaskTracker::new();
        let mut consumer = tokio::spawn(consumer::run(
            self.consumer.clone(),
            self.processor.clone(),
            self.shutdown.clone(),
            tracker.clone(),
        ));
        let housekeeping = tokio::spawn(housekeeping(self.processor.clone(), self.retention, self.shutdown.clone()));
        // The change feed's leader election, sequencer and relay (feed/).
        let feed = tokio::spawn(crate::feed::run(self.feed.clone(), self.shutdown.clone()));
        tracing::info!(admin_port = self.admin_port, "worker running");

        tokio::select! {
            () = clerk_sync_core::shutdown::signal() => {}
            () = self.shutdown.cancelled() => {}
            _ = &mut consumer => {}
        }
        tracing::info!("shutting down: finishing the batches in hand");
        self.shutdown.cancel();
        let give_up = self.processor.give_up.clone();
        let timeout = self.shutdown_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            give_up.cancel();
        });
        let _ = consumer.await;
        tracker.close();
        tracker.wait().await;
        timer.abort();
        let _ = housekeeping.await;
        let _ = feed.await;
        self.processor.publisher.close().await;
        self.processor.pool.close().await;
        admin_handle.stop(true).await;
        let _ = admin.await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Database health for readiness and gauges (every 2 s: the probe sees a read-only session or a
/// missing schema while no batch is running, and ends a pause while idle), and pruning of `webhook_events` rows
/// older than the retention (every 10 minutes, in chunks so no long lock is held).
async fn housekeeping(processor: Arc<Processor>, retention: Duration, shutdown: CancellationToken) {
    let mut health = tokio::time::interval(Duration::from_secs(2));
    let mut prune = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = health.tick() => {
                let pool = &processor.pool;
                processor.health.probe(pool).await;
                processor.metrics.db_pool_size.set(i64::from(pool.size()));
                processor.metrics.db_pool_idle.set(i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
            }
            _ = prune.tick() => {
                match prune_events(&processor.pool, retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "pruned old webhook_events rows"),
                    Err(e) => tracing::warn!(error = %e, "pruning webhook_events failed; will retry"),
                }
                crate::history::maintain(&processor.pool, retention, &processor.metrics).await;
            }
        }
    }
}

/// Deletes `webhook_events` rows received longer ago than `retention`, 10,000 at a time.
pub async fn prune_events(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM clerk.webhook_events WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM clerk.webhook_events WHERE received_at < $1 LIMIT 10000))",
        )
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < 10_000 {
            return Ok(total);
        }
    }
}

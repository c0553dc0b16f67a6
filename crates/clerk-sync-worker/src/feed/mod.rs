//! The change feed's leader (docs/change-feed.md): one worker at a time, across every worker on
//! the database, runs the sequencer (gives committed changes their positions, migration 10), the
//! relay ([`relay`]: publishes them to `<prefix>.changes`) and the feed's retention. The
//! sequencer runs on the locked connection and the relay beside it on a second connection, so a
//! slow relay round (confirms) never delays a change's position and notification.
//!
//! Leadership is a session advisory lock on a connection of its own: whoever holds it leads; the
//! others try again every `standby_poll`. When the leader dies (SIGKILL, crash, lost network) its
//! session ends, Postgres releases the lock and a standby takes over within one poll. A database
//! error ends the leadership (the connection is dropped with its lock) and the loop starts over; a
//! broker error does not: positions keep being given (readers of the cursor do not depend on the
//! broker) and the relay retries with backoff from its stored progress.

pub mod metrics;
pub mod relay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clerk_sync_core::amqp::Nodes;
use clerk_sync_store::feed;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// The advisory lock of the feed's leadership (`pg_try_advisory_lock(bigint)`; "clerkfee" in ASCII).
pub const LEADER_LOCK: i64 = 0x636c_6572_6b66_6565;

/// Most changes one sequencer round positions, and one relay round publishes.
const ROUND_ROWS: i32 = 10_000;
const RELAY_ROWS: i64 = 2_000;
/// How often the leader prunes changes older than the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct FeedOptions {
    pub pool: PgPool,
    /// The relay's confirm timeout (`amqp.confirm_timeout`), per round.
    pub confirm_timeout: Duration,
    pub nodes: Arc<Nodes>,
    /// `<prefix>.changes`.
    pub exchange: String,
    /// Changes are kept this long (`worker.event_retention`, as the dedup rows).
    pub retention: Duration,
    /// How often the leader looks for changes to position while idle (also the bound on the
    /// commit-to-notification latency it adds).
    pub poll: Duration,
    /// How often a standby tries to take the lead.
    pub standby_poll: Duration,
    /// Signalled after each commit of this worker's batches: the leader's sequencer starts a round
    /// at once rather than at the next poll (other workers' commits are found by the poll).
    pub committed: Arc<tokio::sync::Notify>,
    pub metrics: metrics::FeedMetrics,
}

impl FeedOptions {
    pub fn from_settings(
        settings: &clerk_sync_core::settings::Settings,
        pool: PgPool,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Self> {
        Ok(Self {
            pool,
            confirm_timeout: settings.amqp.confirm_timeout.max(Duration::from_secs(10)),
            nodes: Arc::new(Nodes::from_settings(&settings.amqp)),
            exchange: exchange(&settings.amqp.prefix),
            retention: settings.worker.event_retention,
            poll: Duration::from_millis(10),
            standby_poll: Duration::from_secs(1),
            committed: Arc::new(tokio::sync::Notify::new()),
            metrics: metrics::FeedMetrics::register(registry)?,
        })
    }
}

/// The topic exchange the relay publishes to.
pub fn exchange(prefix: &str) -> String {
    format!("{prefix}.changes")
}

/// Runs until `shutdown`: standby, and leader whenever it holds the lock.
pub async fn run(opts: FeedOptions, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match lead(&opts, &shutdown).await {
            Ok(true) => tracing::info!("change feed: leadership released"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "change feed: leader lost its database connection; trying again"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(opts.standby_poll) => {}
        }
    }
}

/// Tries to take the lead; leads until shutdown or a database error. `Ok(false)`: another worker
/// leads, or the database cannot be reached (the worker's health reports that, once; a standby
/// retrying every second must not log each attempt).
async fn lead(opts: &FeedOptions, shutdown: &CancellationToken) -> Result<bool, sqlx::Error> {
    let attempt = async {
        let mut conn = PgConnection::connect_with(&opts.pool.connect_options()).await?;
        let leader: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(&mut conn).await?;
        Ok::<_, sqlx::Error>((conn, leader))
    };
    let (mut conn, leader) = match attempt.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "change feed: cannot try for the lead");
            return Ok(false);
        }
    };
    if !leader {
        let _ = conn.close().await;
        return Ok(false);
    }
    tracing::info!(exchange = %opts.exchange, "change feed: this worker leads (sequencer and relay)");
    let mut relay = relay::Relay::new(opts.nodes.clone(), opts.exchange.clone(), opts.confirm_timeout);
    opts.metrics.leader.set(1);
    let led = lead_with(opts, shutdown, &mut conn, &mut relay).await;
    opts.metrics.leader.set(0);
    relay.close().await;
    led?;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LEADER_LOCK).execute(&mut conn).await;
    let _ = conn.close().await;
    Ok(true)
}

/// The leader's work until shutdown or a database error: the sequencer (and the retention) on the
/// locked connection, the relay on a second connection of its own, side by side. Apart, because
/// a relay round (reading up to `RELAY_ROWS` changes, publishing them, awaiting every confirm)
/// takes several times a sequencer round: in one loop a change committed during a relay round
/// waited for its end before it got a position and its notification (`docs/benchmarks.md`, the
/// change feed's latency). The relay is woken by each round's last position, and polls too.
/// Either loop's database error ends both (and with them the leadership).
async fn lead_with(
    opts: &FeedOptions,
    shutdown: &CancellationToken,
    conn: &mut PgConnection,
    relay: &mut relay::Relay,
) -> Result<(), sqlx::Error> {
    let (last, relayed): (i64, i64) =
        sqlx::query_as("SELECT last_position, relayed_position FROM clerk.change_feed_state")
            .fetch_one(&mut *conn)
            .await?;
    opts.metrics.last_position.set(last);
    opts.metrics.relayed_position.set(relayed);
    let mut relay_conn = PgConnection::connect_with(&opts.pool.connect_options()).await?;
    let (positioned, woken) = tokio::sync::watch::channel(last);
    // An error in either ends the other at once (dropped mid-statement: its connection goes with
    // it); at shutdown each finishes its round, so the relay stores what it has published.
    let led = {
        let sequencer = sequence_loop(opts, shutdown, conn, positioned);
        let relaying = relay_loop(opts, shutdown, &mut relay_conn, relay, relayed, woken);
        tokio::pin!(sequencer, relaying);
        tokio::select! {
            r = &mut sequencer => match r { Ok(()) => relaying.await, Err(e) => Err(e) },
            r = &mut relaying => match r { Ok(()) => sequencer.await, Err(e) => Err(e) },
        }
    };
    if led.is_ok() {
        let _ = relay_conn.close().await;
    }
    led
}

/// Sequencer rounds back to back while there is something to position; otherwise after this
/// worker's next commit or `poll`, whichever comes first. A round is one call that returns at once
/// when nothing waits (migration 23): on a loaded machine every round trip waits for a CPU twice.
/// Each round's last position goes to the relay. The retention runs here too (it uses the pool).
async fn sequence_loop(
    opts: &FeedOptions,
    shutdown: &CancellationToken,
    conn: &mut PgConnection,
    positioned: tokio::sync::watch::Sender<i64>,
) -> Result<(), sqlx::Error> {
    let mut last_prune: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        let mut busy = false;
        let started = Instant::now();
        if let Some(last) = feed::sequence(&mut *conn, ROUND_ROWS).await? {
            opts.metrics.round.observe(started.elapsed().as_secs_f64());
            opts.metrics.last_position.set(last);
            positioned.send_replace(last);
            busy = true;
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            let cutoff =
                chrono::Utc::now() - chrono::Duration::from_std(opts.retention).unwrap_or(chrono::Duration::MAX);
            match feed::prune(&opts.pool, cutoff, true).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "pruned old clerk.changes rows"),
                Err(e) => tracing::warn!(error = %e, "pruning clerk.changes failed; will retry"),
            }
        }
        if !busy {
            tokio::select! {
                () = shutdown.cancelled() => {}
                // A commit during the round left a permit: the next round starts at once.
                () = opts.committed.notified() => {}
                () = tokio::time::sleep(opts.poll) => {}
            }
        }
    }
    Ok(())
}

/// Relay rounds from the stored progress: back to back while they publish, else at the next
/// position the sequencer gives or after `poll` (positions given by another caller of
/// `clerk.sequence_changes` are found too).
async fn relay_loop(
    opts: &FeedOptions,
    shutdown: &CancellationToken,
    conn: &mut PgConnection,
    relay: &mut relay::Relay,
    mut relayed: i64,
    mut woken: tokio::sync::watch::Receiver<i64>,
) -> Result<(), sqlx::Error> {
    while !shutdown.is_cancelled() {
        let mut busy = false;
        relay.keep_connected().await;
        woken.mark_unchanged();
        let started = Instant::now();
        let changes =
            if relay.ready() { feed::after(&mut *conn, relayed, None, RELAY_ROWS).await? } else { Vec::new() };
        if let Some(last) = changes.last().map(|c| c.position) {
            if relay.publish(&changes).await {
                sqlx::query("UPDATE clerk.change_feed_state SET relayed_position = $1, relayed_at = now()")
                    .bind(last)
                    .execute(&mut *conn)
                    .await?;
                relayed = last;
                opts.metrics.relay_round.observe(started.elapsed().as_secs_f64());
                opts.metrics.relayed_position.set(last);
                busy = true;
            } else {
                opts.metrics.relay_failures.inc();
            }
        }
        if !busy {
            tokio::select! {
                () = shutdown.cancelled() => {}
                // An error means the sequencer is gone: the select in `lead_with` ends this loop.
                _ = woken.changed() => {}
                () = tokio::time::sleep(opts.poll) => {}
            }
        }
    }
    Ok(())
}

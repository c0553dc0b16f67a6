//! A publisher that only reports success once RabbitMQ has confirmed the message.
//!
//! A supervisor task owns the connection: it connects to one of the broker's nodes ([`Nodes`]: the
//! next one after a loss), declares the topology, opens several
//! confirm-mode channels (so concurrent publishes pipeline instead of queueing behind one another),
//! and when the connection fails it drops it and reconnects with exponential backoff and jitter.
//! While there is no connection, [`Publisher::publish`] fails at once with
//! [`PublishError::Unavailable`] rather than waiting: the caller (the gateway) answers 503 and Svix
//! retries. A confirm that does not arrive in time fails the publish and, since a silent broker
//! usually means a dead TCP path, also makes the supervisor reconnect.
//!
//! A publish never reports success without the broker's confirm: when the connection is lost with
//! confirms outstanding, lapin fails each of them with the connection's error (and a confirm that
//! never comes fails at `confirm_timeout`), so the caller answers 503 and Svix sends again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use backoff::backoff::Backoff;
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use prometheus::IntGauge;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::nodes::Nodes;
use super::topology::{Topology, declare_topology_on};

/// Longest declaring the topology and opening the channels may take on a fresh connection (the
/// handshake itself has the nodes' connect timeout).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a clean `connection.close` may take on shutdown or teardown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The same for a connection given up as broken, before moving to another node.
const BROKEN_CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// The broker's nodes; the publisher moves to the next one when its node is lost.
    pub nodes: Arc<Nodes>,
    /// Shown in the RabbitMQ management UI, e.g. `clerk-sync-gateway`.
    pub connection_name: String,
    pub topology: Topology,
    pub retry_delays: Vec<Duration>,
    pub channels: usize,
    pub confirm_timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Set to 1 while connected, 0 otherwise.
    pub connected_gauge: Option<IntGauge>,
}

impl PublisherOptions {
    pub fn from_settings(settings: &crate::settings::Settings, connection_name: &str) -> Self {
        Self {
            nodes: Arc::new(Nodes::from_settings(&settings.amqp)),
            connection_name: connection_name.to_owned(),
            topology: Topology::from_settings(&settings.amqp),
            retry_delays: settings.worker.retry_delays.clone(),
            channels: settings.amqp.publisher_channels,
            confirm_timeout: settings.amqp.confirm_timeout,
            min_backoff: settings.amqp.reconnect_min_backoff,
            max_backoff: settings.amqp.reconnect_max_backoff,
            connected_gauge: None,
        }
    }
}

/// One message to publish; `mandatory` is always set, so an unroutable message is an error.
#[derive(Debug)]
pub struct OutgoingMessage<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: BasicProperties,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    Unavailable,
    #[error("the broker did not confirm within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0:?}")]
    Unroutable(String),
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
}

impl PublishError {
    /// A stable, low-cardinality name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout(_) => "confirm_timeout",
            Self::Nacked => "nacked",
            Self::Unroutable(_) => "unroutable",
            Self::Broker(_) => "broker_error",
        }
    }
}

struct Link {
    connection: Connection,
    /// The node, as `host:port`.
    node: String,
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Link {
    fn pick(&self) -> &Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        &self.channels[i]
    }
}

struct Inner {
    opts: PublisherOptions,
    link: RwLock<Option<Arc<Link>>>,
    broken: Notify,
    connected: watch::Sender<bool>,
    cancel: CancellationToken,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// Set once this publisher has declared the topology (see `open_channels`).
    declared: AtomicBool,
}

impl Inner {
    fn current(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, link: Option<Arc<Link>>) {
        let up = link.is_some();
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = link;
        if let Some(g) = &self.opts.connected_gauge {
            g.set(i64::from(up));
        }
        self.connected.send_replace(up);
    }

    /// Asks the supervisor to replace `link`, unless it already has.
    fn report_broken(&self, link: &Arc<Link>) {
        if self.current().is_some_and(|cur| Arc::ptr_eq(&cur, link)) {
            self.broken.notify_one();
        }
    }
}

/// Cheap to clone; every clone shares one connection.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("connected", &self.is_connected()).finish()
    }
}

impl Publisher {
    /// Starts the supervisor; returns at once, connected or not.
    pub fn start(opts: PublisherOptions) -> Self {
        let (connected, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            opts,
            link: RwLock::new(None),
            broken: Notify::new(),
            connected,
            cancel: CancellationToken::new(),
            supervisor: Mutex::new(None),
            declared: AtomicBool::new(false),
        });
        let handle = tokio::spawn(supervise(inner.clone()));
        *inner.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Self { inner }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.opts.topology
    }

    pub fn is_connected(&self) -> bool {
        self.inner.current().is_some()
    }

    /// The node (`host:port`) the publisher is connected to, if it is.
    pub fn node(&self) -> Option<String> {
        self.inner.current().map(|link| link.node.clone())
    }

    /// Waits until connected, up to `timeout`; true if connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|up| *up)).await.is_ok_and(|r| r.is_ok())
    }

    /// Publishes and waits for the broker's confirm. `Ok` means RabbitMQ has taken responsibility
    /// for the message (persisted to a quorum of a routed queue's replicas).
    pub async fn publish(&self, msg: OutgoingMessage<'_>) -> Result<(), PublishError> {
        let link = self.inner.current().ok_or(PublishError::Unavailable)?;
        if link.connection.status().blocked() {
            // A resource alarm: confirms would not come before the timeout anyway.
            return Err(PublishError::Unavailable);
        }
        let channel = link.pick();
        let timeout = self.inner.opts.confirm_timeout;
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let confirm = tokio::time::timeout(timeout, async {
            channel
                .basic_publish(msg.exchange.into(), msg.routing_key.into(), options, msg.body, msg.properties)
                .await?
                .await
        })
        .await;
        match confirm {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable(msg.routing_key.to_owned())),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => {
                // Only possible if a channel lost confirm mode: rebuild rather than trust it.
                self.inner.report_broken(&link);
                Err(PublishError::Unavailable)
            }
            Ok(Err(e)) => {
                self.inner.report_broken(&link);
                Err(PublishError::Broker(e))
            }
            Err(_) => {
                self.inner.report_broken(&link);
                Err(PublishError::Timeout(timeout))
            }
        }
    }

    /// Stops reconnecting and closes the connection cleanly. Call after in-flight publishes are
    /// done (the gateway stops its HTTP server first).
    pub async fn close(&self) {
        self.inner.cancel.cancel();
        let handle = self.inner.supervisor.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

fn backoff_for(opts: &PublisherOptions) -> backoff::ExponentialBackoff {
    crate::backoff::exponential(opts.min_backoff, opts.max_backoff)
}

async fn connect(opts: &PublisherOptions, declared: &AtomicBool) -> lapin::Result<Link> {
    let props = ConnectionProperties::default().with_connection_name(opts.connection_name.clone().into());
    let connected = opts.nodes.connect(props).await?;
    let (connection, node) = (connected.connection, connected.node);
    let setup =
        tokio::time::timeout(SETUP_TIMEOUT, open_channels(&connection, opts, declared)).await.unwrap_or_else(|_| {
            Err(lapin::Error::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "channel setup timed out")))
        });
    match setup {
        Ok(channels) => Ok(Link { connection, node, channels, next: AtomicUsize::new(0) }),
        Err(e) => {
            // Do not leak a half-set-up connection on every retry.
            let _ = tokio::time::timeout(BROKEN_CLOSE_TIMEOUT, connection.close(200, "setup failed".into())).await;
            Err(e)
        }
    }
}

async fn open_channels(
    connection: &Connection,
    opts: &PublisherOptions,
    declared: &AtomicBool,
) -> lapin::Result<Vec<Channel>> {
    // Declaring writes bindings through every cluster node's metadata store, which blocks while
    // any node hangs (a frozen node is not seen down for a minute); a passive check reads only the
    // node we are on. So after the first connection the topology is declared again only if its
    // queue has gone (a broker reset), and a publisher leaving a frozen node queues again at once.
    if !(declared.load(Ordering::Relaxed) && queue_exists(connection, &opts.topology.queue()).await) {
        declare(connection, opts).await?;
        declared.store(true, Ordering::Relaxed);
    }
    let mut channels = Vec::with_capacity(opts.channels.max(1));
    for _ in 0..opts.channels.max(1) {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(channel);
    }
    Ok(channels)
}

async fn declare(connection: &Connection, opts: &PublisherOptions) -> lapin::Result<()> {
    declare_topology_on(connection, &opts.topology, &opts.retry_delays).await?;
    Ok(())
}

/// Whether `queue` exists, asked of the node the connection is on.
async fn queue_exists(connection: &Connection, queue: &str) -> bool {
    let Ok(channel) = connection.create_channel().await else { return false };
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    // A missing queue closes the channel (404): nothing to clean up then.
    let exists = channel.queue_declare(queue.into(), passive, FieldTable::default()).await.is_ok();
    if exists {
        let _ = channel.close(200, "checked".into()).await;
    }
    exists
}

async fn supervise(inner: Arc<Inner>) {
    let mut backoff = backoff_for(&inner.opts);
    let name = inner.opts.connection_name.clone();
    loop {
        let attempt = tokio::select! {
            () = inner.cancel.cancelled() => break,
            r = connect(&inner.opts, &inner.declared) => r,
        };
        match attempt {
            Ok(link) => {
                let link = Arc::new(link);
                let mut events = link.connection.events_listener();
                inner.set(Some(link.clone()));
                backoff.reset();
                tracing::info!(connection = %name, node = %link.node, "connected to RabbitMQ");
                let node = link.node.clone();
                let reason = tokio::select! {
                    () = inner.cancel.cancelled() => None,
                    () = inner.broken.notified() => Some("a publish failed or was not confirmed in time".to_owned()),
                    reason = async {
                        while let Some(event) = events.next().await {
                            if let lapin::Event::Error(e) = event {
                                return e.to_string();
                            }
                        }
                        "connection closed".to_owned()
                    } => Some(reason),
                };
                inner.set(None);
                // A broken link may be on a hung node that never answers the close.
                let close_timeout = if reason.is_some() { BROKEN_CLOSE_TIMEOUT } else { CLOSE_TIMEOUT };
                let _ = tokio::time::timeout(close_timeout, link.connection.close(200, "bye".into())).await;
                match reason {
                    None => break,
                    Some(reason) => {
                        tracing::warn!(connection = %name, %node, %reason, "lost RabbitMQ connection; reconnecting")
                    }
                }
            }
            Err(e) => tracing::warn!(connection = %name, error = %e, "cannot connect to RabbitMQ"),
        }
        let delay = backoff.next_backoff().unwrap_or(inner.opts.max_backoff);
        tokio::select! {
            () = inner.cancel.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    inner.set(None);
    tracing::info!(connection = %name, "RabbitMQ publisher closed");
}

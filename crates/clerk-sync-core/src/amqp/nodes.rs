//! The broker's nodes and the one way every process connects to them.
//!
//! `amqp.url` (`AMQP_URL`) names one node or several, separated by commas: the nodes of one
//! RabbitMQ cluster. [`Nodes::connect`] tries them in turn, each within a connect timeout, and
//! returns the first that answers. Each process starts at a random node, so a fleet of gateways and
//! workers spreads over the cluster, and after every attempt the next one starts at the node after
//! the last one used, so a process that lost its node goes to another instead of waiting for that
//! one to come back.
//!
//! Every URL gets a heartbeat (`amqp.heartbeat`) unless it sets its own `?heartbeat=`: a node that
//! hangs (frozen VM, a partition that drops packets) keeps its TCP connections open, and only a
//! missed heartbeat tells us to move on.
//!
//! The URLs hold passwords: logs and `/readyz` name a node by `host:port` only.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

/// One node: the parsed URI (with its password) and how to name it.
#[derive(Clone)]
struct Node {
    uri: AMQPUri,
    address: String,
}

/// The nodes of one broker, with where the next connection attempt starts.
pub struct Nodes {
    nodes: Vec<Node>,
    next: AtomicUsize,
    connect_timeout: Duration,
    /// The node of the last successful connection (`host:port`).
    current: Mutex<Option<String>>,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes").field("addresses", &self.addresses()).finish()
    }
}

/// A live connection and the node (`host:port`) it goes to.
pub struct Connected {
    pub connection: Connection,
    pub node: String,
}

/// Splits a comma-separated list of node URLs and parses each one; on failure, one message per bad
/// URL that names it by position, never by content (it may hold a password).
pub fn parse_list(list: &str) -> Result<Vec<AMQPUri>, Vec<String>> {
    let parts: Vec<&str> = list.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(vec!["needs at least one amqp:// or amqps:// URL".to_owned()]);
    }
    let mut uris = Vec::with_capacity(parts.len());
    let mut problems = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let scheme_ok = part.split_once("://").is_some_and(|(s, _)| s == "amqp" || s == "amqps");
        match part.parse::<AMQPUri>() {
            Ok(uri) if scheme_ok && !uri.authority.host.is_empty() => uris.push(uri),
            _ => problems.push(format!(
                "URL #{} of {} is not an amqp:// or amqps:// URL with a host (user:password@host:port/vhost)",
                i + 1,
                parts.len()
            )),
        }
    }
    if problems.is_empty() { Ok(uris) } else { Err(problems) }
}

impl Nodes {
    /// Parses `list` (see [`parse_list`]); a URL without `?heartbeat=` gets `heartbeat`.
    pub fn parse(list: &str, heartbeat: Duration, connect_timeout: Duration) -> Result<Self, Vec<String>> {
        let heartbeat = u16::try_from(heartbeat.as_secs()).unwrap_or(u16::MAX);
        let nodes: Vec<Node> = parse_list(list)?
            .into_iter()
            .map(|mut uri| {
                if uri.query.heartbeat.is_none() && heartbeat > 0 {
                    uri.query.heartbeat = Some(heartbeat);
                }
                let address = format!("{}:{}", uri.authority.host, uri.authority.port);
                Node { uri, address }
            })
            .collect();
        let start = rand::random_range(0..nodes.len());
        Ok(Self { nodes, next: AtomicUsize::new(start), connect_timeout, current: Mutex::new(None) })
    }

    /// The nodes of a validated configuration.
    ///
    /// # Panics
    /// If `settings.url` is not a valid list: [`crate::settings::Settings::load`] rejects those.
    pub fn from_settings(settings: &crate::settings::AmqpSettings) -> Self {
        Self::from_url(&settings.url, settings.heartbeat, settings.connect_timeout)
    }

    /// As [`Nodes::from_settings`], from the secret list itself.
    ///
    /// # Panics
    /// If `url` is not a valid list.
    pub fn from_url(url: &SecretString, heartbeat: Duration, connect_timeout: Duration) -> Self {
        Self::parse(url.expose_secret(), heartbeat, connect_timeout)
            .unwrap_or_else(|problems| panic!("amqp.url was validated: {}", problems.join("; ")))
    }

    /// Every node as `host:port`, in configuration order.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.address.clone()).collect()
    }

    /// The node of the last successful connection, as `host:port`.
    pub fn current(&self) -> Option<String> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connects to the first node that answers within the connect timeout, starting after the node
    /// used last. Fails with the last node's error when none answers.
    pub async fn connect(&self, properties: ConnectionProperties) -> lapin::Result<Connected> {
        let count = self.nodes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            let node = &self.nodes[index];
            let attempt = tokio::time::timeout(
                self.connect_timeout,
                Connection::connect_uri(node.uri.clone(), properties.clone()),
            )
            .await;
            let error = match attempt {
                Ok(Ok(connection)) => {
                    // The next attempt (after this connection is lost) starts at the next node.
                    self.next.store(index + 1, Ordering::Relaxed);
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(node.address.clone());
                    return Ok(Connected { connection, node: node.address.clone() });
                }
                Ok(Err(e)) => e,
                Err(_) => lapin::Error::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no AMQP handshake within {:?}", self.connect_timeout),
                )),
            };
            if count > 1 {
                tracing::warn!(node = %node.address, error = %error, "cannot connect to this RabbitMQ node; trying the next");
            }
            last_error = Some(error);
        }
        Err(last_error.expect("at least one node"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_comma_separated_list_gives_one_node_per_url_in_order() {
        let nodes = Nodes::parse(
            "amqp://u:p@rabbit-0:5672/%2f, amqp://u:p@rabbit-1:5673/%2f,,amqps://u:p@rabbit-2/prod",
            Duration::from_secs(5),
            HOUR,
        )
        .unwrap();
        assert_eq!(nodes.addresses(), ["rabbit-0:5672", "rabbit-1:5673", "rabbit-2:5671"]);
    }

    #[test]
    fn every_url_gets_the_default_heartbeat_unless_it_sets_its_own() {
        let nodes = Nodes::parse("amqp://a/%2f,amqp://b/%2f?heartbeat=30", Duration::from_secs(5), HOUR).unwrap();
        let beats: Vec<_> = nodes.nodes.iter().map(|n| n.uri.query.heartbeat).collect();
        assert_eq!(beats, [Some(5), Some(30)]);
        let off = Nodes::parse("amqp://a/%2f", Duration::ZERO, HOUR).unwrap();
        assert_eq!(off.nodes[0].uri.query.heartbeat, None, "0 leaves the broker's value");
    }

    #[test]
    fn a_bad_url_in_the_list_is_named_by_position_without_echoing_it() {
        let problems = parse_list("amqp://u:hunter2@ok/%2f,http://u:hunter2@web,amqp://u:hunter2@").unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("URL #2 of 3"), "{problems:?}");
        assert!(problems[1].starts_with("URL #3 of 3"), "{problems:?}");
        assert!(problems.iter().all(|p| !p.contains("hunter2")), "{problems:?}");
        assert!(parse_list(" , ").is_err(), "an empty list is rejected");
    }

    #[test]
    fn the_debug_form_names_nodes_without_their_passwords() {
        let nodes = Nodes::parse("amqp://svc:hunter2@rabbit:5672/%2f", Duration::ZERO, HOUR).unwrap();
        let text = format!("{nodes:?}");
        assert!(text.contains("rabbit:5672") && !text.contains("hunter2"), "{text}");
    }

    #[tokio::test]
    async fn connecting_skips_a_dead_node_and_the_next_attempt_starts_after_the_live_one() {
        // Two closed ports and the test broker: whichever node the random start picks, the
        // connection lands on the live one, and `current` says so.
        let closed = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let live = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let live_uri: AMQPUri = live.parse().unwrap();
        let list = format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f,{live},amqp://guest:guest@127.0.0.1:{}/%2f",
            closed(),
            closed()
        );
        let nodes = Nodes::parse(&list, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        for _ in 0..3 {
            let connected = nodes.connect(ConnectionProperties::default()).await.unwrap();
            let expected = format!("{}:{}", live_uri.authority.host, live_uri.authority.port);
            assert_eq!(connected.node, expected);
            assert_eq!(nodes.current().as_deref(), Some(expected.as_str()));
            let _ = connected.connection.close(200, "test".into()).await;
        }
    }
}

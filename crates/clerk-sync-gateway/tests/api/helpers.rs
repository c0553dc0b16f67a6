//! `spawn_app` and friends: one gateway per test, plus what a test needs to sign requests and to
//! look into its own queues.

use std::time::Duration;

use clerk_sync_core::amqp::Topology;
use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_core::signing;
use clerk_sync_gateway::Application;
use clerk_sync_testkit::{BrokerProbe, amqp_url, unique_prefix};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// Retry queues the tests' topology has (the defaults), so cleanup finds them all.
pub const RETRY_DELAYS: [Duration; 4] =
    [Duration::from_secs(1), Duration::from_secs(10), Duration::from_secs(60), Duration::from_secs(600)];

pub struct TestApp {
    pub address: String,
    pub admin_address: String,
    pub topology: Topology,
    pub probe: BrokerProbe,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A gateway on port 0 with the default test secret and a fresh prefix.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|s| s).await
}

/// Like [`spawn_app`], with extra configuration (environment-style keys) applied on top.
pub async fn spawn_app_with(customize: impl FnOnce(Sources) -> Sources) -> TestApp {
    clerk_sync_core::telemetry::init_for_tests();
    let prefix = unique_prefix("gw");
    let sources = Sources::default()
        .with_env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
        .with_env("AMQP_URL", amqp_url())
        .with_env("CLERK_SYNC__AMQP__PREFIX", &prefix)
        .with_env("CLERK_SYNC__GATEWAY__LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__GATEWAY__ADMIN_LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__GATEWAY__HTTP_WORKERS", "2");
    let settings = Settings::load(&customize(sources), &[]).expect("test configuration is valid");
    let app = Application::build(&settings).await.expect("gateway builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin_address = format!("http://127.0.0.1:{}", app.admin_port());
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());
    let test_app = TestApp {
        address,
        admin_address,
        topology: Topology::new(settings.amqp.prefix.clone(), settings.amqp.delivery_limit),
        probe: BrokerProbe::connect().await,
        client: reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap(),
        shutdown,
        task: Some(task),
    };
    test_app.wait_ready().await;
    test_app
}

/// A realistic, small Clerk envelope.
pub fn user_event(event_type: &str, user_id: &str) -> Vec<u8> {
    serde_json::json!({
        "data": {
            "id": user_id,
            "object": "user",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "primary_email_address_id": "idn_1",
            "email_addresses": [{"id": "idn_1", "email_address": "ada@example.com", "object": "email_address"}],
            "created_at": 1716883200000_i64,
            "updated_at": 1716883200000_i64
        },
        "event_attributes": {"http_request": {"client_ip": "", "user_agent": ""}},
        "instance_id": "ins_test",
        "object": "event",
        "timestamp": 1716883200000_i64,
        "type": event_type
    })
    .to_string()
    .into_bytes()
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn new_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

pub fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    signing::sign(&SecretString::from(secret.to_owned()), id, ts, body).unwrap()
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("{}/webhooks/clerk", self.address)
    }

    /// POSTs `body` signed now with the test secret under a fresh svix-id; returns (id, response).
    pub async fn post_signed(&self, body: &[u8]) -> (String, reqwest::Response) {
        let id = new_id();
        let response = self.post_signed_as(&id, SECRET, now(), body).await;
        (id, response)
    }

    pub async fn post_signed_as(&self, id: &str, secret: &str, ts: i64, body: &[u8]) -> reqwest::Response {
        let signature = sign(secret, id, ts, body);
        self.client
            .post(self.webhook_url())
            .header("svix-id", id)
            .header("svix-timestamp", ts.to_string())
            .header("svix-signature", signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("request reaches the gateway")
    }

    pub async fn wait_ready(&self) {
        let client = self.client.clone();
        let url = format!("{}/readyz", self.admin_address);
        clerk_sync_testkit::wait_until(Duration::from_secs(20), "the gateway is ready", || {
            let (client, url) = (client.clone(), url.clone());
            async move { client.get(url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    pub async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.admin_address)).send().await.unwrap().text().await.unwrap()
    }

    pub async fn main_queue_len(&self) -> u32 {
        self.probe.ready_count(&self.topology.queue()).await
    }

    /// Stops the gateway (as SIGTERM would) and deletes the test's queues and exchanges.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.probe.delete_topology(&self.topology, &RETRY_DELAYS).await;
    }
}

/// Reads a response's JSON body.
pub async fn json(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).expect("a JSON body")
}

/// One request written by hand on its own connection, to control which bytes arrive and when:
/// the head now, the body later, or never.
pub struct RawRequest {
    stream: tokio::net::TcpStream,
}

/// What came back on a [`RawRequest`]'s connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// How the body of a [`RawRequest`] is framed.
pub enum Framing {
    Length(usize),
    Chunked,
}

/// The svix headers of a request nobody can authenticate: fresh and well formed, signed with a
/// secret the gateway does not hold.
pub fn forged_headers() -> Vec<(&'static str, String)> {
    let id = new_id();
    let ts = now();
    let signature = sign(OTHER_SECRET, &id, ts, b"whatever");
    vec![("svix-id", id), ("svix-timestamp", ts.to_string()), ("svix-signature", signature)]
}

impl TestApp {
    /// Connects and writes a POST head with `headers` and `framing`, and no body yet.
    pub async fn raw_request(&self, headers: &[(&str, String)], framing: Framing) -> RawRequest {
        use tokio::io::AsyncWriteExt;
        let addr = self.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connects to the gateway");
        let mut head =
            String::from("POST /webhooks/clerk HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        match framing {
            Framing::Length(n) => head.push_str(&format!("Content-Length: {n}\r\n\r\n")),
            Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n\r\n"),
        }
        stream.write_all(head.as_bytes()).await.expect("the head is written");
        RawRequest { stream }
    }

    /// The bytes of body the gateway holds in memory right now, from its metrics.
    pub async fn buffered_body_bytes(&self) -> u64 {
        let metrics = self.metrics().await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("clerk_sync_gateway_buffered_body_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .expect("the gateway exports clerk_sync_gateway_buffered_body_bytes")
    }
}

impl RawRequest {
    /// Sends raw body bytes (for `Framing::Length`). Errors once the gateway has closed.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    /// Sends one chunk of a chunked body.
    pub async fn send_chunk(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
        framed.extend_from_slice(bytes);
        framed.extend_from_slice(b"\r\n");
        self.send(&framed).await
    }

    /// The response, if one arrives within `within`.
    pub async fn response(&mut self, within: Duration) -> Option<RawResponse> {
        use tokio::io::AsyncReadExt;
        let read = async {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                        return Some(RawResponse { status, head, body });
                    }
                }
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(within, read).await.ok().flatten()
    }
}

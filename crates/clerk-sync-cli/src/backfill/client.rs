//! A small client for Clerk's Backend API list endpoints: bearer auth, limit/offset pages, 429
//! answered by waiting `Retry-After`, server errors retried with backoff.

use std::time::Duration;

use backoff::backoff::Backoff;
use secrecy::{ExposeSecret, SecretString};
use serde_json::value::RawValue;

/// Most attempts for one page before giving up (the run can be resumed).
const MAX_ATTEMPTS: u32 = 8;

pub struct ClerkApi {
    http: reqwest::Client,
    base: String,
    key: SecretString,
}

/// The organization endpoints answer `{ "data": [...], "total_count": n }`; `GET /v1/users`
/// answers a bare array. (Told apart by hand: serde's untagged enums cannot hold raw values.)
#[derive(serde::Deserialize)]
struct Wrapped {
    data: Vec<Box<RawValue>>,
    #[serde(default)]
    total_count: Option<u64>,
}

fn parse_page(bytes: &[u8]) -> Result<Fetched, serde_json::Error> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        Ok(Fetched { objects: serde_json::from_slice(bytes)?, total: None })
    } else {
        let w: Wrapped = serde_json::from_slice(bytes)?;
        Ok(Fetched { objects: w.data, total: w.total_count })
    }
}

pub struct Fetched {
    pub objects: Vec<Box<RawValue>>,
    pub total: Option<u64>,
}

impl ClerkApi {
    pub fn new(base: &str, key: SecretString) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("clerk-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), key })
    }

    /// One page; waits out rate limits and transient failures.
    pub async fn page(&self, path: &str, limit: u32, offset: u32) -> anyhow::Result<Fetched> {
        let url = format!("{}{path}", self.base);
        let mut wait = backoff::ExponentialBackoff {
            initial_interval: Duration::from_millis(500),
            max_elapsed_time: None,
            ..Default::default()
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .get(format!("{url}?limit={limit}&offset={offset}&order_by=%2Bcreated_at"))
                .bearer_auth(self.key.expose_secret())
                .send()
                .await;
            let delay = match sent {
                Ok(r) if r.status().is_success() => {
                    let bytes = r.bytes().await?;
                    return parse_page(&bytes).map_err(|e| anyhow::anyhow!("unexpected answer from {url}: {e}"));
                }
                Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    let secs = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(1);
                    tracing::info!(retry_after = secs, "rate limited by Clerk; waiting");
                    Duration::from_secs(secs)
                }
                Ok(r)
                    if r.status() == reqwest::StatusCode::UNAUTHORIZED
                        || r.status() == reqwest::StatusCode::FORBIDDEN =>
                {
                    anyhow::bail!("Clerk refused the secret key ({}); check CLERK_SECRET_KEY", r.status());
                }
                Ok(r) if r.status().is_server_error() => {
                    tracing::warn!(status = %r.status(), "Clerk API error; retrying");
                    wait.next_backoff().unwrap_or(Duration::from_secs(30))
                }
                Ok(r) => anyhow::bail!("Clerk answered {} for {url}", r.status()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach Clerk; retrying");
                    wait.next_backoff().unwrap_or(Duration::from_secs(30))
                }
            };
            anyhow::ensure!(attempt < MAX_ATTEMPTS, "giving up on {url} after {attempt} attempts; rerun to resume");
            tokio::time::sleep(delay).await;
        }
    }
}

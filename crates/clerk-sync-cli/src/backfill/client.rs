//! A small client for Clerk's Backend API (backfill and reconcile): bearer auth, limit/offset pages
//! and single objects, 429 answered by waiting `Retry-After`, server errors retried with backoff,
//! and an optional token bucket shared by every request of a run so that a run stays within
//! Clerk's rate limits and leaves room for the application's own calls.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use secrecy::{ExposeSecret, SecretString};
use serde_json::value::RawValue;

/// Most attempts for one page before giving up (the run can be resumed).
const MAX_ATTEMPTS: u32 = 8;

pub struct ClerkApi {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    bucket: Option<TokenBucket>,
    requests: AtomicU64,
    rate_limited: AtomicU64,
}

/// Requests per second with a burst of one second's worth. A request that finds the bucket empty
/// reserves its token anyway and sleeps until it is due, so concurrent callers queue fairly.
struct TokenBucket {
    rate: f64,
    /// Tokens available (negative: reserved ahead) as of the instant.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        Self { rate, state: Mutex::new((rate.max(1.0), Instant::now())) }
    }

    async fn take(&self) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let burst = self.rate.max(1.0);
            state.0 = (state.0 + now.duration_since(state.1).as_secs_f64() * self.rate).min(burst);
            state.1 = now;
            state.0 -= 1.0;
            if state.0 >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-state.0 / self.rate) }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
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
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            bucket: None,
            requests: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        })
    }

    /// Spends at most `per_second` requests a second, across every caller of this client.
    pub fn with_rate(mut self, per_second: f64) -> Self {
        self.bucket = (per_second > 0.0).then(|| TokenBucket::new(per_second));
        self
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests Clerk answered 429.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// One object by its path (`/v1/users/<id>`); `None` when Clerk answers 404 (it does not exist).
    pub async fn object(&self, path: &str) -> anyhow::Result<Option<Box<RawValue>>> {
        match self.get(&format!("{}{path}", self.base), true).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("unexpected answer from {path}: {e} (expected a JSON object)")),
        }
    }

    /// One page of `path` (which may carry a query of its own, `/v1/sessions?user_id=...`);
    /// `ordered` asks for creation order (not every endpoint takes `order_by`); `None` on a 404
    /// when `not_found_ok`.
    pub async fn list_page(
        &self,
        path: &str,
        limit: u32,
        offset: u32,
        ordered: bool,
        not_found_ok: bool,
    ) -> anyhow::Result<Option<Fetched>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let order = if ordered { "&order_by=%2Bcreated_at" } else { "" };
        let url = format!("{}{path}{sep}limit={limit}&offset={offset}{order}", self.base);
        match self.get(&url, not_found_ok).await? {
            None => Ok(None),
            Some(bytes) => parse_page(&bytes).map(Some).map_err(|e| {
                anyhow::anyhow!("unexpected answer from {url}: {e} (expected a JSON array or {{\"data\": [...]}})")
            }),
        }
    }

    /// A GET with retries; `None` for a 404 when `not_found_ok`.
    async fn get(&self, url: &str, not_found_ok: bool) -> anyhow::Result<Option<Vec<u8>>> {
        let mut wait = clerk_sync_core::backoff::exponential(Duration::from_millis(500), Duration::from_secs(60));
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(bucket) = &self.bucket {
                bucket.take().await;
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self.http.get(url).bearer_auth(self.key.expose_secret()).send().await;
            let delay = match sent {
                Ok(r) if r.status().is_success() => return Ok(Some(r.bytes().await?.to_vec())),
                Ok(r) if not_found_ok && r.status() == reqwest::StatusCode::NOT_FOUND => return Ok(None),
                Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    self.rate_limited.fetch_add(1, Ordering::Relaxed);
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

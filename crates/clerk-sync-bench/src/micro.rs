//! The two hot paths in isolation, shared by the Criterion benches (`cargo bench -p
//! clerk-sync-bench`) and by `clerk-sync-bench all`, which times them with a plain loop so the
//! table carries the figure without a second build profile:
//! - the gateway's per-request work: Svix signature verification plus envelope parsing of a 2 KB
//!   event (`Verifier::verify` + `envelope::parse_head`, as `routes/webhook.rs` calls them);
//! - building a batch: the worker's own code for 128 messages, minus SQL: `event::parse`, the
//!   store's plan builder (`Plan::build`) and the `jsonb` arguments it sends (`Rows`, serialized).

use std::hint::black_box;
use std::time::{Duration, Instant};

use clerk_sync_core::envelope;
use clerk_sync_core::signing::{self, Verifier};
use clerk_sync_store::db::plan::Plan;
use clerk_sync_store::db::resources::Rows;
use clerk_sync_store::event::{self, Event};
use secrecy::SecretString;
use serde::Serialize;

use crate::corpus::{Template, event};
use crate::workload::Message;

/// A signed 2 KB `user.updated` request as the gateway receives it.
pub struct VerifyFixture {
    pub verifier: Verifier,
    pub body: Vec<u8>,
    pub headers: http::HeaderMap,
}

impl VerifyFixture {
    pub fn new() -> anyhow::Result<Self> {
        let secret: SecretString = crate::env::new_secret();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let body = Template::new("user.updated", &event("user.updated", 42, 0), now_ms).render(now_ms);
        let id = "msg_2benchMicro000000000000000";
        let signature = signing::sign(&secret, id, now_ms / 1000, &body)?;
        let mut headers = http::HeaderMap::new();
        headers.insert("svix-id", http::HeaderValue::from_static(id));
        headers.insert("svix-timestamp", http::HeaderValue::from_str(&(now_ms / 1000).to_string())?);
        headers.insert("svix-signature", http::HeaderValue::from_str(&signature)?);
        Ok(Self { verifier: Verifier::new(&[secret])?, body, headers })
    }

    pub fn verify(&self) -> bool {
        self.verifier.verify(black_box(&self.body), black_box(&self.headers)).is_ok()
    }

    pub fn parse(&self) -> bool {
        envelope::parse_head(black_box(&self.body)).is_ok()
    }

    /// What the gateway does with a request's bytes before publishing them.
    pub fn verify_and_parse(&self) -> bool {
        let verified = self.verifier.verify(black_box(&self.body), black_box(&self.headers));
        let head = envelope::parse_head(black_box(&self.body));
        verified.is_ok() && head.is_ok_and(|h| !h.event_type.is_empty())
    }
}

/// Parses `messages`, plans them and serializes the plan's rows: the worker's CPU work per batch,
/// minus SQL. Returns the bytes sent.
pub fn build_batch(messages: &[Message]) -> usize {
    let parsed: Vec<Event> =
        messages.iter().filter_map(|m| event::parse(&m.svix_id, m.received_at_ms, black_box(&m.body)).ok()).collect();
    let batch: Vec<&Event> = parsed.iter().collect();
    let plan = Plan::build(&batch, &vec![true; batch.len()]);
    let rows = Rows::of(&plan);
    [serde_json::to_vec(&rows.organizations), serde_json::to_vec(&rows.users), serde_json::to_vec(&rows.memberships)]
        .into_iter()
        .map(|json| json.map_or(0, |j| j.len()))
        .sum()
}

#[derive(Debug, Clone, Serialize)]
pub struct MicroReport {
    pub body_bytes: usize,
    /// Median over rounds of the mean per call, in microseconds.
    pub verify_parse_us: f64,
    pub verify_us: f64,
    pub parse_us: f64,
    pub batch_size: usize,
    pub build_batch_us: f64,
    pub build_batch_us_per_event: f64,
}

/// Median of `rounds` means, each over `per_round` calls (after one warm-up round).
fn time_per_call(rounds: usize, per_round: usize, mut f: impl FnMut()) -> Duration {
    let mut means: Vec<Duration> = (0..=rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_round {
                f();
            }
            start.elapsed() / u32::try_from(per_round).unwrap_or(u32::MAX)
        })
        .skip(1)
        .collect();
    means.sort();
    means[means.len() / 2]
}

/// Times both paths in about three seconds.
pub fn run(messages: &[Message], batch_size: usize) -> anyhow::Result<MicroReport> {
    let fixture = VerifyFixture::new()?;
    anyhow::ensure!(fixture.verify_and_parse(), "the micro-benchmark request does not verify");
    let verify = time_per_call(5, 10_000, || {
        black_box(fixture.verify_and_parse());
    });
    let verify_only = time_per_call(5, 10_000, || {
        black_box(fixture.verify());
    });
    let parse_only = time_per_call(5, 10_000, || {
        black_box(fixture.parse());
    });
    let batch = &messages[..batch_size.min(messages.len())];
    let build = time_per_call(5, 50, || {
        black_box(build_batch(batch));
    });
    Ok(MicroReport {
        body_bytes: fixture.body.len(),
        verify_parse_us: verify.as_secs_f64() * 1e6,
        verify_us: verify_only.as_secs_f64() * 1e6,
        parse_us: parse_only.as_secs_f64() * 1e6,
        batch_size: batch.len(),
        build_batch_us: build.as_secs_f64() * 1e6,
        build_batch_us_per_event: build.as_secs_f64() * 1e6 / batch.len().max(1) as f64,
    })
}

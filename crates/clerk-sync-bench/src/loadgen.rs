//! The load generator: signs realistic Clerk events and drives `POST /webhooks/clerk` closed-loop
//! (N connections, each sending its next request when the previous one is answered) or open-loop
//! (requests due at fixed intervals, whatever the server does), recording latency in an HDR
//! histogram.
//!
//! Coordinated omission: open-loop latency is measured from each request's *intended* send time,
//! so when the server stalls, the requests that should have been sent meanwhile are charged the
//! wait (a connection that frees up late takes the oldest due ticket). Closed-loop latency is
//! service time by nature; it is reported through `add_correct` with the mean latency as the
//! expected interval, HdrHistogram's correction for a closed-loop client. Requests due in the
//! window but never sent (the client fell more than [`GRACE`] behind) count as errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use secrecy::SecretString;
use serde::Serialize;
use tokio::time::Instant;

use crate::corpus::{Corpus, Signer};
use crate::http1::{Conn, Target};

/// A request not answered in this time counts as an error and its connection is replaced.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How far behind schedule open-loop sending may fall before the rest of the run is abandoned.
pub const GRACE: Duration = Duration::from_secs(2);
/// The status the gateway answers once the broker has confirmed.
const ACCEPTED: u16 = 202;

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: Target,
    pub secret: SecretString,
    /// Connections (closed loop: also requests in flight).
    pub concurrency: usize,
    /// Requests per second for an open-loop run; `None` for closed loop.
    pub rate: Option<f64>,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    /// Same load, not recorded: connections open, caches and channels warm.
    pub warmup: Duration,
    pub corpus: Arc<Corpus>,
    /// Makes svix-ids unique across runs against one queue or database.
    pub id_prefix: String,
}

/// What one run measured. Latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub mode: &'static str,
    pub concurrency: usize,
    pub rate: Option<f64>,
    /// Requests recorded in the measured window.
    pub requests: u64,
    pub accepted: u64,
    /// Non-202 answers, I/O errors, timeouts and (open loop) requests never sent.
    pub errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub io_errors: u64,
    pub unsent: u64,
    pub window_s: f64,
    /// Accepted requests per second over the window.
    pub throughput: f64,
    #[serde(flatten)]
    pub latency: Latency,
    /// The worst latency (ms) among requests due in each second of the window.
    pub worst_ms_per_second: Vec<f64>,
    /// Every 202 of the run, warm-up included (what a consumer will find in the queue).
    pub accepted_total: u64,
    /// Every answer of the run, whatever its status, warm-up included (what the server handled).
    pub answered_total: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// p99 before the closed-loop coordinated-omission correction (equal to `p99_ms` otherwise).
    pub raw_p99_ms: f64,
}

/// Percentiles of a histogram in microseconds; `closed_loop` applies HdrHistogram's correction
/// with the mean latency as the expected interval between one connection's requests.
pub fn percentiles(raw: &Histogram<u64>, closed_loop: bool) -> Latency {
    let ms = |v: u64| v as f64 / 1000.0;
    let raw_p99_ms = ms(raw.value_at_quantile(0.99));
    let mut corrected = histogram();
    let hist = if closed_loop && !raw.is_empty() && corrected.add_correct(raw, raw.mean().max(1.0) as u64).is_ok() {
        &corrected
    } else {
        raw
    };
    Latency {
        mean_ms: hist.mean() / 1000.0,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
        raw_p99_ms,
    }
}

struct Shared {
    spec: LoadSpec,
    next: AtomicU64,
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Shared {
    fn intended(&self, seq: u64, rate: f64) -> Instant {
        self.start + Duration::from_secs_f64(seq as f64 / rate)
    }
}

struct Tally {
    hist: Histogram<u64>,
    /// Worst latency (µs) of requests due in each second of the window: shows whether a high
    /// percentile comes from steady slowness or from a few stalls.
    worst_per_second: Vec<u64>,
    accepted: u64,
    errors: u64,
    io_errors: u64,
    statuses: BTreeMap<u16, u64>,
    accepted_total: u64,
    answered_total: u64,
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 2 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Runs one load point to the end of its window and reports it.
pub async fn run(spec: LoadSpec) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(spec.concurrency > 0, "concurrency must be at least 1");
    anyhow::ensure!(spec.rate.is_none_or(|r| r > 0.0), "the rate must be positive");
    let signer = Signer::new(&spec.secret, &spec.target.host, &spec.target.path)?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        start,
        measure_from: start + spec.warmup,
        end: start + spec.warmup + spec.duration,
        spec,
    });
    let tasks: Vec<_> =
        (0..shared.spec.concurrency).map(|_| tokio::spawn(connection(shared.clone(), signer.clone()))).collect();
    let mut total = Tally::new();
    for task in tasks {
        let t = task.await?;
        total.hist.add(&t.hist)?;
        if total.worst_per_second.len() < t.worst_per_second.len() {
            total.worst_per_second.resize(t.worst_per_second.len(), 0);
        }
        for (total, worst) in total.worst_per_second.iter_mut().zip(&t.worst_per_second) {
            *total = (*total).max(*worst);
        }
        total.accepted += t.accepted;
        total.errors += t.errors;
        total.io_errors += t.io_errors;
        total.accepted_total += t.accepted_total;
        total.answered_total += t.answered_total;
        for (status, n) in t.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
    }
    Ok(summarise(&shared, total))
}

fn summarise(shared: &Shared, total: Tally) -> LoadReport {
    let spec = &shared.spec;
    let window_s = spec.duration.as_secs_f64();
    let requests = total.hist.len();
    let unsent = spec.rate.map_or(0, |rate| ((window_s * rate).floor() as u64).saturating_sub(requests));
    LoadReport {
        mode: if spec.rate.is_some() { "open" } else { "closed" },
        concurrency: spec.concurrency,
        rate: spec.rate,
        requests,
        accepted: total.accepted,
        errors: total.errors + unsent,
        statuses: total.statuses,
        io_errors: total.io_errors,
        unsent,
        window_s,
        throughput: total.accepted as f64 / window_s,
        latency: percentiles(&total.hist, spec.rate.is_none()),
        accepted_total: total.accepted_total,
        answered_total: total.answered_total,
        worst_ms_per_second: total.worst_per_second.iter().map(|us| *us as f64 / 1000.0).collect(),
    }
}

impl Tally {
    fn new() -> Self {
        Self {
            hist: histogram(),
            worst_per_second: Vec::new(),
            accepted: 0,
            errors: 0,
            io_errors: 0,
            statuses: BTreeMap::new(),
            accepted_total: 0,
            answered_total: 0,
        }
    }

    fn record(&mut self, shared: &Shared, intended: Instant, us: u64) {
        self.hist.saturating_record(us);
        let second = intended.saturating_duration_since(shared.measure_from).as_secs() as usize;
        if self.worst_per_second.len() <= second {
            self.worst_per_second.resize(second + 1, 0);
        }
        self.worst_per_second[second] = self.worst_per_second[second].max(us);
    }
}

async fn connection(shared: Arc<Shared>, mut signer: Signer) -> Tally {
    let spec = &shared.spec;
    let mut tally = Tally::new();
    let mut conn: Option<Conn> = None;
    loop {
        let seq = shared.next.fetch_add(1, Ordering::Relaxed);
        let intended = match spec.rate {
            Some(rate) => {
                let intended = shared.intended(seq, rate);
                if intended >= shared.end || Instant::now() > shared.end + GRACE {
                    break;
                }
                tokio::time::sleep_until(intended).await;
                intended
            }
            None => {
                let now = Instant::now();
                if now >= shared.end {
                    break;
                }
                now
            }
        };
        let recorded = intended >= shared.measure_from;
        let svix_id = format!("msg_{}{seq:010}", spec.id_prefix);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let request = match signer.request(spec.corpus.get(seq), &svix_id, now_ms) {
            Ok(r) => r,
            Err(_) => {
                tally.errors += u64::from(recorded);
                continue;
            }
        };
        if conn.is_none() {
            match Conn::connect(spec.target.addr).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    if recorded {
                        tally.errors += 1;
                        tally.io_errors += 1;
                        tally.record(&shared, intended, micros(intended.elapsed()));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let sent = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, c.round_trip(request, false)).await;
        let done = Instant::now();
        let status = match answer {
            Ok(Ok(response)) => {
                if c.closed {
                    conn = None;
                }
                Some(response.status)
            }
            Ok(Err(_)) | Err(_) => {
                conn = None;
                None
            }
        };
        tally.accepted_total += u64::from(status == Some(ACCEPTED));
        tally.answered_total += u64::from(status.is_some());
        if !recorded {
            continue;
        }
        // Open loop: from when the request was due. Closed loop: from when it was sent.
        let from = if spec.rate.is_some() { intended } else { sent };
        tally.record(&shared, intended, micros(done - from));
        match status {
            Some(ACCEPTED) => tally.accepted += 1,
            Some(other) => {
                tally.errors += 1;
                *tally.statuses.entry(other).or_default() += 1;
            }
            None => {
                tally.errors += 1;
                tally.io_errors += 1;
            }
        }
    }
    tally
}

impl LoadReport {
    /// One line for the terminal.
    pub fn line(&self) -> String {
        let load = match self.rate {
            Some(r) => format!("{} {r:.0}/s over {} conns", self.mode, self.concurrency),
            None => format!("{} c{}", self.mode, self.concurrency),
        };
        format!(
            "{load}: {:.0}/s accepted, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms, errors {} (unsent {}, io {}, statuses {:?})",
            self.throughput,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.p999_ms,
            self.latency.max_ms,
            self.errors,
            self.unsent,
            self.io_errors,
            self.statuses
        )
    }
}

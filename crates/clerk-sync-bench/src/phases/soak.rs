//! The memory soak (`clerk-sync-bench soak`, `make bench-soak`): the gateway and one worker, as
//! the real release binaries, under a sustained open-loop load at half the system's capacity for
//! several minutes. This module owns the capacity estimate, the sampling loop (achieved rate,
//! both processes' current RSS, the main queue's depth, errors so far) and the verdict on memory
//! growth, a pure function over the samples ([`growth()`], in `soak/growth.rs` with its tests).
//!
//! Capacity is estimated by a short closed-loop run (64 connections, 2 s warm-up + 8 s) of the
//! gateway with the worker consuming, as the minimum of the gateway's accepted rate and the
//! worker's handled rate over the measured 8 s. The worker is the bound; measuring it while the
//! gateway and the load generator take their share of the cores is conservative (at half the rate
//! they take less), whereas draining a pre-filled queue with the worker alone would overestimate
//! what it sustains next to a busy gateway on two cores.
//!
//! The soak then starts a fresh gateway and worker: a glibc heap keeps the pages freed after the
//! estimate's backlog resident, and a leak would first refill them without any RSS growth.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use super::Bench;
use super::gateway::{gateway_load, spawn_gateway};
use crate::corpus::Corpus;
use crate::loadgen::{self, LoadSpec};
use crate::procs::{Service, sum_metric};
use crate::report::{Row, Target};

mod growth;

use growth::{Growth, MIN_SAMPLES, growth, last_quarter_mean};

const EVENTS_METRIC: &str = "clerk_sync_worker_events_total";
const CAPACITY_CONCURRENCY: usize = 64;
const CAPACITY_WARMUP: Duration = Duration::from_secs(2);
const CAPACITY_SECS: Duration = Duration::from_secs(8);
/// The queue must not grow: its last-quarter mean depth stays within this many seconds of events.
const QUEUE_BOUND_SECS: f64 = 2.0;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Serialize)]
pub struct SoakOptions {
    pub minutes: f64,
    /// Events per second; `None`: half the estimated capacity.
    pub rate: Option<f64>,
    pub sample_secs: f64,
    /// Connections the open-loop load spreads its requests over.
    pub connections: usize,
}

/// One sample interval of the soak.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub elapsed_s: f64,
    /// Accepted requests per second over this interval.
    pub rate: f64,
    /// The load generator's p99 latency over this interval (ms, from intended send time).
    pub p99_ms: f64,
    pub gateway_rss_kib: u64,
    pub worker_rss_kib: u64,
    /// Messages ready in the main queue.
    pub queue_depth: u32,
    /// Load errors since the start: non-202 answers, I/O errors, timeouts, requests never sent.
    pub errors: u64,
}

impl Sample {
    fn line(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        format!(
            "soak t={:>5.0} s  {:>6.0} req/s  p99 {:>7.2} ms  gateway {:>6.1} MiB  worker {:>6.1} MiB  queue {:>6}  errors {}",
            self.elapsed_s,
            self.rate,
            self.p99_ms,
            mib(self.gateway_rss_kib),
            mib(self.worker_rss_kib),
            self.queue_depth,
            self.errors
        )
    }
}

async fn handled(worker: &Service) -> anyhow::Result<f64> {
    Ok(sum_metric(&worker.metrics().await?, EVENTS_METRIC, None))
}

async fn committed(conn: &mut PgConnection) -> anyhow::Result<i64> {
    let sql = "SELECT count(*) FROM clerk.webhook_events WHERE outcome IS NOT NULL";
    Ok(sqlx::query_scalar(sql).fetch_one(conn).await?)
}

async fn start_services(b: &Bench) -> anyhow::Result<(Service, crate::http1::Target, Service)> {
    b.env.truncate().await?;
    b.purge().await?;
    let (gw, url) = spawn_gateway(b).await?;
    let mut worker = Service::worker(&b.paths, &b.env, 0)?;
    worker.wait_ready(READY_TIMEOUT).await?;
    Ok((gw, url, worker))
}

/// Events per second the gateway and one worker sustain together (see the module comment).
async fn estimate_capacity(b: &mut Bench, corpus: Arc<Corpus>) -> anyhow::Result<f64> {
    let (gw, url, worker) = start_services(b).await?;
    let measure = async {
        tokio::time::sleep(CAPACITY_WARMUP).await;
        let (t0, n0) = (Instant::now(), handled(&worker).await?);
        tokio::time::sleep(CAPACITY_SECS).await;
        anyhow::Ok((handled(&worker).await? - n0) / t0.elapsed().as_secs_f64())
    };
    let window = (CAPACITY_WARMUP, CAPACITY_SECS);
    let (load, worker_rate) = tokio::join!(gateway_load(b, &url, corpus, CAPACITY_CONCURRENCY, None, window), measure);
    let (load, worker_rate) = (load?, worker_rate?);
    gw.stop(STOP_GRACE).await;
    worker.stop(STOP_GRACE).await;
    let capacity = load.throughput.min(worker_rate);
    eprintln!(
        "soak capacity: gateway {:.0} req/s closed-loop c{CAPACITY_CONCURRENCY}, worker {worker_rate:.0} events/s -> {capacity:.0}/s",
        load.throughput
    );
    anyhow::ensure!(capacity > 0.0, "capacity estimate of 0 events/s (load errors: {})", load.errors);
    b.details.insert(
        "soak_capacity".into(),
        json!({"gateway_closed_loop": load, "worker_events_per_s": worker_rate, "capacity": capacity}),
    );
    Ok(capacity)
}

/// Runs the soak; the verdict is in the rows it adds (any FAIL fails the run).
pub async fn soak(b: &mut Bench, opts: &SoakOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.minutes > 0.0 && opts.sample_secs > 0.0, "--minutes and --sample-secs must be positive");
    let windows = (opts.minutes * 60.0 / opts.sample_secs).round() as usize;
    anyhow::ensure!(windows >= MIN_SAMPLES, "{windows} samples: make --minutes longer or --sample-secs shorter");
    // As in e2e: users spread so that batches touch many rows, as in production.
    let corpus = Arc::new(Corpus::realistic(8_192, 50_000, 3));
    let (rate, how) = match opts.rate {
        Some(rate) => (rate, "--rate".to_owned()),
        None => {
            let capacity = estimate_capacity(b, corpus.clone()).await?;
            (capacity / 2.0, format!("half of the estimated capacity {capacity:.0}/s"))
        }
    };
    anyhow::ensure!(rate > 0.0, "the rate must be positive");
    let (mut gw, url, mut worker) = start_services(b).await?;
    let idle = (gw.current_rss().unwrap_or(0), worker.current_rss().unwrap_or(0));
    eprintln!("soak: {rate:.0} events/s ({how}) for {} s, a sample every {} s", opts.minutes * 60.0, opts.sample_secs);

    // The load runs as back-to-back open-loop windows of one sample interval: the load generator
    // reports only when a run ends, so each window's report gives that sample its achieved rate
    // and errors. Every window opens fresh connections, which soaks connection setup too.
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::with_capacity(windows);
    let (mut errors, mut accepted) = (0u64, 0u64);
    for i in 0..windows {
        let spec = LoadSpec {
            target: url.clone(),
            secret: b.env.secret.clone(),
            concurrency: opts.connections,
            rate: Some(rate),
            duration: Duration::from_secs_f64(opts.sample_secs),
            warmup: Duration::ZERO,
            corpus: corpus.clone(),
            // Sequence numbers restart in every window: the prefix keeps the svix-ids distinct.
            id_prefix: format!("{}s{i}_", b.env.run_id),
        };
        let r = loadgen::run(spec).await?;
        errors += r.errors;
        accepted += r.accepted_total;
        let sample = Sample {
            elapsed_s: started.elapsed().as_secs_f64(),
            rate: r.throughput,
            p99_ms: r.latency.p99_ms,
            gateway_rss_kib: gw.current_rss().context("the gateway exited during the soak")?,
            worker_rss_kib: worker.current_rss().context("the worker exited during the soak")?,
            queue_depth: b.queue_depth().await?,
            errors,
        };
        eprintln!("{}", sample.line());
        b.detail("soak_samples", json!(sample));
        samples.push(sample);
    }
    let seconds = started.elapsed().as_secs_f64();

    // Every accepted event must reach the database once the load stops, as in e2e.
    let expected = i64::try_from(accepted)?;
    let mut conn = PgConnection::connect(&b.env.db_url).await?;
    let drain_started = Instant::now();
    let mut committed_events = committed(&mut conn).await?;
    while committed_events < expected && drain_started.elapsed() < DRAIN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(200)).await;
        committed_events = committed(&mut conn).await?;
    }
    let _ = conn.close().await;
    let drain_s = drain_started.elapsed().as_secs_f64();
    let after_drain = (gw.current_rss().unwrap_or(0), worker.current_rss().unwrap_or(0));
    let metrics = worker.metrics().await.unwrap_or_default();
    let worker_failures = (sum_metric(&metrics, EVENTS_METRIC, Some("outcome=\"retried\""))
        + sum_metric(&metrics, EVENTS_METRIC, Some("outcome=\"dead_lettered\""))) as u64;
    let peaks = (gw.stop(STOP_GRACE).await, worker.stop(STOP_GRACE).await);
    b.gateway_rss_kib = b.gateway_rss_kib.max(peaks.0);
    b.worker_rss_kib = b.worker_rss_kib.max(peaks.1);

    let process = |rss: fn(&Sample) -> u64, idle: u64, after_drain: u64, peak: u64| {
        let points: Vec<(f64, u64)> = samples.iter().map(|s| (s.elapsed_s, rss(s))).collect();
        growth(&points).map(|growth| Process { growth, idle_kib: idle, after_drain_kib: after_drain, peak_kib: peak })
    };
    let depths: Vec<f64> = samples.iter().map(|s| f64::from(s.queue_depth)).collect();
    let rates: Vec<f64> = samples.iter().map(|s| s.rate).collect();
    let summary = Summary {
        rate,
        how,
        seconds,
        samples: samples.len(),
        achieved_mean: rates.iter().sum::<f64>() / rates.len() as f64,
        achieved_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        gateway: process(|s| s.gateway_rss_kib, idle.0, after_drain.0, peaks.0).context("too few samples")?,
        worker: process(|s| s.worker_rss_kib, idle.1, after_drain.1, peaks.1).context("too few samples")?,
        queue_last_quarter_mean: last_quarter_mean(&depths),
        queue_max: depths.iter().fold(0.0, |a, d| a.max(*d)),
        load_errors: errors,
        worker_failures,
        accepted,
        committed: committed_events,
        drain_s,
    };
    b.rows.extend(summary.rows(opts));
    b.details.insert("soak".into(), json!(summary));
    b.env.truncate().await?;
    Ok(())
}

/// One process over the soak.
#[derive(Debug, Serialize)]
struct Process {
    growth: Growth,
    /// Right after start, before any load.
    idle_kib: u64,
    /// Once every accepted event was committed.
    after_drain_kib: u64,
    /// VmHWM when stopped.
    peak_kib: u64,
}

/// What the soak found; its rows are the verdict.
#[derive(Debug, Serialize)]
struct Summary {
    rate: f64,
    how: String,
    seconds: f64,
    samples: usize,
    achieved_mean: f64,
    achieved_min: f64,
    gateway: Process,
    worker: Process,
    queue_last_quarter_mean: f64,
    queue_max: f64,
    load_errors: u64,
    worker_failures: u64,
    accepted: u64,
    committed: i64,
    drain_s: f64,
}

impl Summary {
    fn rows(&self, opts: &SoakOptions) -> Vec<Row> {
        let mib = |kib: f64| kib / 1024.0;
        let mut rows = vec![
            Row::new("soak rate", self.rate, "events/s").note(format!(
                "{}; achieved mean {:.0}/s, lowest sample {:.0}/s",
                self.how, self.achieved_mean, self.achieved_min
            )),
            Row::new("soak duration", self.seconds, "s").note(format!(
                "{} samples every {} s over {} connections; the first 25% are warm-up",
                self.samples, opts.sample_secs, opts.connections
            )),
        ];
        for (name, p) in [("gateway", &self.gateway), ("worker", &self.worker)] {
            let g = &p.growth;
            rows.push(Row::new(format!("{name} RSS after warm-up"), mib(g.after_warmup_kib as f64), "MiB"));
            rows.push(Row::new(format!("{name} RSS at end"), mib(g.end_kib as f64), "MiB"));
            rows.push(
                Row::new(format!("{name} RSS growth (last vs 2nd quarter mean)"), mib(g.growth_kib), "MiB")
                    .target(Target::AtMost(mib(g.allowed_kib)))
                    .note(format!(
                        "slope {:+.1} MiB/h over the steady 75%; quarter means {:.1} -> {:.1} MiB; \
                         idle at start {:.1}, after drain {:.1}, peak {:.1} MiB",
                        g.slope_mib_per_hour,
                        mib(g.second_quarter_mean_kib),
                        mib(g.last_quarter_mean_kib),
                        mib(p.idle_kib as f64),
                        mib(p.after_drain_kib as f64),
                        mib(p.peak_kib as f64)
                    )),
            );
        }
        rows.push(
            Row::new("queue depth, last-quarter mean", self.queue_last_quarter_mean, "msgs")
                .target(Target::AtMost(self.rate * QUEUE_BOUND_SECS))
                .note(format!("bound: {QUEUE_BOUND_SECS} s of events; highest sample {:.0}", self.queue_max)),
        );
        rows.push(
            Row::new("load errors + worker retries", (self.load_errors + self.worker_failures) as f64, "")
                .target(Target::AtMost(0.0))
                .note(format!(
                    "{} load errors, {} retried or dead-lettered by the worker",
                    self.load_errors, self.worker_failures
                )),
        );
        rows.push(
            Row::new("events committed after the load", self.committed as f64, "events")
                .target(Target::AtLeast(self.accepted as f64))
                .note(format!(
                    "{} accepted; waited {:.1} s after the load stopped (at most {DRAIN_TIMEOUT:?})",
                    self.accepted, self.drain_s
                )),
        );
        rows
    }
}

//! RabbitMQ without the gateway: the broker ceiling (plain lapin publishes, persistent and
//! mandatory, each awaiting its own confirm, at the gateway's concurrency and payloads, closed-loop
//! or open-loop at the gateway's rates), the search for the channel count at which the broker does
//! best at each concurrency (a ceiling is the broker's best, not the broker at the gateway's
//! setting), and the pre-fill of the worker's queue (the same messages the gateway would publish,
//! many confirms pipelined on several channels).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde::Serialize;
use tokio::time::Instant;

use clerk_sync_core::amqp::{self, headers};

use crate::corpus::Corpus;
use crate::env::BenchEnv;
use crate::loadgen::{LoadReport, histogram, percentiles};
use crate::workload::Message;

const MANDATORY: BasicPublishOptions = BasicPublishOptions { mandatory: true, immediate: false };

/// The properties the gateway sets (`routes/webhook.rs`): persistent, svix-id as `message_id`,
/// the signed timestamp and the receive time as integer headers.
pub fn properties(svix_id: &str, event_type: &str, svix_ts_s: i64, received_at_ms: i64) -> BasicProperties {
    let mut table = FieldTable::default();
    amqp::put_i64(&mut table, headers::SVIX_TIMESTAMP, svix_ts_s);
    amqp::put_i64(&mut table, headers::RECEIVED_AT, received_at_ms);
    BasicProperties::default()
        .with_message_id(svix_id.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(u64::try_from(received_at_ms / 1000).unwrap_or_default())
        .with_type(event_type.into())
        .with_app_id("clerk-sync-bench".into())
        .with_headers(table)
}

async fn confirm_channels(conn: &Connection, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        out.push(ch);
    }
    Ok(out)
}

/// Publishes and waits for the confirm; `true` if acked and routed.
async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> bool {
    match ch.basic_publish(exchange.into(), routing_key.into(), MANDATORY, body, props).await {
        Ok(confirm) => matches!(confirm.await, Ok(Confirmation::Ack(None))),
        Err(_) => false,
    }
}

/// The broker ceiling at `concurrency`: as many tasks, spread over `channels` confirm channels as
/// the gateway's publisher spreads its requests. Closed loop (`rate` none): each task publishes its
/// next message when the previous one is confirmed. Open loop: messages are due at `rate` per
/// second whatever the broker does, and latency counts from when each was due, as the load
/// generator counts it in front of the gateway.
pub async fn ceiling(
    env: &BenchEnv,
    conn: &Connection,
    corpus: Arc<Corpus>,
    (concurrency, rate): (usize, Option<f64>),
    channels: usize,
    (warmup, duration): (Duration, Duration),
) -> anyhow::Result<LoadReport> {
    let channels = Arc::new(confirm_channels(conn, channels).await?);
    let exchange: Arc<str> = env.topology().exchange().into();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (measure_from, end) = (start + warmup, start + warmup + duration);
    let run_id = env.run_id.clone();
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let (channels, exchange, corpus, next, run_id) =
                (channels.clone(), exchange.clone(), corpus.clone(), next.clone(), run_id.clone());
            tokio::spawn(async move {
                let ch = &channels[i % channels.len()];
                let mut hist = histogram();
                let (mut ok, mut errors, mut acked_total, mut answered) = (0u64, 0u64, 0u64, 0u64);
                let mut body = Vec::new();
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let due = match rate {
                        Some(rate) => start + Duration::from_secs_f64(seq as f64 / rate),
                        None => Instant::now(),
                    };
                    if due >= end {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                    let template = corpus.get(seq);
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    body.clear();
                    template.render_into(now_ms, &mut body);
                    let id = format!("msg_b{run_id}{seq:010}");
                    let props = properties(&id, template.event_type, now_ms / 1000, now_ms);
                    let acked = publish_confirmed(ch, &exchange, template.event_type, &body, props).await;
                    acked_total += u64::from(acked);
                    answered += 1;
                    if due >= measure_from {
                        hist.saturating_record(u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
                        if acked { ok += 1 } else { errors += 1 }
                    }
                }
                (hist, ok, errors, acked_total, answered)
            })
        })
        .collect();
    let mut hist: Histogram<u64> = histogram();
    let (mut ok, mut errors, mut acked_total, mut answered_total) = (0, 0, 0, 0);
    for task in tasks {
        let (h, o, e, t, a) = task.await?;
        hist.add(&h)?;
        ok += o;
        errors += e;
        acked_total += t;
        answered_total += a;
    }
    for ch in channels.iter() {
        let _ = ch.close(200, "done".into()).await;
    }
    let window_s = duration.as_secs_f64();
    // Messages due in the window that the tasks never got to (they fell behind the schedule).
    let unsent = rate.map_or(0, |rate| ((window_s * rate).floor() as u64).saturating_sub(hist.len()));
    Ok(LoadReport {
        mode: "broker",
        concurrency,
        rate,
        requests: hist.len(),
        accepted: ok,
        errors: errors + unsent,
        statuses: Default::default(),
        io_errors: 0,
        unsent,
        window_s,
        throughput: ok as f64 / window_s,
        latency: percentiles(&hist, rate.is_none()),
        accepted_total: acked_total,
        answered_total,
        worst_ms_per_second: Vec::new(),
    })
}

/// One channel count tried by [`search_channels`].
#[derive(Debug, Clone, Serialize)]
pub struct Tried {
    pub channels: usize,
    /// The best of its runs: a broker stall in one short run says nothing about the count.
    pub throughput: f64,
    /// Every run's throughput, in the order they ran.
    pub runs: Vec<f64>,
}

/// What [`search_channels`] found at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelSearch {
    pub concurrency: usize,
    pub tried: Vec<Tried>,
    /// The count with the highest throughput (the fewer channels on a tie).
    pub best: usize,
    /// Measured seconds per run (after its warm-up).
    pub window_s: f64,
}

impl ChannelSearch {
    /// `4 of 1/2/4/8/16 channels (1: 9.1k/s, 2: 14.0k/s, ...)`, for the table's notes.
    pub fn line(&self) -> String {
        let counts: Vec<String> = self.tried.iter().map(|t| t.channels.to_string()).collect();
        let rates: Vec<String> =
            self.tried.iter().map(|t| format!("{}: {:.1}k/s", t.channels, t.throughput / 1000.0)).collect();
        let runs = self.tried.first().map_or(0, |t| t.runs.len());
        format!(
            "{} of {} channels, best of {runs} {:.0} s runs each ({})",
            self.best,
            counts.join("/"),
            self.window_s,
            rates.join(", ")
        )
    }
}

/// The closed-loop ceiling at `concurrency` over each of `counts` channels, `passes` times round
/// (so the shared broker's stalls and the machine's noise fall on every count alike), the queue
/// purged before each run, in short windows: the count that serves the broker best at this
/// concurrency and payload, for the ceiling's full-length runs.
pub async fn search_channels(
    env: &BenchEnv,
    conn: &Connection,
    purge_on: &Channel,
    corpus: Arc<Corpus>,
    (concurrency, counts, passes): (usize, &[usize], usize),
    window: (Duration, Duration),
) -> anyhow::Result<ChannelSearch> {
    let mut tried: Vec<Tried> =
        counts.iter().map(|&channels| Tried { channels, throughput: 0.0, runs: Vec::new() }).collect();
    for _ in 0..passes.max(1) {
        for t in &mut tried {
            env.purge(purge_on).await?;
            let r = ceiling(env, conn, corpus.clone(), (concurrency, None), t.channels, window).await?;
            eprintln!("search   {} over {} channels", r.line(), t.channels);
            t.throughput = t.throughput.max(r.throughput);
            t.runs.push(r.throughput);
        }
    }
    let best = best_count(&tried).ok_or_else(|| anyhow::anyhow!("no channel count to search"))?;
    Ok(ChannelSearch { concurrency, tried, best, window_s: window.1.as_secs_f64() })
}

/// The count with the highest throughput; on a tie the fewer channels, which cost the broker less.
fn best_count(tried: &[Tried]) -> Option<usize> {
    tried
        .iter()
        .fold(None, |best: Option<&Tried>, t| match best {
            Some(b) if b.throughput >= t.throughput => Some(b),
            _ => Some(t),
        })
        .map(|t| t.channels)
}

/// Publishes every message (duplicates included) with up to `window` unconfirmed per channel;
/// returns the time it took. Fails if any message is not confirmed.
pub async fn prefill(
    env: &BenchEnv,
    conn: &Connection,
    messages: &[Message],
    channels: usize,
    window: usize,
) -> anyhow::Result<Duration> {
    let channels = confirm_channels(conn, channels).await?;
    let exchange = env.topology().exchange();
    let started = Instant::now();
    let n = channels.len();
    let lanes = channels.iter().enumerate().map(|(lane, ch)| {
        let exchange = exchange.as_str();
        futures_util::stream::iter(messages.iter().skip(lane).step_by(n))
            .map(move |m| {
                let props = properties(&m.svix_id, m.event_type, m.svix_ts_s, m.received_at_ms);
                publish_confirmed(ch, exchange, m.event_type, &m.body, props)
            })
            .buffer_unordered(window)
            .fold(0u64, |failed, acked| async move { failed + u64::from(!acked) })
    });
    let failed: u64 = futures_util::future::join_all(lanes).await.into_iter().sum();
    let elapsed = started.elapsed();
    for ch in &channels {
        let _ = ch.close(200, "done".into()).await;
    }
    anyhow::ensure!(failed == 0, "{failed} of {} pre-fill messages were not confirmed", messages.len());
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tried(channels: usize, throughput: f64) -> Tried {
        Tried { channels, throughput, runs: vec![throughput / 2.0, throughput] }
    }

    #[test]
    fn the_search_keeps_the_fastest_count_and_the_fewer_channels_on_a_tie() {
        let runs = [tried(1, 9_100.0), tried(2, 14_000.0), tried(4, 18_000.0), tried(8, 15_000.0), tried(16, 18_000.0)];
        assert_eq!(best_count(&runs), Some(4));
        assert_eq!(best_count(&[tried(8, 5_000.0)]), Some(8));
        assert_eq!(best_count(&[]), None);
        let search = ChannelSearch { concurrency: 64, tried: runs[..2].to_vec(), best: 2, window_s: 2.0 };
        assert_eq!(search.line(), "2 of 1/2 channels, best of 2 2 s runs each (1: 9.1k/s, 2: 14.0k/s)");
    }
}

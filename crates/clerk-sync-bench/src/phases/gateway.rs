//! Broker ceiling and gateway, interleaved: at each concurrency the plain-lapin ceiling is measured
//! right before the gateway, so both see the same broker state and the same background noise.
//! Then the gateway open-loop at fixed rates. The queue is purged before every point so a growing
//! backlog never slows the broker down between points.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::Bench;
use crate::broker;
use crate::corpus::Corpus;
use crate::http1::Target as Url;
use crate::loadgen::{self, LoadReport, LoadSpec};
use crate::procs::Service;
use crate::report::{Row, Target};

/// Concurrency at which the issue sets the gateway-to-broker target.
const TARGET_CONCURRENCY: usize = 64;
/// The open-loop rate at which the issue sets the p99 target.
const TARGET_RATE: f64 = 5_000.0;

fn latency_note(r: &LoadReport) -> String {
    format!(
        "p50 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms, {} requests, {} errors",
        r.latency.p50_ms, r.latency.p999_ms, r.latency.max_ms, r.requests, r.errors
    )
}

pub async fn spawn_gateway(b: &Bench) -> anyhow::Result<(Service, Url)> {
    let mut gw = Service::gateway(&b.paths, &b.env, &[])?;
    gw.wait_ready(Duration::from_secs(30)).await?;
    let url = format!("http://127.0.0.1:{}/webhooks/clerk", gw.port.unwrap_or_default());
    Ok((gw, Url::parse(&url).await?))
}

/// One gateway load point against `url`.
pub async fn gateway_load(
    b: &Bench,
    url: &Url,
    corpus: Arc<Corpus>,
    concurrency: usize,
    rate: Option<f64>,
    (warmup, duration): (Duration, Duration),
) -> anyhow::Result<LoadReport> {
    let spec = LoadSpec {
        target: url.clone(),
        secret: b.env.secret.clone(),
        concurrency,
        rate,
        duration,
        warmup,
        corpus,
        id_prefix: format!("{}{}{}", b.env.run_id, concurrency, rate.map_or(0, |r| r as u64)),
    };
    let report = loadgen::run(spec).await?;
    eprintln!("gateway  {}", report.line());
    Ok(report)
}

/// `with_broker`: measure the ceiling; `with_gateway`: measure the gateway (both for `all`).
pub async fn broker_and_gateway(b: &mut Bench, with_broker: bool, with_gateway: bool) -> anyhow::Result<()> {
    let mut gateway = if with_gateway { Some(spawn_gateway(b).await?) } else { None };
    let channels = b.env.defaults.amqp.publisher_channels;
    let corpus = b.corpus();
    let point = b.opts.point();
    for c in b.opts.concurrency.clone() {
        if with_broker {
            b.purge().await?;
            let r = broker::ceiling(&b.env, &b.amqp, corpus.clone(), c, channels, point).await?;
            eprintln!("broker   {}", r.line());
            b.broker_ceiling.insert(c, (r.throughput, r.latency.p99_ms));
            if !with_gateway {
                b.rows.push(
                    Row::new(format!("broker ceiling c{c} throughput"), r.throughput, "msg/s").note(latency_note(&r)),
                );
            }
            b.detail("broker", json!(r));
        }
        if let Some((gw, url)) = gateway.as_mut() {
            b.purge().await?;
            let r = gateway_load(b, url, corpus.clone(), c, None, point).await?;
            gw.sample_rss();
            let ceiling = b.broker_ceiling.get(&c).copied();
            let mut row = Row::new(format!("gateway closed c{c} throughput"), r.throughput, "req/s")
                .ceiling(ceiling.map(|x| x.0));
            if c == TARGET_CONCURRENCY {
                row = row.target(Target::RatioAtLeast(0.8)).require_no_errors(r.errors);
            }
            b.rows.push(row.note(format!("{} (mean body {:.0} B)", latency_note(&r), corpus.mean_len())));
            b.rows.push(
                Row::new(format!("gateway closed c{c} p99 (CO-corrected)"), r.latency.p99_ms, "ms")
                    .ceiling(ceiling.map(|x| x.1))
                    .note(format!("uncorrected p99 {:.2} ms; ceiling = broker p99", r.latency.raw_p99_ms)),
            );
            b.detail("gateway_closed", json!(r));
        }
    }
    if let Some((mut gw, url)) = gateway {
        let connections = b.opts.open_connections;
        for rate in b.opts.rates.clone() {
            b.purge().await?;
            let r = gateway_load(b, &url, corpus.clone(), connections, Some(rate), point).await?;
            gw.sample_rss();
            let mut row = Row::new(format!("gateway open {rate:.0}/s p99"), r.latency.p99_ms, "ms");
            if (rate - TARGET_RATE).abs() < f64::EPSILON {
                row = row.target(Target::AtMost(20.0));
            }
            let note = format!("achieved {:.0} req/s over {connections} conns; {}", r.throughput, latency_note(&r));
            b.rows.push(row.require_no_errors(r.errors).note(note));
            b.detail("gateway_open", json!(r));
        }
        b.purge().await?;
        let rss = gw.stop(Duration::from_secs(20)).await;
        b.gateway_rss_kib = b.gateway_rss_kib.max(rss);
    }
    Ok(())
}

//! The gateway and one worker against RabbitMQ 4.0 as production runs it, a three-node cluster
//! (`scripts/cluster.sh up`), beside a single 4.0 node (`scripts/cluster.sh single-up`), in the
//! same run and on the same workload, with CPU per message by process.
//!
//! On this two-core machine the three nodes share the CPU with everything else, so the cluster's
//! cost shows up twice: in throughput, and in the brokers' CPU per message. Each quorum-queue
//! message is written by the leader and replicated to both followers (a confirm waits for a
//! majority), so the brokers' CPU per message against the single node's is the price of
//! replication; the gateway's and the worker's own CPU per message should not change.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::time::Instant;

use super::Bench;
use super::gateway::{charging_cpu, gateway_load, spawn_gateway};
use crate::procs::{Service, sum_metric};
use crate::report::Row;
use crate::{broker, cpu};

/// Where `scripts/cluster.sh` puts its nodes (see its header).
const SINGLE: &[&str] = &["amqp://guest:guest@127.0.0.1:5680/%2f"];
const CLUSTER: &[&str] = &[
    "amqp://guest:guest@127.0.0.1:5681/%2f",
    "amqp://guest:guest@127.0.0.1:5682/%2f",
    "amqp://guest:guest@127.0.0.1:5683/%2f",
];
/// Node numbers of `scripts/cluster.sh pid N` for each target.
const SINGLE_NODES: &[u32] = &[0];
const CLUSTER_NODES: &[u32] = &[1, 2, 3];
/// The concurrency the gateway is judged at elsewhere.
const CONCURRENCY: usize = 64;
/// Messages for the worker runs: enough for a steady rate, short enough for two targets.
const WORKER_EVENTS: usize = 60_000;
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn beam_pids(nodes: &[u32]) -> anyhow::Result<Vec<(&'static str, u32)>> {
    nodes
        .iter()
        .map(|n| {
            let out = std::process::Command::new("scripts/cluster.sh").args(["pid", &n.to_string()]).output()?;
            let pid = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().with_context(|| {
                format!(
                    "RabbitMQ 4.0 node {n} is not running: `make cluster-up` (and `scripts/cluster.sh single-up`) first"
                )
            })?;
            Ok(("rabbitmq 4.0", pid))
        })
        .collect()
}

/// The brokers' share of a point's CPU per message.
fn broker_us(used: &cpu::PerMessage) -> f64 {
    used.0.get("rabbitmq 4.0").copied().unwrap_or(0.0)
}

pub async fn cluster(b: &mut Bench) -> anyhow::Result<()> {
    let original_url = b.env.amqp_url.clone();
    let original_channel = b.channel.clone();
    let mut original_amqp = None;
    let mut figures = Vec::new();
    for (label, urls, nodes) in
        [("single 4.0 node", SINGLE, SINGLE_NODES), ("3-node 4.0 cluster", CLUSTER, CLUSTER_NODES)]
    {
        let brokers = beam_pids(nodes)?;
        // The services get every node; the bench's own connection (pre-fill, purge) the first.
        b.env.amqp_url = urls.join(",");
        let conn = lapin::Connection::connect(urls[0], lapin::ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to {label}"))?;
        let previous = std::mem::replace(&mut b.amqp, conn);
        match original_amqp {
            None => original_amqp = Some(previous),
            Some(_) => {
                let _ = previous.close(200, "next target".into()).await;
            }
        }
        b.channel = b.amqp.create_channel().await?;
        b.env.declare(&b.channel).await?;
        figures.push((label, target(b, label, &brokers).await?));
    }
    b.env.amqp_url = original_url;
    if let Some(conn) = original_amqp {
        let _ = std::mem::replace(&mut b.amqp, conn).close(200, "done".into()).await;
    }
    b.channel = original_channel;

    let [(_, single), (_, cluster)] = &figures[..] else { unreachable!() };
    for (what, unit, s, c) in [
        ("gateway c64 req/s", "req/s", single.gateway, cluster.gateway),
        ("worker x1 events/s", "events/s", single.worker, cluster.worker),
    ] {
        b.rows.push(
            Row::new(format!("cluster: {what}, 3 nodes vs 1"), c, unit)
                .ceiling(Some(s))
                .note(format!("single node {s:.0} {unit}, cluster {c:.0} {unit}")),
        );
    }
    b.rows.push(
        Row::new("cluster: brokers' CPU per message, 3 nodes vs 1", cluster.gateway_broker_us, "µs").note(format!(
            "gateway point: brokers {:.0} µs (1 node) -> {:.0} µs (3 nodes), gateway {:.0} -> {:.0} µs; worker run: brokers {:.0} -> {:.0} µs, worker {:.0} -> {:.0} µs",
            single.gateway_broker_us,
            cluster.gateway_broker_us,
            single.gateway_us,
            cluster.gateway_us,
            single.worker_broker_us,
            cluster.worker_broker_us,
            single.worker_us,
            cluster.worker_us
        )),
    );
    Ok(())
}

#[derive(Debug, Default, serde::Serialize)]
struct Figures {
    gateway: f64,
    gateway_us: f64,
    gateway_broker_us: f64,
    worker: f64,
    worker_us: f64,
    worker_broker_us: f64,
}

async fn target(b: &mut Bench, label: &str, brokers: &[(&'static str, u32)]) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    // The gateway, closed loop at c64.
    b.purge().await?;
    let (gw, url) = spawn_gateway(b).await?;
    let mut pids = brokers.to_vec();
    pids.push(("gateway", gw.pid()));
    let watch = cpu::Watch::new("load generator", &pids);
    let corpus = b.corpus();
    let point = b.opts.point();
    let (r, used) =
        charging_cpu(&watch, gateway_load(b, &url, corpus, CONCURRENCY, None, point), |r| r.accepted_total).await?;
    gw.stop(Duration::from_secs(10)).await;
    anyhow::ensure!(r.errors == 0, "{label}: the gateway answered {} errors", r.errors);
    (f.gateway, f.gateway_us, f.gateway_broker_us) =
        (r.throughput, used.0.get("gateway").copied().unwrap_or(0.0), broker_us(&used));
    eprintln!("cluster {label}: gateway c{CONCURRENCY} {:.0} req/s; CPU per request: {}", r.throughput, used.line());
    b.detail("cluster", json!({"target": label, "gateway": cpu::with_cpu(&r, &used)}));

    // One worker from a pre-filled queue.
    b.purge().await?;
    b.env.truncate().await?;
    let workload = crate::workload::generate(WORKER_EVENTS, 2, &format!("{}c", b.env.run_id));
    let total = workload.messages.len();
    broker::prefill(&b.env, &b.amqp, &workload.messages, 8, 1024).await?;
    let started = Instant::now();
    let worker = Service::worker(&b.paths, &b.env, 0)?;
    let mut pids = brokers.to_vec();
    pids.push(("worker", worker.pid()));
    let watch = cpu::Watch::new("bench", &pids).with_database();
    let before = watch.snapshot();
    let elapsed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        anyhow::ensure!(started.elapsed() < RUN_TIMEOUT, "{label}: the worker did not finish in {RUN_TIMEOUT:?}");
        let Ok(text) = worker.metrics().await else { continue };
        let settled: f64 = ["applied", "stale", "ignored", "duplicate"]
            .iter()
            .map(|o| sum_metric(&text, "clerk_sync_worker_events_total", Some(&format!("outcome=\"{o}\""))))
            .sum();
        if settled as usize >= total && b.queue_depth().await? == 0 {
            break started.elapsed();
        }
    };
    let used = cpu::PerMessage::between(&before, &watch.snapshot(), total as u64);
    worker.stop(Duration::from_secs(20)).await;
    f.worker = total as f64 / elapsed.as_secs_f64();
    (f.worker_us, f.worker_broker_us) = (used.0.get("worker").copied().unwrap_or(0.0), broker_us(&used));
    eprintln!("cluster {label}: worker x1 {:.0} events/s; CPU per event: {}", f.worker, used.line());
    b.detail("cluster", json!({"target": label, "worker_events_per_s": f.worker, "cpu_us_per_message": used}));
    Ok(f)
}

//! Scenario 5: a database outage longer than the broker's `consumer_timeout` (10 s on the test
//! cluster), under load through the real gateway and two workers given all three nodes.
//!
//! RabbitMQ closes a channel holding a delivery unacked for longer than `consumer_timeout`, and on
//! 4.x every such return counts against the queue's delivery limit. The main queue is declared here
//! with a delivery limit of 3, so a worker that took its messages back after each timeout would
//! have healthy messages dead-lettered by the broker (no x-error) within a few timeouts; the worker
//! instead starts no consumer while the database is down, so each message is returned once. Worker
//! RSS is sampled throughout and printed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clerk_sync_core::amqp::{Topology, declare_topology};
use clerk_sync_testkit::{BrokerProbe, TcpProxy, wait_until};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

use crate::helpers::{Stack, retry_delays};
use crate::load::{Load, report, verify};
use crate::nodes::{NODES, all_nodes_up};

/// scripts/cluster.sh's consumer_timeout (RabbitMQ checks it about once a minute).
const CONSUMER_TIMEOUT: Duration = Duration::from_secs(10);
const DELIVERY_LIMIT: &str = "3";

/// Resident memory of a process, in KiB (0 once it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Records each worker's RSS if higher than its peak so far.
fn sample(peaks: &[AtomicU64; 2], pids: &[u32; 2]) {
    for (peak, pid) in peaks.iter().zip(pids) {
        peak.fetch_max(rss_kib(*pid), Ordering::Relaxed);
    }
}

async fn consumers(probe: &BrokerProbe, queue: &str) -> u32 {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let declared = probe.channel().queue_declare(queue.into(), passive, FieldTable::default()).await;
    declared.map_or(u32::MAX, |q| q.consumer_count())
}

#[tokio::test]
#[ignore = "runs with the cluster suite (`make test-cluster`)"]
async fn database_outage_longer_than_consumer_timeout() {
    all_nodes_up().await;
    let mut stack = Stack::new("c-ctimeout").await;
    stack.amqp = NODES.to_owned();
    // The main queue again, with a delivery limit a few timeouts would reach.
    let probe = BrokerProbe::connect().await;
    let queue = stack.topology.queue();
    probe.channel().queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    let limited = Topology::new(stack.prefix.clone(), DELIVERY_LIMIT.parse().unwrap());
    declare_topology(probe.channel(), &limited, &retry_delays()).await.unwrap();

    let pg = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let db_url = stack.db.url_via(pg.addr());
    let vars = [
        ("DATABASE_URL", db_url.as_str()),
        ("CLERK_SYNC__AMQP__DELIVERY_LIMIT", DELIVERY_LIMIT),
        ("CLERK_SYNC__LOG__LEVEL", "warn"),
    ];
    let workers = [stack.spawn_worker_with(&vars), stack.spawn_worker_with(&vars)];
    let gateway = stack.spawn_gateway().await;
    let load = Load::new(100, 30);

    let peaks = [AtomicU64::new(0), AtomicU64::new(0)];
    let mut outage = Duration::ZERO;
    let inject = async {
        wait_until(Duration::from_secs(60), "load is flowing", || async { stack.processed().await >= 200 }).await;
        pg.cut();
        let started = tokio::time::Instant::now();
        // Both workers hold messages unacked until the broker closes their channels.
        wait_until(CONSUMER_TIMEOUT * 18, "the broker has closed both workers' channels", || async {
            sample(&peaks, &workers);
            consumers(&probe, &queue).await == 0
        })
        .await;
        // Three more timeouts' worth of outage: a consumer coming back would take the messages
        // again, and the next timeout would return them once more.
        let until = tokio::time::Instant::now() + CONSUMER_TIMEOUT * 3;
        while tokio::time::Instant::now() < until {
            assert_eq!(consumers(&probe, &queue).await, 0, "no consumer while the database is down");
            sample(&peaks, &workers);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        outage = started.elapsed();
        pg.restore();
    };
    let (seen, ()) = tokio::join!(load.deliver(&gateway.url, Duration::from_secs(600)), inject);
    let verdict = verify(&stack, &load, Duration::from_secs(180)).await;
    sample(&peaks, &workers);
    let peaks = peaks.map(AtomicU64::into_inner);
    println!(
        "RSS | 5 | worker peak RSS over the outage and the catch-up: {} MiB and {} MiB",
        peaks[0] / 1024,
        peaks[1] / 1024
    );
    for peak in peaks {
        assert!(peak > 0 && peak < 256 * 1024, "worker RSS bounded: {} MiB", peak / 1024);
    }
    // In the row too: the suite's table is what CI shows.
    let name = format!(
        "5 database outage {} s > consumer_timeout {} s (delivery limit {DELIVERY_LIMIT}; worker peak RSS {} and {} MiB)",
        outage.as_secs(),
        CONSUMER_TIMEOUT.as_secs(),
        peaks[0] / 1024,
        peaks[1] / 1024
    );
    report(&name, &seen, &verdict);
    stack.cleanup().await;
}

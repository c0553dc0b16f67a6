//! Scenarios 1-4: a node fault under load, each with the real gateway and two workers given all
//! three nodes. The load starts, the fault is injected once 100 events are committed, the node is
//! brought back, and the verdict is the same for all: nothing lost, nothing applied twice, the
//! dead-letter queue holding exactly the poison.

use std::time::Duration;

use clerk_sync_testkit::wait_until;

use crate::helpers::{Gateway, Stack};
use crate::load::{Load, report, verify};
use crate::nodes::{NODES, all_nodes_up, cluster, leader, node_of_process};

/// How long scenario 3 keeps a node frozen.
const FREEZE: Duration = Duration::from_secs(15);

enum Fault {
    StopConnectedNode,
    KillLeader,
    FreezeConnectedNode,
    RollingRestart,
}

async fn run(label: &str, name: &str, fault: Fault) -> Duration {
    all_nodes_up().await;
    let mut stack = Stack::new(label).await;
    stack.amqp = NODES.to_owned();
    // Warnings show where a worker goes when its node is lost, in the output of a failed scenario.
    for _ in 0..2 {
        stack.spawn_worker_with(&[("CLERK_SYNC__LOG__LEVEL", "warn")]);
    }
    let gateway = stack.spawn_gateway().await;
    // 40 s of load at the client's rate; 120 s for a rolling restart (each node takes 13-18 s to
    // stop and start again here, longer on a loaded machine).
    let updates = if matches!(fault, Fault::RollingRestart) { 300 } else { 100 };
    let load = Load::new(60, updates);
    let total = i64::try_from(load.history.events.len()).unwrap();
    let scene = Scene { stack: &stack, gateway: &gateway, total };
    let (seen, injected) = tokio::join!(load.deliver(&gateway.url, Duration::from_secs(300)), inject(&fault, &scene));
    let verdict = verify(&stack, &load, Duration::from_secs(180)).await;
    report(&format!("{name}: {injected}"), &seen, &verdict);
    stack.cleanup().await;
    seen.longest_refusal()
}

/// What a fault is injected into.
struct Scene<'a> {
    stack: &'a Stack,
    gateway: &'a Gateway,
    /// Healthy events in the load.
    total: i64,
}

/// Waits for `more` events to be committed beyond what is committed now (or all of them): the load
/// goes on.
async fn load_moves_on(scene: &Scene<'_>, more: i64, what: &str) {
    let now = scene.stack.processed().await;
    let target = (now + more).min(scene.total);
    wait_until(Duration::from_secs(120), what, || async { scene.stack.processed().await >= target }).await;
}

async fn inject(fault: &Fault, scene: &Scene<'_>) -> String {
    let (stack, gateway) = (scene.stack, scene.gateway);
    wait_until(Duration::from_secs(60), "load is flowing", || async { stack.processed().await >= 100 }).await;
    assert!(stack.processed().await < scene.total, "the load ended before the fault: make it longer");
    match fault {
        Fault::StopConnectedNode => {
            let n = node_of_process(&gateway.admin).await;
            cluster(&["stop", &n.to_string()]).await;
            wait_until(Duration::from_secs(10), "the gateway is on another node", || async {
                node_of_process(&gateway.admin).await != n
            })
            .await;
            load_moves_on(scene, 100, "the load goes on with the node down").await;
            cluster(&["start", &n.to_string()]).await;
            format!("r{n} (the gateway's) stopped, started again")
        }
        Fault::KillLeader => {
            let n = leader(&stack.topology.queue()).await;
            cluster(&["kill", &n.to_string()]).await;
            load_moves_on(scene, 100, "the load goes on with the leader's node killed").await;
            cluster(&["start", &n.to_string()]).await;
            format!("leader r{n} SIGKILLed, started again")
        }
        Fault::FreezeConnectedNode => {
            let n = node_of_process(&gateway.admin).await;
            cluster(&["freeze", &n.to_string()]).await;
            // The fault itself: a node hung for FREEZE, as a long GC pause or a stalled VM would.
            tokio::time::sleep(FREEZE).await;
            cluster(&["thaw", &n.to_string()]).await;
            load_moves_on(scene, 100, "the load goes on after the thaw").await;
            format!("r{n} (the gateway's) SIGSTOPped {} s, resumed", FREEZE.as_secs())
        }
        Fault::RollingRestart => {
            for n in 1..=3u8 {
                let started = std::time::Instant::now();
                // As an operator would: only stop a node whose quorum queues keep a majority without it.
                cluster(&["await-quorum", &n.to_string()]).await;
                let quorum = started.elapsed();
                assert!(stack.processed().await < scene.total, "the load ended before r{n}'s restart: make it longer");
                cluster(&["stop", &n.to_string()]).await;
                cluster(&["start", &n.to_string()]).await;
                eprintln!("rolling restart: r{n} restarted {:?} after quorum wait of {quorum:?}", started.elapsed());
                load_moves_on(scene, 50, "the load goes on after the restart").await;
            }
            "r1, r2, r3 restarted one at a time".to_owned()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops cluster nodes; run with `make test-cluster`"]
async fn the_node_the_services_use_is_stopped_under_load_and_the_gateway_queues_again_within_5_s() {
    let longest = run("c-stop", "1 node stopped", Fault::StopConnectedNode).await;
    assert!(longest < Duration::from_secs(5), "the gateway refused for {longest:?}, more than 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kills cluster nodes; run with `make test-cluster`"]
async fn the_queue_leaders_node_is_killed_with_sigkill_under_load() {
    run("c-kill", "2 leader killed", Fault::KillLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "freezes cluster nodes; run with `make test-cluster`"]
async fn a_node_frozen_for_15_s_under_load_loses_nothing() {
    run("c-freeze", "3 node frozen", Fault::FreezeConnectedNode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts cluster nodes; run with `make test-cluster`"]
async fn a_rolling_restart_of_all_three_nodes_under_load_loses_nothing() {
    run("c-roll", "4 rolling restart", Fault::RollingRestart).await;
}

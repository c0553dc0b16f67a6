//! Queue arguments on a real broker: a new topology gets the delivery limit, leader locator and
//! initial group size of this release; a main queue declared by an older release (3.10-era
//! arguments, `x-delivery-limit` 20, no locator) is kept as it is and the worker, its retry and
//! dead-letter publisher (the gateway's code) and the queue all keep working.
//!
//! Arguments are read with `rabbitmqctl list_queues name arguments`: the host's, or
//! `scripts/cluster.sh ctl N` when `AMQP_URL` names a node of the RabbitMQ 4.0 cluster or the single
//! 4.0 node (`RABBITMQCTL` overrides both).

use std::time::Duration;

use clerk_sync_core::amqp::{Topology, headers};
use clerk_sync_core::samples::{envelope, user};
use clerk_sync_store::db;
use clerk_sync_testkit::{BrokerProbe, TestDatabase, unique_prefix, wait_until};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::{Value, json};

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

/// Like `setup`, but the test decides what exists on the broker beforehand.
async fn bare_setup(label: &str) -> TestEnv {
    clerk_sync_core::telemetry::init_for_tests();
    let db = TestDatabase::create(label).await;
    let pool = db.connect().await;
    db::migrate(&pool).await.expect("migrations apply");
    let prefix = unique_prefix(label);
    // The defaults of this release, as the worker will declare them.
    let topology = Topology::new(prefix.clone(), 1000);
    TestEnv { db, pool, prefix, topology, probe: BrokerProbe::connect().await }
}

/// The `rabbitmqctl` of the broker under test: `RABBITMQCTL`, else `scripts/cluster.sh ctl N` when
/// `AMQP_URL` names one of its nodes (port 5680 + N), else the host's `rabbitmqctl`.
fn rabbitmqctl() -> String {
    if let Ok(command) = std::env::var("RABBITMQCTL") {
        return command;
    }
    let node = clerk_sync_testkit::amqp_url()
        .parse::<lapin::uri::AMQPUri>()
        .ok()
        .and_then(|uri| uri.authority.port.checked_sub(5680))
        .filter(|n| *n <= 3);
    match node {
        Some(n) => format!("{}/../../scripts/cluster.sh ctl {n}", env!("CARGO_MANIFEST_DIR")),
        None => "rabbitmqctl".to_owned(),
    }
}

/// The arguments `rabbitmqctl` reports for `queue` (blocking: it takes about a second).
fn queue_arguments(queue: &str) -> Value {
    let command = rabbitmqctl();
    let mut parts = command.split_whitespace();
    let output = std::process::Command::new(parts.next().expect("RABBITMQCTL names a command"))
        .args(parts)
        .args(["list_queues", "-q", "--formatter", "json", "name", "arguments"])
        .output()
        .expect("run rabbitmqctl");
    assert!(output.status.success(), "rabbitmqctl: {}", String::from_utf8_lossy(&output.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).expect("rabbitmqctl prints JSON");
    let row = rows.into_iter().find(|r| r["name"] == queue).unwrap_or_else(|| panic!("{queue} is listed"));
    // 3.10 prints [name, type, value] triples, 4.x an object: both become {name: value}.
    match &row["arguments"] {
        Value::Array(triples) => triples.iter().map(|t| (t[0].as_str().unwrap().to_owned(), t[2].clone())).collect(),
        other => other.clone(),
    }
}

async fn wait_consuming(env: &TestEnv, worker: &RunningWorker) {
    wait_until(Duration::from_secs(20), "the worker consumes", || async {
        env.metrics(worker).await.contains(r#"clerk_sync_worker_consumer_state{state="consuming"} 1"#)
    })
    .await;
}

#[tokio::test]
async fn a_new_topology_is_declared_with_the_delivery_limit_a_balanced_leader_and_three_replicas() {
    let env = bare_setup("qargs").await;
    let worker = env.start_worker().await;
    wait_consuming(&env, &worker).await;
    let main = queue_arguments(&env.topology.queue());
    assert_eq!(main["x-delivery-limit"], json!(1000), "{main}");
    assert_eq!(main["x-queue-leader-locator"], json!("balanced"), "{main}");
    assert_eq!(main["x-quorum-initial-group-size"], json!(3), "{main}");
    assert_eq!(main["x-queue-type"], json!("quorum"), "{main}");
    for queue in env.topology.queues(&retry_delays()).into_iter().skip(1) {
        let args = queue_arguments(&queue);
        assert_eq!(args["x-queue-leader-locator"], json!("balanced"), "{queue}: {args}");
        assert_eq!(args["x-quorum-initial-group-size"], json!(3), "{queue}: {args}");
    }
    worker.stop().await;
    env.cleanup().await;
}

fn old_main_queue_arguments(topology: &Topology) -> FieldTable {
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    let mut table = FieldTable::default();
    for (k, v) in [
        ("x-queue-type", text("quorum")),
        ("x-dead-letter-exchange", text(&topology.dead_exchange())),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
        ("x-delivery-limit", AMQPValue::LongLongInt(20)),
    ] {
        table.insert(ShortString::from(k), v);
    }
    table
}

#[tokio::test]
async fn a_main_queue_declared_by_an_older_release_is_kept_and_the_worker_applies_and_dead_letters_through_it() {
    let env = bare_setup("qold").await;
    let queue = env.topology.queue();
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    env.probe
        .channel()
        .queue_declare(queue.as_str().into(), durable, old_main_queue_arguments(&env.topology))
        .await
        .expect("the old release's queue");

    // Twice: the second start meets every queue already there, some old, some new.
    for round in 0..2i64 {
        let worker = env.start_worker().await;
        wait_consuming(&env, &worker).await;
        let id = format!("user_{round}");
        env.publish_event(&svix_id(), &envelope("user.created", user(&id, "v0", "x@example.com", T), T)).await;
        // Poison: dead-lettered by the worker's publisher, the same code the gateway publishes with.
        env.publish(&svix_id(), b"{not json").await;
        env.wait_processed(round + 1, Duration::from_secs(20)).await;
        let dead = env.dead_letters(Duration::from_secs(5)).await;
        assert_eq!(dead.len(), 1, "round {round}: the poison message is dead-lettered");
        let reason = clerk_sync_core::amqp::get_str(dead[0].delivery.properties.headers().as_ref(), headers::ERROR);
        assert!(reason.is_some_and(|r| !r.is_empty()), "with its reason");
        worker.stop().await;
    }

    let main = queue_arguments(&queue);
    assert_eq!(main["x-delivery-limit"], json!(20), "kept as it was: {main}");
    assert_eq!(main.get("x-queue-leader-locator"), None, "{main}");
    let dead = queue_arguments(&env.topology.dead_queue());
    assert_eq!(dead["x-queue-leader-locator"], json!("balanced"), "queues it created are new: {dead}");
    env.cleanup().await;
}

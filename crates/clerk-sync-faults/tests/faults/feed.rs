//! The change feed's relay across a RabbitMQ restart and a SIGKILL of a worker (issue 21): every
//! change the feed holds reaches a durable queue bound to `<prefix>.changes` at least once, and
//! per object the first arrivals come in position order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clerk_sync_testkit::{BrokerProbe, wait_until};
use lapin::ExchangeKind;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};

use crate::helpers::*;

#[tokio::test]
#[ignore = "restarts shared services; run with `make test-faults`"]
async fn the_relay_loses_no_change_across_a_rabbitmq_restart_and_a_killed_worker() {
    let mut stack = Stack::new("f-feed").await;
    // The application's queue: durable and quorum, so it outlives the restart; bound before any
    // change exists (the relay does not replay what nobody was bound for).
    let probe = BrokerProbe::connect().await;
    let exchange = format!("{}.changes", stack.prefix);
    let queue = format!("{}.app-changes", stack.prefix);
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    probe
        .channel()
        .exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    probe.channel().queue_declare(queue.as_str().into(), options, args).await.unwrap();
    probe
        .channel()
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    drop(probe);

    stack.spawn_worker();
    stack.spawn_worker();
    let gateway = stack.spawn_gateway().await;
    let history = History::new(40, 25);
    let load = deliver(&history, std::slice::from_ref(&gateway.url), 32, Duration::from_secs(240));
    let inject = async {
        wait_until(Duration::from_secs(60), "load is flowing", || async { stack.processed().await >= 100 }).await;
        run("rabbitmqctl", &["stop_app"]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        run("rabbitmqctl", &["start_app"]);
        run("rabbitmqctl", &["await_startup"]);
        wait_until(Duration::from_secs(60), "load flows again", || async { stack.processed().await >= 400 }).await;
        // The first worker started first, so it most likely leads: kill it mid-relay.
        let mut leader = stack.children.remove(0);
        let _ = leader.kill();
        let _ = leader.wait();
        stack.spawn_worker();
    };
    let (stats, ()) = tokio::join!(load, inject);
    let verified = stack.verify(&history, Duration::from_secs(120)).await;

    wait_until(Duration::from_secs(60), "the relay has published every change", || async {
        let (last, relayed, pending): (i64, i64, bool) = sqlx::query_as(
            "SELECT last_position, relayed_position, EXISTS (SELECT 1 FROM clerk.changes WHERE position IS NULL)
             FROM clerk.change_feed_state",
        )
        .fetch_one(&stack.pool)
        .await
        .unwrap_or((0, -1, true));
        !pending && last == relayed && last > 0
    })
    .await;
    let last: i64 =
        sqlx::query_scalar("SELECT last_position FROM clerk.change_feed_state").fetch_one(&stack.pool).await.unwrap();
    let probe = BrokerProbe::connect().await;
    let messages = probe.drain(&queue, Duration::from_secs(3)).await;
    let mut seen = BTreeSet::new();
    let mut per_object: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for m in &messages {
        let change: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
        let position = change["position"].as_i64().unwrap();
        if seen.insert(position) {
            let key =
                (change["resource"].as_str().unwrap().to_owned(), change["object_id"].as_str().unwrap().to_owned());
            per_object.entry(key).or_default().push(position);
        }
    }
    assert_eq!(seen, (1..=last).collect::<BTreeSet<_>>(), "every change reached the queue");
    for (object, positions) in &per_object {
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{object:?} in order: {positions:?}");
    }
    println!(
        "feed relay: {last} changes, {} messages ({} repeats) across a broker restart and a SIGKILL",
        messages.len(),
        messages.len() - seen.len()
    );
    report("relay across RabbitMQ restart + worker SIGKILL", 32, "broker down 5 s, leader killed", &stats, &verified);
    let _ = probe.channel().queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = probe.channel().exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
    stack.cleanup().await;
}

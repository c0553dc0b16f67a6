//! The RabbitMQ consumer example (`examples/changes_consumer.rs`, compiled into this test): its
//! queue bound to `<prefix>.changes` with `user.created` gets exactly one change per user created,
//! and nothing else, from the relay of a real worker.

use std::collections::BTreeSet;
use std::time::Duration;

use clerk_sync_core::samples::{envelope, user};
use clerk_sync_testkit::amqp_url;

use crate::helpers::*;

#[path = "../../examples/changes_consumer.rs"]
#[allow(dead_code)]
mod example;

const T: i64 = 1_716_883_200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_consumer_example_gets_one_user_created_change_per_new_user_through_its_binding() {
    let env = setup("feed_consumer").await;
    let worker = env.start_worker().await;
    let (prefix, queue) = (env.prefix.clone(), format!("{}.example-welcome", env.prefix));
    // The relay declares the exchange when its worker starts leading; the example binds to it, and
    // must be bound before the changes are published (the relay does not replay).
    clerk_sync_testkit::wait_until(Duration::from_secs(20), "the relay declares its exchange", || async {
        exchange_exists(&env).await
    })
    .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let queue_name = queue.clone();
    let consumer = tokio::spawn(async move {
        example::consume(&amqp_url(), &prefix, &queue_name, &["user.created"], |c| tx.send(c.clone()).is_ok()).await
    });
    clerk_sync_testkit::wait_until(Duration::from_secs(20), "the example consumes its queue", || async {
        consumers(&queue).await > 0
    })
    .await;
    for u in 0..5 {
        let id = format!("user_{u:03}");
        env.publish_event(&svix_id(), &envelope("user.created", user(&id, "First", "a@example.com", T), T)).await;
        env.publish_event(&svix_id(), &envelope("user.updated", user(&id, "Second", "a@example.com", T + 1), T + 1))
            .await;
    }
    let mut created = BTreeSet::new();
    while created.len() < 5 {
        let change = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("a change in time").unwrap();
        assert_eq!((change.resource.as_str(), change.operation.as_str()), ("user", "created"), "{change:?}");
        assert!(created.insert(change.object_id.clone()), "one change per user: {change:?}");
    }
    // Nothing else arrives: the updates are routed elsewhere.
    assert!(tokio::time::timeout(Duration::from_millis(500), rx.recv()).await.is_err());
    consumer.abort();
    worker.stop().await;
    let _ = env.probe.channel().queue_delete(queue.as_str().into(), Default::default()).await;
    let exchange = clerk_sync_worker::feed::exchange(&env.prefix);
    let _ = env.probe.channel().exchange_delete(exchange.as_str().into(), Default::default()).await;
    env.cleanup().await;
}

async fn consumers(queue: &str) -> u32 {
    let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let n = channel.queue_declare(queue.into(), passive, Default::default()).await.map_or(0, |q| q.consumer_count());
    let _ = connection.close(200, "probe".into()).await;
    n
}

async fn exchange_exists(env: &TestEnv) -> bool {
    let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = lapin::options::ExchangeDeclareOptions { passive: true, ..Default::default() };
    let exchange = clerk_sync_worker::feed::exchange(&env.prefix);
    let found = channel
        .exchange_declare(exchange.as_str().into(), lapin::ExchangeKind::Topic, passive, Default::default())
        .await
        .is_ok();
    let _ = connection.close(200, "probe".into()).await;
    found
}

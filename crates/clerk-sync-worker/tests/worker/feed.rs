//! The change feed (migration 10, `feed/`): the cursor cannot skip under concurrent writers and
//! racing sequencers; through the real gateway and several workers, a shuffled, duplicated history
//! gives per object strictly increasing versions ending at the final row, a cursor reader running
//! throughout sees every change once, and the relay publishes every change in order per object,
//! also across a leader killed with SIGKILL.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use clerk_sync_core::samples::{envelope, user};
use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_store::feed::{self, Change};
use clerk_sync_testkit::{amqp_url, signed_post, wait_until};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

/// Reads the cursor until `done` and nothing more comes: every change it returns, in order.
async fn read_cursor(pool: PgPool, done: Arc<AtomicBool>) -> Vec<Change> {
    let (mut seen, mut position) = (Vec::new(), 0);
    loop {
        let finished = done.load(Ordering::SeqCst);
        let batch = feed::after(&pool, position, None, 500).await.unwrap();
        if let Some(last) = batch.last() {
            position = last.position;
        } else if finished
            && !feed::pending(&pool).await.unwrap()
            && feed::last_position(&pool).await.unwrap() == position
        {
            return seen;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen.extend(batch);
    }
}

/// Per object, in position order: versions strictly increase (a deletion keeps the version; a
/// later version may still update a tombstone's non-personal columns).
fn assert_ordered_per_object(changes: &[Change]) -> BTreeMap<(String, String), Vec<&Change>> {
    let mut by_object: BTreeMap<(String, String), Vec<&Change>> = BTreeMap::new();
    for c in changes {
        by_object.entry((c.resource.clone(), c.object_id.clone())).or_default().push(c);
    }
    for (object, list) in &by_object {
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(a.position < b.position, "{object:?}: positions in order");
            assert!(
                b.version > a.version || (b.operation == "deleted" && b.version == a.version),
                "{object:?}: version {:?} at position {} after {:?} at {}",
                b.version,
                b.position,
                a.version,
                a.position
            );
        }
    }
    by_object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_reader_misses_no_change_while_concurrent_writers_commit_out_of_order() {
    let env = setup("feed_cursor").await;
    let clock = Arc::new(AtomicI64::new(T));
    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_cursor(env.pool.clone(), done.clone()));
    // Two sequencers racing: the state row's lock must serialize their rounds.
    let sequencers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, done) = (env.pool.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) || feed::pending(&pool).await.unwrap() {
                    feed::sequence(&pool, 50).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    // Eight writers on twelve users: row-lock waits, and commits held open for a random while,
    // so `seq` order and commit order differ across objects.
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let (pool, clock) = (env.pool.clone(), clock.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w);
                for _ in 0..60 {
                    let mut ids: Vec<String> =
                        (0..rng.random_range(1..4)).map(|_| format!("user_{}", rng.random_range(0..12))).collect();
                    ids.sort();
                    ids.dedup();
                    let upserts: Vec<Value> = ids
                        .iter()
                        .map(|id| {
                            let at = clock.fetch_add(1_000, Ordering::SeqCst);
                            let svix = svix_id();
                            json!({"id": id, "first_name": format!("v{at}"), "updated_at": ms(at), "raw": {},
                                   "version_at": ms(at), "version_svix_id": svix})
                        })
                        .collect();
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query("SELECT count(*) FROM clerk.apply_batch(users => $1)")
                        .bind(json!({"upserts": upserts, "deletions": []}))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    sqlx::query("SELECT pg_sleep($1)")
                        .bind(rng.random_range(0.0..0.01))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for s in sequencers {
        s.await.unwrap();
    }
    let seen = reader.await.unwrap();

    let all: Vec<(i64, Option<i64>)> =
        sqlx::query_as("SELECT seq, position FROM clerk.changes ORDER BY position").fetch_all(&env.pool).await.unwrap();
    assert!(all.len() > 300, "the writers made changes: {}", all.len());
    assert!(all.iter().all(|(_, p)| p.is_some()), "every change has a position");
    let positions: Vec<i64> = seen.iter().map(|c| c.position).collect();
    let expected: Vec<i64> = (1..=i64::try_from(all.len()).unwrap()).collect();
    assert_eq!(positions, expected, "the reader saw every position once, in order, with no gap");
    let by_object = assert_ordered_per_object(&seen);
    for ((_, id), list) in by_object {
        let row: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT updated_at FROM clerk.users WHERE id = $1")
            .bind(&id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert_eq!(list.last().unwrap().version, Some(row), "{id}: the last change is the final row");
    }
    env.cleanup().await;
}

fn ms(at: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at).unwrap().to_rfc3339()
}

/// A history of `users` users, each created, updated a few times, some deleted; each event
/// delivered once or twice, all shuffled.
fn shuffled_history(rng: &mut StdRng, users: usize) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for u in 0..users {
        let id = format!("user_{u:04}");
        let mut t = T + i64::try_from(u).unwrap();
        events.push(envelope("user.created", user(&id, "First", &format!("{id}@example.com"), t), t));
        for n in 0..rng.random_range(1..5) {
            t += 1_000;
            events.push(envelope("user.updated", user(&id, &format!("Name{n}"), &format!("{id}@example.com"), t), t));
        }
        if rng.random_bool(0.3) {
            t += 1_000;
            events.push(envelope("user.deleted", json!({"id": id, "object": "user", "deleted": true}), t));
        }
    }
    let mut out: Vec<(String, Value)> = Vec::new();
    for e in events {
        let id = svix_id();
        if rng.random_bool(0.3) {
            out.push((id.clone(), e.clone()));
        }
        out.push((id, e));
    }
    out.shuffle(rng);
    out
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Posts every event, signed, to a real gateway (in-process, port 0), each until it is accepted.
async fn through_the_gateway(env: &TestEnv, history: &[(String, Value)]) {
    let sources = Sources { env: env.sources().env, ..Default::default() }
        .with_env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
        .with_env("CLERK_SYNC__GATEWAY__LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__GATEWAY__ADMIN_LISTEN", "127.0.0.1:0");
    let gateway = clerk_sync_gateway::Application::build(&Settings::load(&sources, &[]).unwrap()).await.unwrap();
    let url = format!("http://127.0.0.1:{}/webhooks/clerk", gateway.port());
    let stop = gateway.shutdown_token();
    let task = tokio::spawn(gateway.run_until_stopped());
    let (client, secret) = (reqwest::Client::new(), SecretString::from(SECRET.to_owned()));
    for (id, event) in history {
        let body = event.to_string();
        wait_until(Duration::from_secs(20), "the gateway accepts the event", || async {
            let ts = chrono::Utc::now().timestamp();
            let sent = signed_post(&client, &url, &secret, id, ts, body.as_bytes()).send().await;
            sent.is_ok_and(|r| r.status() == 202)
        })
        .await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// A queue bound to `<prefix>.changes` with `#`, collecting every message's change. Dropping the
/// connection deletes the queue (auto-delete); [`unbind_all`] deletes the exchange.
async fn bind_all(env: &TestEnv) -> (Connection, Arc<Mutex<Vec<Change>>>) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let exchange = clerk_sync_worker::feed::exchange(&env.prefix);
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .unwrap();
    let queue = format!("{}.test-changes", env.prefix);
    let options = QueueDeclareOptions { auto_delete: true, ..Default::default() };
    channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await.unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = channel
        .basic_consume(queue.as_str().into(), "test".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let change: Change = serde_json::from_slice(&delivery.data).expect("a change");
            assert_eq!(delivery.routing_key.as_str(), change.routing_key());
            sink.lock().await.push(change);
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
    });
    (connection, received)
}

async fn unbind_all(env: &TestEnv, connection: Connection) {
    let channel = connection.create_channel().await.unwrap();
    let exchange = clerk_sync_worker::feed::exchange(&env.prefix);
    channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
}

/// Every position 1..=last arrived, and per object the first arrivals are in position order.
fn assert_relayed(received: &[Change], last: i64) {
    let positions: BTreeSet<i64> = received.iter().map(|c| c.position).collect();
    assert_eq!(positions, (1..=last).collect::<BTreeSet<_>>(), "every change was published");
    let mut newest: HashMap<(&str, &str), i64> = HashMap::new();
    for c in received {
        let key = (c.resource.as_str(), c.object_id.as_str());
        let before = newest.get(&key).copied().unwrap_or(0);
        // A redelivery (after a relay restart) may repeat older positions; a new one is the next.
        if c.position > before {
            newest.insert(key, c.position);
        }
    }
    let mut first_seen: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    let mut done = BTreeSet::new();
    for c in received {
        if done.insert(c.position) {
            first_seen.entry((c.resource.as_str(), c.object_id.as_str())).or_default().push(c.position);
        }
    }
    for (object, list) in first_seen {
        assert!(list.windows(2).all(|w| w[0] < w[1]), "{object:?}: published in order: {list:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shuffled_duplicated_history_through_the_gateway_and_three_workers_feeds_each_change_once_and_in_order() {
    let env = setup("feed_history").await;
    let (amqp, received) = bind_all(&env).await;
    let workers = vec![env.start_worker().await, env.start_worker().await, env.start_worker().await];
    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_cursor(env.pool.clone(), done.clone()));
    let history = shuffled_history(&mut StdRng::seed_from_u64(21), 150);
    let distinct: BTreeSet<&str> = history.iter().map(|(id, _)| id.as_str()).collect();
    through_the_gateway(&env, &history).await;
    env.wait_processed(i64::try_from(distinct.len()).unwrap(), Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(20), "every change is positioned", || async {
        !feed::pending(&env.pool).await.unwrap()
    })
    .await;
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let last = feed::last_position(&env.pool).await.unwrap();
    let positions: Vec<i64> = seen.iter().map(|c| c.position).collect();
    assert_eq!(positions, (1..=last).collect::<Vec<_>>(), "the reader saw every change exactly once");
    let by_object = assert_ordered_per_object(&seen);
    assert_eq!(by_object.len(), 150, "every user has changes");
    for ((_, id), list) in &by_object {
        let row = env.row("users", id).await.expect("the row");
        let last_change = list.last().unwrap();
        let tombstone = !row["deleted_at"].is_null();
        assert_eq!(
            list.iter().any(|c| c.operation == "deleted"),
            tombstone,
            "{id}: deleted in the feed iff a tombstone"
        );
        assert_ne!(list[0].operation, "updated", "{id}: the first change makes the row");
        let updated_at: Option<chrono::DateTime<chrono::Utc>> =
            serde_json::from_value(row["updated_at"].clone()).unwrap();
        assert_eq!(last_change.version, updated_at, "{id}: the last change has the final row's version");
        assert!(last_change.svix_id.is_some() && last_change.event_type.is_some(), "{id}: names its event");
    }
    // Stale and duplicate deliveries changed nothing: fewer changes than events.
    assert!(seen.len() < distinct.len());
    wait_until(Duration::from_secs(20), "the relay published every change", || async {
        received.lock().await.iter().map(|c| c.position).collect::<BTreeSet<_>>().len()
            == usize::try_from(last).unwrap()
    })
    .await;
    assert_relayed(&received.lock().await, last);
    // The leader's gauges: set once it has stored the progress (just after the confirms).
    let relayed = format!("clerk_sync_worker_feed_relayed_position {last}");
    wait_until(Duration::from_secs(10), "the leader reports the relayed position", || async {
        let mut leaders = Vec::new();
        for w in &workers {
            let metrics = env.metrics(w).await;
            if metrics.lines().any(|l| l == "clerk_sync_worker_feed_leader 1") {
                leaders.push(metrics.lines().any(|l| l == relayed));
            }
        }
        leaders == [true]
    })
    .await;
    for w in workers {
        w.stop().await;
    }
    unbind_all(&env, amqp).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_loses_no_change_when_its_leader_is_killed_and_another_worker_takes_over() {
    let env = setup("feed_failover").await;
    let (amqp, received) = bind_all(&env).await;
    let first = env.spawn_worker_process();
    let history = shuffled_history(&mut StdRng::seed_from_u64(7), 200);
    let distinct: BTreeSet<&str> = history.iter().map(|(id, _)| id.as_str()).collect();
    let (head, tail) = history.split_at(history.len() / 2);
    for (id, event) in head {
        env.publish_event(id, event).await;
    }
    wait_until(Duration::from_secs(30), "the first worker relays some changes", || async {
        !received.lock().await.is_empty()
    })
    .await;
    first.kill();
    let second = env.start_worker().await;
    for (id, event) in tail {
        env.publish_event(id, event).await;
    }
    env.wait_processed(i64::try_from(distinct.len()).unwrap(), Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(20), "every change is positioned", || async {
        !feed::pending(&env.pool).await.unwrap()
    })
    .await;
    let last = feed::last_position(&env.pool).await.unwrap();
    wait_until(Duration::from_secs(30), "the new leader published every change", || async {
        received.lock().await.iter().map(|c| c.position).collect::<BTreeSet<_>>().len()
            == usize::try_from(last).unwrap()
    })
    .await;
    assert_relayed(&received.lock().await, last);
    second.stop().await;
    unbind_all(&env, amqp).await;
    env.cleanup().await;
}

//! Broker reconnects while the database holds the worker back: the lanes of a lost channel give
//! their deliveries back before the next channel starts, so what the worker holds stays within one
//! prefetch however often it reconnects (`clerk_sync_worker_messages_held`); and while the database
//! is down no new consumer starts at all. Nothing is dead-lettered, everything is applied once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use clerk_sync_core::samples::{envelope, user};
use clerk_sync_core::settings::Sources;
use clerk_sync_testkit::{TcpProxy, amqp_url, wait_until};

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;
const PREFETCH: i64 = 64;
const EVENTS: usize = 300;
const RECONNECTS: usize = 4;

/// A proxy in front of the test broker, and `AMQP_URL` rewritten to go through it.
async fn broker_proxy() -> (TcpProxy, String) {
    let url = amqp_url();
    let uri: lapin::uri::AMQPUri = url.parse().expect("AMQP_URL parses");
    let authority = format!("{}:{}", uri.authority.host, uri.authority.port);
    let target = tokio::net::lookup_host(authority.as_str()).await.unwrap().next().expect("broker address");
    let proxy = TcpProxy::start(target).await;
    assert!(url.contains(&authority), "AMQP_URL must name its port explicitly: {url}");
    let via = url.replacen(&authority, &proxy.addr().to_string(), 1);
    (proxy, via)
}

fn gauge(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(-1, |v| v as i64)
}

async fn held(env: &TestEnv, worker: &RunningWorker) -> i64 {
    gauge(&env.metrics(worker).await, "clerk_sync_worker_messages_held")
}

/// Samples `messages_held` every few milliseconds until dropped; returns the highest seen.
fn sample_held(admin_port: u16) -> (Arc<AtomicI64>, tokio::task::JoinHandle<()>) {
    let max = Arc::new(AtomicI64::new(0));
    let task = {
        let max = max.clone();
        tokio::spawn(async move {
            // No keep-alive: an idle pooled connection would hold up the admin server's graceful stop.
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
            loop {
                if let Ok(r) = client.get(format!("http://127.0.0.1:{admin_port}/metrics")).send().await
                    && let Ok(text) = r.text().await
                {
                    max.fetch_max(gauge(&text, "clerk_sync_worker_messages_held"), Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    (max, task)
}

async fn publish_users(env: &TestEnv, n: usize) {
    for i in 0..n {
        let id = format!("user_{i:04}");
        env.publish_event(&svix_id(), &envelope("user.created", user(&id, "v0", "x@example.com", T), T)).await;
    }
}

/// The worker's settings for these tests: through the broker proxy, a small prefetch, two lanes.
fn through(amqp: &str) -> impl FnOnce(Sources) -> Sources {
    let amqp = amqp.to_owned();
    move |s| {
        s.with_env("AMQP_URL", amqp)
            .with_env("CLERK_SYNC__WORKER__PREFETCH", PREFETCH.to_string())
            .with_env("CLERK_SYNC__WORKER__CONCURRENCY", "2")
    }
}

#[tokio::test]
async fn lanes_stuck_on_a_locked_table_give_their_deliveries_back_on_every_reconnect_so_the_worker_never_holds_more_than_a_prefetch()
 {
    let env = setup("held").await;
    let (broker, amqp) = broker_proxy().await;
    // Every write waits for the lock below and gives up after 100 ms (a conflict: retried, held,
    // and invisible to the health probe, so the worker keeps reconnecting while its lanes wait).
    let dbname: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&env.pool).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{dbname}\" SET lock_timeout = '100ms'")))
        .execute(&env.pool)
        .await
        .unwrap();
    let mut lock = env.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = 0").execute(&mut *lock).await.unwrap();
    sqlx::query("LOCK TABLE clerk.webhook_events IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();

    let worker = env.start_worker_with(through(&amqp)).await;
    let (max_held, sampler) = sample_held(worker.admin_port);
    publish_users(&env, EVENTS).await;
    wait_until(Duration::from_secs(20), "the worker holds a full prefetch, stuck on the lock", || async {
        held(&env, &worker).await == PREFETCH
    })
    .await;

    for cycle in 1..=RECONNECTS {
        broker.cut();
        wait_until(Duration::from_secs(20), &format!("cycle {cycle}: the lost channel's lanes let go"), || async {
            held(&env, &worker).await == 0
        })
        .await;
        broker.restore();
        wait_until(Duration::from_secs(20), &format!("cycle {cycle}: a new channel holds a prefetch"), || async {
            held(&env, &worker).await == PREFETCH
        })
        .await;
        let seen = max_held.load(Ordering::SeqCst);
        assert!(seen <= PREFETCH, "cycle {cycle}: held {seen} messages, more than a prefetch ({PREFETCH})");
    }

    lock.rollback().await.unwrap();
    env.wait_processed(EVENTS as i64, Duration::from_secs(60)).await;
    sampler.abort();
    let seen = max_held.load(Ordering::SeqCst);
    assert!(seen <= PREFETCH, "held {seen} messages at most, more than a prefetch ({PREFETCH})");
    println!("HELD | {RECONNECTS} reconnects while stuck | at most {seen} messages held (prefetch {PREFETCH})");
    assert!(env.dead_letters(Duration::from_millis(200)).await.is_empty(), "nothing is dead-lettered");
    assert_eq!(env.table("users").await.len(), EVENTS);
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn while_postgres_is_down_a_lost_broker_connection_gives_everything_back_and_no_consumer_starts_until_it_returns()
{
    let env = setup("heldpg").await;
    let (broker, amqp) = broker_proxy().await;
    let pg = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let db_url = env.db.url_via(pg.addr());
    let customize = through(&amqp);
    let worker = env.start_worker_with(move |s| customize(s).with_env("DATABASE_URL", db_url)).await;
    wait_until(Duration::from_secs(20), "the worker consumes", || async {
        env.metrics(&worker).await.contains(r#"clerk_sync_worker_consumer_state{state="consuming"} 1"#)
    })
    .await;
    let (max_held, sampler) = sample_held(worker.admin_port);

    pg.cut();
    publish_users(&env, EVENTS).await;
    wait_until(Duration::from_secs(20), "the worker pauses holding a prefetch", || async {
        let m = env.metrics(&worker).await;
        m.contains(r#"clerk_sync_worker_consumer_state{state="paused"} 1"#)
            && gauge(&m, "clerk_sync_worker_messages_held") == PREFETCH
    })
    .await;
    let queue = env.topology.queue();
    for cycle in 1..=RECONNECTS {
        broker.cut();
        wait_until(Duration::from_secs(20), &format!("cycle {cycle}: everything is back in the queue"), || async {
            held(&env, &worker).await == 0 && env.probe.ready_count(&queue).await == EVENTS as u32
        })
        .await;
        broker.restore();
    }
    // Broker reachable, database not: the worker must not take the messages again. An absence
    // needs a window: four times the test's longest reconnect backoff (500 ms), polled.
    let window = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < window {
        let m = env.metrics(&worker).await;
        assert!(m.contains(r#"clerk_sync_worker_consumer_state{state="paused"} 1"#), "still paused, not consuming");
        assert_eq!(gauge(&m, "clerk_sync_worker_messages_held"), 0, "no new consumer while the database is down");
        assert_eq!(env.probe.ready_count(&queue).await, EVENTS as u32);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    pg.restore();
    env.wait_processed(EVENTS as i64, Duration::from_secs(60)).await;
    sampler.abort();
    let seen = max_held.load(Ordering::SeqCst);
    assert!(seen <= PREFETCH, "held {seen} messages at most, more than a prefetch ({PREFETCH})");
    assert!(env.dead_letters(Duration::from_millis(200)).await.is_empty(), "an outage is not poison");
    worker.stop().await;
    env.cleanup().await;
}

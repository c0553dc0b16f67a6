//! Faults around the worker: the database going away, a worker killed with SIGKILL, a graceful
//! stop under load. Nothing is lost, nothing is applied twice, nothing is dead-lettered for them.

use std::time::Duration;

use clerk_sync_core::samples::{envelope, user};
use clerk_sync_testkit::{TcpProxy, wait_until};

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

/// `n` updates spread over `users` users; update k of a user has updated_at T + k.
async fn publish_updates(env: &TestEnv, users: usize, n: usize, offset: usize) {
    for i in offset..offset + n {
        let u = format!("user_{:04}", i % users);
        let k = i64::try_from(i / users).unwrap();
        let body = envelope("user.updated", user(&u, &format!("v{k}"), "x@example.com", T + k), T + k);
        env.publish_event(&svix_id(), &body).await;
    }
}

async fn assert_latest(env: &TestEnv, users: usize, total: usize) {
    let rows = env.table("users").await;
    assert_eq!(rows.len(), users);
    for row in rows {
        let i: usize = row["id"].as_str().unwrap()[5..].parse().unwrap();
        let updates = (total - i).div_ceil(users);
        assert_eq!(row["first_name"], format!("v{}", updates - 1), "{row}");
    }
}

#[tokio::test]
async fn while_postgres_is_unreachable_the_worker_pauses_and_dead_letters_nothing_then_catches_up() {
    let env = setup("pgdown").await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = env.db.url_via(proxy.addr());
    let worker = env.start_worker_with(|s| s.with_env("DATABASE_URL", url)).await;
    publish_updates(&env, 20, 40, 0).await;
    env.wait_processed(40, Duration::from_secs(20)).await;

    proxy.cut();
    publish_updates(&env, 20, 60, 40).await;
    wait_until(Duration::from_secs(20), "the worker reports the database down", || async {
        let m = env.metrics(&worker).await;
        m.contains(r#"clerk_sync_worker_consumer_state{state="paused"} 1"#)
            && m.contains("clerk_sync_worker_database_up 0")
    })
    .await;
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", worker.admin_port)).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while the database is down");
    assert!(env.dead_letters(Duration::ZERO).await.is_empty(), "an outage is not poison");

    proxy.restore();
    env.wait_processed(100, Duration::from_secs(30)).await;
    assert!(env.dead_letters(Duration::ZERO).await.is_empty());
    assert_latest(&env, 20, 100).await;
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let env = setup("kill").await;
    publish_updates(&env, 50, 3_000, 0).await;
    let victim = env.spawn_worker_process();
    wait_until(Duration::from_secs(30), "the victim is part-way through", || async { env.processed().await >= 300 })
        .await;
    victim.kill();
    let after_kill = env.processed().await;
    assert!(after_kill < 3_000, "killed mid-stream ({after_kill} done)");

    let survivor = env.start_worker().await;
    env.wait_processed(3_000, Duration::from_secs(60)).await;
    assert_latest(&env, 50, 3_000).await;
    // Every svix-id is recorded once with one outcome: a redelivered message found its id
    // already committed and changed nothing.
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT svix_id) FROM clerk.webhook_events")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (3_000, 3_000));
    assert!(env.dead_letters(Duration::ZERO).await.is_empty());
    survivor.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_graceful_stop_under_load_acks_exactly_what_it_committed() {
    let env = setup("sigterm").await;
    publish_updates(&env, 40, 2_000, 0).await;
    let worker = env.start_worker().await;
    wait_until(Duration::from_secs(30), "part of the queue is processed", || async { env.processed().await >= 200 })
        .await;
    worker.stop().await;

    let committed = env.processed().await;
    let left = i64::from(env.probe.ready_count(&env.topology.queue()).await);
    assert_eq!(committed + left, 2_000, "every message is either committed and acked, or back in the queue");

    let next = env.start_worker().await;
    env.wait_processed(2_000, Duration::from_secs(60)).await;
    assert_latest(&env, 40, 2_000).await;
    next.stop().await;
    env.cleanup().await;
}

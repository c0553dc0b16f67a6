//! Whole-database conditions (a failover that lands on a standby, a revoked grant, a missing
//! schema) are outages, not poison: the worker pauses exactly as for a lost connection, for as
//! long as it lasts, and dead-letters nothing for it.

use std::time::Duration;

use clerk_sync_core::samples::{envelope, user};
use clerk_sync_testkit::wait_until;

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

fn counter(metrics: &str, name: &str) -> f64 {
    metrics.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

async fn publish_updates(env: &TestEnv, from: usize, to: usize) {
    for i in from..to {
        let k = i64::try_from(i).unwrap();
        let body = envelope(
            "user.updated",
            user(&format!("user_{:02}", i % 10), &format!("v{i}"), "ro@example.com", T + k),
            T + k,
        );
        env.publish_event(&svix_id(), &body).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_read_only_for_longer_than_the_retry_schedule_pauses_the_worker_and_dead_letters_nothing() {
    let env = setup("readonly").await;
    // max_attempts 3 with 200 ms and 400 ms between: the schedule is over in under a second.
    let worker = env.start_worker().await;
    publish_updates(&env, 0, 20).await;
    env.wait_processed(20, Duration::from_secs(20)).await;

    env.db.set_read_only(true).await;
    publish_updates(&env, 20, 60).await;
    wait_until(Duration::from_secs(20), "the worker pauses on the read-only database", || async {
        env.metrics(&worker).await.contains(r#"clerk_sync_worker_consumer_state{state="paused"} 1"#)
    })
    .await;
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", worker.admin_port)).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while the database refuses writes");
    // Many more tries than the retry schedule allows, so a poison classification would show.
    wait_until(Duration::from_secs(30), "the worker has retried well past the retry schedule", || async {
        counter(&env.metrics(&worker).await, "clerk_sync_worker_transient_errors_total") >= 12.0
    })
    .await;
    let metrics = env.metrics(&worker).await;
    assert!(
        metrics.contains(r#"clerk_sync_worker_database_pauses_total{condition="read_only"} 1"#),
        "one pause, by condition: {metrics}"
    );
    assert!(env.dead_letters(Duration::ZERO).await.is_empty(), "a read-only database is not poison");
    assert_eq!(counter(&metrics, r#"clerk_sync_worker_events_total{outcome="retried""#), 0.0);

    env.db.set_read_only(false).await;
    env.wait_processed(60, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(10), "the worker is consuming again", || async {
        env.metrics(&worker).await.contains(r#"clerk_sync_worker_consumer_state{state="consuming"} 1"#)
    })
    .await;
    assert!(env.dead_letters(Duration::ZERO).await.is_empty());
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT svix_id) FROM clerk.webhook_events")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (60, 60), "every event applied exactly once");
    for row in env.table("users").await {
        let i: usize = row["id"].as_str().unwrap()[5..].parse().unwrap();
        assert_eq!(row["first_name"], format!("v{}", 50 + i), "the newest version of each user: {row}");
    }
    worker.stop().await;
    env.cleanup().await;
}

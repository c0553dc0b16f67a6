//! Poison messages: dead-lettered with their reason, never blocking the queue, while the good
//! events around them still apply. Retryable failures go round the retry queues first.

use std::time::Duration;

use clerk_sync_core::amqp::{get_i64, get_str, headers};
use clerk_sync_core::samples::{envelope, user};
use serde_json::json;

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

/// A failure that belongs to the message, not to the database: a trigger that refuses every
/// user row (SQLSTATE P0001, which no retry within the schedule fixes). A missing table would not
/// do: that is an outage (migrations missing), which pauses the worker instead.
async fn inject_failure(env: &TestEnv) {
    for sql in [
        "CREATE FUNCTION clerk.refuse_user() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN RAISE EXCEPTION 'injected failure for %', NEW.id; END $$",
        "CREATE TRIGGER refuse_user BEFORE INSERT OR UPDATE ON clerk.users FOR EACH ROW EXECUTE FUNCTION clerk.refuse_user()",
    ] {
        sqlx::query(sql).execute(&env.pool).await.unwrap();
    }
}

async fn remove_failure(env: &TestEnv) {
    sqlx::query("DROP FUNCTION clerk.refuse_user() CASCADE").execute(&env.pool).await.unwrap();
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_their_reason_and_the_rest_of_the_batch_applies() {
    let env = setup("poison").await;
    let mut nul = user("user_nul", "bad\u{0}name", "nul@example.com", T);
    nul["public_metadata"] = json!({"k": "v\u{0}"});
    let poison: Vec<(String, Vec<u8>, &str)> = vec![
        (svix_id(), b"this is not json".to_vec(), "invalid_envelope"),
        (
            svix_id(),
            envelope("user.created", json!({"first_name": "no id", "updated_at": T}), T).to_string().into_bytes(),
            "invalid_payload",
        ),
        (
            svix_id(),
            envelope("user.updated", json!({"id": 42, "updated_at": T}), T).to_string().into_bytes(),
            "invalid_payload",
        ),
        (
            svix_id(),
            envelope("user.updated", json!({"id": "user_q"}), T).to_string().into_bytes(),
            "missing_updated_at",
        ),
        // Valid JSON that Postgres refuses (NUL in text and jsonb): found by applying one by one.
        (svix_id(), envelope("user.created", nul, T).to_string().into_bytes(), "database_rejected"),
    ];
    // Published before any worker runs, interleaved with good events, so they share batches.
    for (i, (id, body, _)) in poison.iter().enumerate() {
        env.publish(id, body).await;
        let good = envelope("user.created", user(&format!("user_ok{i}"), "Good", "ok@example.com", T), T);
        env.publish_event(&svix_id(), &good).await;
    }
    let worker = env.start_worker().await;
    env.wait_processed(5, Duration::from_secs(20)).await;

    let dead = env.dead_letters(Duration::from_secs(2)).await;
    assert_eq!(dead.len(), poison.len(), "exactly the poison messages are dead-lettered");
    for (id, body, kind) in &poison {
        let m = dead
            .iter()
            .find(|m| m.delivery.properties.message_id().as_ref().map(|s| s.as_str()) == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{kind} message dead-lettered"));
        let h = m.delivery.properties.headers().as_ref();
        assert_eq!(get_str(h, headers::ERROR_KIND).as_deref(), Some(*kind));
        assert!(get_str(h, headers::ERROR).is_some_and(|e| !e.is_empty()));
        assert_eq!(get_i64(h, headers::ATTEMPTS), Some(1));
        assert!(get_i64(h, headers::FIRST_FAILED_AT).is_some());
        assert!(get_str(h, headers::ORIGINAL_ROUTING_KEY).is_some());
        assert_eq!(&m.delivery.data, body, "the body is kept byte for byte");
    }
    assert_eq!(env.table("users").await.len(), 5, "every good event applied");
    assert_eq!(env.probe.ready_count(&env.topology.queue()).await, 0, "the queue is not blocked");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_retryable_failure_goes_round_the_retry_queue_and_applies_once_the_cause_is_fixed() {
    let env = setup("retry").await;
    let worker = env.start_worker().await;
    inject_failure(&env).await;
    let id = svix_id();
    env.publish_event(&id, &envelope("user.created", user("user_r", "Retry", "r@example.com", T), T)).await;
    clerk_sync_testkit::wait_until(Duration::from_secs(10), "the event is retried", || async {
        env.metrics(&worker)
            .await
            .contains(r#"clerk_sync_worker_events_total{outcome="retried",type="user.created"} 1"#)
    })
    .await;
    remove_failure(&env).await;
    env.wait_processed(1, Duration::from_secs(10)).await;
    assert_eq!(env.outcome(&id).await.as_deref(), Some("applied"));
    assert!(env.dead_letters(Duration::ZERO).await.is_empty());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_after_the_attempt_limit() {
    let env = setup("giveup").await;
    let worker = env.start_worker().await;
    inject_failure(&env).await;
    env.publish_event(&svix_id(), &envelope("user.created", user("user_s", "Stuck", "s@example.com", T), T)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut dead = Vec::new();
    while dead.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the message is dead-lettered in time");
        dead = env.dead_letters(Duration::from_millis(100)).await;
    }
    let h = dead[0].delivery.properties.headers().as_ref();
    assert_eq!(get_i64(h, headers::ATTEMPTS), Some(3), "max_attempts = 3");
    assert_eq!(get_str(h, headers::ERROR_KIND).as_deref(), Some("database_error"));
    assert!(get_str(h, headers::ERROR).unwrap().starts_with("gave up after 3 attempts"));
    assert_eq!(get_str(h, headers::ORIGINAL_ROUTING_KEY).as_deref(), Some("user.created"));
    remove_failure(&env).await;
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_failed_message_the_broker_cannot_take_is_held_with_backoff_not_requeued_in_a_loop() {
    let env = setup("settle-backoff").await;
    let worker = env.start_worker().await;
    // A first message proves the worker's publisher is connected (its topology declared).
    env.publish(&svix_id(), b"not json").await;
    assert_eq!(next_dead_letters(&env).await.len(), 1);
    // The next dead-letter copy cannot be routed while the dead-letter queue is gone.
    env.probe.channel().queue_delete(env.topology.dead_queue().into(), Default::default()).await.unwrap();
    env.publish(&svix_id(), b"not json").await;
    let failures = || async {
        let m = env.metrics(&worker).await;
        m.lines()
            .find_map(|l| l.strip_prefix("clerk_sync_worker_settle_failures_total ")?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    clerk_sync_testkit::wait_until(Duration::from_secs(10), "the worker has tried three times", || async {
        failures().await >= 3
    })
    .await;
    let held_after = std::time::Instant::now();
    assert_eq!(env.probe.ready_count(&env.topology.queue()).await, 0, "held by the worker, not requeued");
    let tries = failures().await;
    assert!(
        tries <= 4,
        "backing off (200 ms, 400 ms, 800 ms ...), not spinning: {tries} tries in {:?}",
        held_after.elapsed()
    );

    clerk_sync_core::amqp::declare_topology(env.probe.channel(), &env.topology, &retry_delays()).await.unwrap();
    let dead = next_dead_letters(&env).await;
    assert_eq!(dead.len(), 1);
    let h = dead[0].delivery.properties.headers().as_ref();
    assert_eq!(get_str(h, headers::ERROR_KIND).as_deref(), Some("invalid_envelope"), "dead-lettered by the worker");
    worker.stop().await;
    env.cleanup().await;
}

/// Waits for dead letters to arrive and takes them.
async fn next_dead_letters(env: &TestEnv) -> Vec<lapin::message::BasicGetMessage> {
    clerk_sync_testkit::wait_until_value(Duration::from_secs(15), "a message is dead-lettered", || async {
        Some(env.dead_letters(Duration::ZERO).await).filter(|d| !d.is_empty())
    })
    .await
}

//! `clerk-sync dlq`: inspecting, replaying and purging dead letters without losing or duplicating any.

use std::collections::HashSet;
use std::time::Duration;

use clerk_sync_core::amqp::{get_i64, get_str, headers, now_ms};

use crate::helpers::*;

#[tokio::test]
async fn listing_shows_dead_letters_without_consuming_or_reordering_them() {
    let env = env("dlq-list").await;
    for i in 0..5 {
        env.dead_letter(&format!("msg_{i}"), "user.updated", "invalid_payload", now_ms()).await;
    }
    for _ in 0..3 {
        let listed = env.json(&["dlq", "list"]).await;
        let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|d| d["svix_id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec!["msg_0", "msg_1", "msg_2", "msg_3", "msg_4"], "same messages, same order");
        assert_eq!(listed[0]["error_kind"], "invalid_payload");
        assert_eq!(listed[0]["attempts"], 3);
    }
    assert_eq!(env.probe.ready_count(&env.topology.dead_queue()).await, 5);
    let limited = env.json(&["dlq", "list", "--limit", "2", "--type", "user.updated"]).await;
    assert_eq!(limited.as_array().unwrap().len(), 2);
    let table = stdout(&env.run(&["dlq", "list"]).await);
    assert!(table.contains("msg_3") && table.contains("5 shown of 5"), "{table}");
    env.cleanup().await;
}

#[tokio::test]
async fn stats_count_by_type_and_error_kind_and_show_prints_one_in_full() {
    let env = env("dlq-stats").await;
    env.dead_letter("msg_a", "user.updated", "invalid_payload", now_ms() - 60_000).await;
    env.dead_letter("msg_b", "user.updated", "database_rejected", now_ms()).await;
    env.dead_letter("msg_c", "organization.created", "invalid_payload", now_ms()).await;
    let stats = env.json(&["dlq", "stats"]).await;
    assert_eq!(stats["count"], 3);
    assert_eq!(stats["by_type"]["user.updated"], 2);
    assert_eq!(stats["by_error_kind"]["invalid_payload"], 2);
    assert!(stats["oldest_first_failed_at"].as_str().unwrap() < stats["newest_first_failed_at"].as_str().unwrap());

    let shown = stdout(&env.run(&["dlq", "show", "msg_b"]).await);
    assert!(shown.contains("database_rejected") && shown.contains("x-attempts: 3"), "{shown}");
    assert!(shown.contains("\n  \"type\": \"user.updated\""), "pretty-printed body: {shown}");
    let missing = env.run(&["dlq", "show", "msg_nope"]).await;
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no dead letter with svix-id msg_nope"));
    assert_eq!(env.probe.ready_count(&env.topology.dead_queue()).await, 3, "nothing consumed");
    env.cleanup().await;
}

#[tokio::test]
async fn replay_moves_only_the_selection_back_with_its_routing_key_and_a_fresh_attempt_count() {
    let env = env("dlq-replay").await;
    for i in 0..3 {
        env.dead_letter(&format!("msg_u{i}"), "user.updated", "database_error", now_ms()).await;
    }
    env.dead_letter("msg_o", "organization.created", "invalid_payload", now_ms()).await;

    let dry = env.json(&["dlq", "replay", "--type", "user.updated", "--dry-run"]).await;
    assert_eq!((dry["moved"].as_u64(), dry["dry_run"].as_bool()), (Some(3), Some(true)));
    assert_eq!(env.probe.ready_count(&env.topology.queue()).await, 0, "a dry run moves nothing");

    let refused = env.run(&["dlq", "replay", "--type", "user.updated"]).await;
    assert!(!refused.status.success(), "a bulk replay without --yes and without a terminal is refused");
    assert!(stderr(&refused).contains("--yes"));
    assert_eq!(env.probe.ready_count(&env.topology.queue()).await, 0);

    let done = env.json(&["dlq", "replay", "--type", "user.updated", "--yes"]).await;
    assert_eq!(
        (done["moved"].as_u64(), done["skipped"].as_u64(), done["failed"].as_u64()),
        (Some(3), Some(1), Some(0))
    );
    let moved = env.probe.drain(&env.topology.queue(), Duration::from_millis(200)).await;
    assert_eq!(moved.len(), 3);
    for m in &moved {
        assert_eq!(m.delivery.routing_key.as_str(), "user.updated");
        assert_eq!(m.delivery.exchange.as_str(), env.topology.exchange());
        let h = m.delivery.properties.headers().as_ref();
        assert_eq!(get_i64(h, headers::ATTEMPTS), None, "the attempt counter starts over");
        assert_eq!(get_str(h, headers::ERROR), None);
        assert_eq!(get_i64(h, headers::SVIX_TIMESTAMP), Some(1_716_883_200), "other headers are kept");
    }
    let left = env.json(&["dlq", "list"]).await;
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["svix_id"], "msg_o", "what did not match stays");

    let by_id = env.json(&["dlq", "replay", "--id", "msg_o"]).await;
    assert_eq!(by_id["moved"], 1, "a replay by id needs no confirmation");
    env.cleanup().await;
}

#[tokio::test]
async fn two_operators_replaying_at_once_move_each_dead_letter_exactly_once() {
    let env = env("dlq-race").await;
    for i in 0..200 {
        env.dead_letter(&format!("msg_{i:03}"), "user.updated", "database_error", now_ms()).await;
    }
    let (a, b) = tokio::join!(
        env.run(&["--json", "dlq", "replay", "--all", "--yes"]),
        env.run(&["--json", "dlq", "replay", "--all", "--yes"])
    );
    assert!(a.status.success() && b.status.success(), "{} {}", stderr(&a), stderr(&b));
    let moved = env.probe.drain(&env.topology.queue(), Duration::from_millis(300)).await;
    let ids: HashSet<String> =
        moved.iter().map(|m| m.delivery.properties.message_id().as_ref().unwrap().to_string()).collect();
    assert_eq!(moved.len(), 200, "no duplicates");
    assert_eq!(ids.len(), 200, "no losses");
    assert_eq!(env.probe.ready_count(&env.topology.dead_queue()).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn purge_older_than_deletes_only_old_dead_letters() {
    let env = env("dlq-purge").await;
    env.dead_letter("msg_old", "user.updated", "invalid_payload", now_ms() - 10 * 86_400_000).await;
    env.dead_letter("msg_new", "user.updated", "invalid_payload", now_ms()).await;
    let refused = env.run(&["dlq", "purge", "--all"]).await;
    assert!(!refused.status.success(), "purge asks for confirmation");
    let purged = env.json(&["dlq", "purge", "--older-than", "7d", "--yes"]).await;
    assert_eq!((purged["purged"].as_u64(), purged["skipped"].as_u64()), (Some(1), Some(1)));
    let left = env.json(&["dlq", "list"]).await;
    assert_eq!(left[0]["svix_id"], "msg_new");
    assert_eq!(left.as_array().unwrap().len(), 1);
    env.cleanup().await;
}

//! `clerk-sync dlq`: inspecting, replaying and purging dead letters without losing or duplicating any.

use std::collections::HashSet;
use std::time::Duration;

use clerk_sync_core::amqp::{get_i64, get_str, headers, now_ms};

use clerk_sync_testkit::wait_until;

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

/// Messages ready in the dead-letter queue and in the main queue, read in that order.
async fn ready_counts(env: &Env) -> (u32, u32) {
    let dead = env.probe.ready_count(&env.topology.dead_queue()).await;
    (dead, env.probe.ready_count(&env.topology.queue()).await)
}

fn ids_of(drained: &[(String, i64)]) -> Vec<&str> {
    drained.iter().map(|(id, _)| id.as_str()).collect()
}

#[tokio::test]
async fn listing_ten_of_five_thousand_dead_letters_takes_only_what_it_prints_and_keeps_the_order() {
    let env = env("dlq-big-list").await;
    let seeded = env.dead_letters("msg_", 5_000).await;
    let listed = env.json(&["dlq", "list", "--limit", "10"]).await;
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|d| d["svix_id"].as_str().unwrap()).collect();
    assert_eq!(ids, seeded[..10].iter().map(String::as_str).collect::<Vec<_>>());
    let shown = env.json(&["dlq", "show", "msg_00020"]).await;
    assert_eq!(shown["svix_id"], "msg_00020");

    let drained = env.drain_dead_queue().await;
    assert_eq!(ids_of(&drained), seeded.iter().map(String::as_str).collect::<Vec<_>>(), "all there, in order");
    // `show` searches in doubling rounds (1, 1, 2, 4, ...), so it may take up to twice what it needed.
    let taken = drained.iter().take_while(|(_, n)| *n > 0).count();
    assert!((21..=42).contains(&taken), "the first {taken} were delivered");
    assert!(drained[taken..].iter().all(|(_, n)| *n == 0), "only a prefix of the queue was ever delivered");
    env.cleanup().await;
}

#[tokio::test]
async fn stats_count_a_large_queue_with_its_own_counter_and_break_down_only_the_first_ten_thousand() {
    let env = env("dlq-big-stats").await;
    let seeded = env.dead_letters("msg_", 12_000).await;
    let stats = env.json(&["dlq", "stats"]).await;
    assert_eq!(stats["count"], 12_000);
    assert_eq!((stats["scanned"].as_u64(), stats["complete"].as_bool()), (Some(10_000), Some(false)));
    assert_eq!((stats["by_type"][TYPES[0]].as_u64(), stats["by_type"][TYPES[1]].as_u64()), (Some(5_000), Some(5_000)));

    let drained = env.drain_dead_queue().await;
    assert_eq!(ids_of(&drained), seeded.iter().map(String::as_str).collect::<Vec<_>>(), "all there, in order");
    assert!(drained[10_000..].iter().all(|(_, n)| *n == 0), "the letters past the breakdown were never delivered");
    env.cleanup().await;
}

#[tokio::test]
async fn replay_streams_a_window_at_a_time_and_moves_every_dead_letter_once_in_order() {
    let env = env("dlq-stream").await;
    let n = 5_000;
    let seeded = env.dead_letters("msg_", n).await;
    let mut child = env
        .command(&["--json", "dlq", "replay", "--all", "--yes", "--window", "200"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Whatever the CLI holds (taken, its copy not yet in the main queue) is in neither count. With
    // a window of 200 that is at most one consumer's prefetch (400) plus, just after a consumer
    // is replaced, the previous consumer's copies still awaiting their confirm (the window).
    let mut lowest = u32::MAX;
    while child.try_wait().unwrap().is_none() {
        let (dead, main) = ready_counts(&env).await;
        lowest = lowest.min(dead + main);
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(lowest >= n as u32 - (400 + 200), "the CLI held {} dead letters at once", n as u32 - lowest);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((summary["moved"].as_u64(), summary["failed"].as_u64()), (Some(n as u64), Some(0)));

    assert_eq!(env.drain_main_queue().await, seeded, "every dead letter once, in the order it failed");
    assert_eq!(env.probe.ready_count(&env.topology.dead_queue()).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_replay_killed_midway_loses_nothing_and_a_second_run_finishes_it() {
    let env = env("dlq-kill").await;
    let n = 5_000u32;
    let seeded = env.dead_letters("msg_", n as usize).await;
    let mut child = env
        .command(&["--json", "dlq", "replay", "--all", "--yes", "--window", "100"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "the replay is under way", || async {
        env.probe.ready_count(&env.topology.queue()).await >= 500
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    // The broker hands back what the dead process held as it drops its consumer; at worst a
    // letter is in both queues.
    wait_until(Duration::from_secs(10), "the killed CLI's consumer is gone", || async {
        env.dead_queue_consumers().await == 0
    })
    .await;
    let (dead, main) = ready_counts(&env).await;
    assert!(dead > 0 && dead < n && dead + main >= n, "killed midway: {dead} dead letters and {main} replayed");

    let done = env.json(&["dlq", "replay", "--all", "--yes"]).await;
    assert_eq!(done["moved"].as_u64(), Some(u64::from(dead)));
    let moved = env.drain_main_queue().await;
    let ids: HashSet<&String> = moved.iter().collect();
    assert_eq!(ids, seeded.iter().collect::<HashSet<_>>(), "nothing lost");
    // A duplicate is a letter taken and not yet acknowledged when the CLI died: at most one
    // consumer's prefetch (2 x window) plus the window in flight and its unsent acknowledgements.
    assert!(moved.len() <= n as usize + 4 * 100, "duplicates only from what was in flight: {}", moved.len());
    assert_eq!(env.probe.ready_count(&env.topology.dead_queue()).await, 0);
    env.cleanup().await;
}

/// `ids` is `expected` turned around some point: RabbitMQ queues letters handed back behind those
/// handed back earlier, so looking at the front part of such letters moves it behind the rest.
fn is_rotation_of(ids: &[&str], expected: &[&str]) -> bool {
    ids.len() == expected.len()
        && (ids.is_empty() || {
            let start = expected.iter().position(|id| *id == ids[0]).unwrap_or(0);
            expected[start..].iter().chain(&expected[..start]).eq(ids.iter())
        })
}

#[tokio::test]
async fn filtered_replays_and_purges_take_only_their_selection_and_keep_the_rest_in_order() {
    let env = env("dlq-filter").await;
    let seeded = env.dead_letters("msg_", 3_000).await;
    let of_type = |t: usize| seeded.iter().skip(t).step_by(2).cloned().collect::<Vec<_>>();
    let (users, orgs) = (of_type(0), of_type(1));

    let done = env.json(&["dlq", "replay", "--type", TYPES[0], "--yes"]).await;
    assert_eq!((done["moved"].as_u64(), done["skipped"].as_u64()), (Some(1_500), Some(1_500)));
    assert_eq!(env.drain_main_queue().await, users, "the selection, in order");
    let listed = env.json(&["dlq", "list", "--limit", "1500"]).await;
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|d| d["svix_id"].as_str().unwrap()).collect();
    assert_eq!(ids, orgs.iter().map(String::as_str).collect::<Vec<_>>(), "a whole pass keeps the rest in order");

    let one = env.json(&["dlq", "replay", "--id", &orgs[1_000]]).await;
    assert_eq!(one["moved"], 1);
    let purged = env.json(&["dlq", "purge", "--id", &orgs[1_200], "--yes"]).await;
    assert_eq!(purged["purged"], 1);
    let left = env.drain_dead_queue().await;
    let expected: Vec<&str> =
        orgs.iter().enumerate().filter(|(i, _)| *i != 1_000 && *i != 1_200).map(|(_, id)| id.as_str()).collect();
    assert!(is_rotation_of(&ids_of(&left), &expected), "the rest, once each, in order: {:?}", &ids_of(&left)[..5]);
    env.cleanup().await;
}

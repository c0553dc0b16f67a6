//! The total order of versions: `data.updated_at`, then whether the version is an object's own
//! event (a copy nested in a membership event ranks below it), then the envelope timestamp, then
//! the svix-id. Ties, nested copies written while another transaction holds the row, and
//! deletions without a usable timestamp all end in the state of applying the events in that order.

use std::time::Duration;

use clerk_sync_core::samples::{envelope, membership, organization, user};
use clerk_sync_store::db::apply_batch;
use clerk_sync_store::event;
use clerk_sync_testkit::wait_until;
use serde_json::{Value, json};

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

/// Publishes `events` in the given order to a fresh worker and returns the row `table`/`id`.
async fn final_row(label: &str, events: &[(&str, Value)], table: &str, id: &str) -> Value {
    let env = setup(label).await;
    let worker = env.start_worker().await;
    for (n, (svix_id, event)) in events.iter().enumerate() {
        env.publish_event(svix_id, event).await;
        // One at a time: each event must meet the state the previous one left.
        env.wait_processed(i64::try_from(n + 1).unwrap(), Duration::from_secs(10)).await;
    }
    let mut row = env.row(table, id).await.expect("the row exists");
    row.as_object_mut().unwrap().remove("synced_at");
    worker.stop().await;
    env.cleanup().await;
    row
}

#[tokio::test]
async fn two_updates_with_the_same_updated_at_end_the_same_whichever_arrives_first() {
    // Same updated_at, different envelope timestamps: the later envelope is the later version.
    let first = envelope("user.updated", user("user_tie", "First", "tie@example.com", T), T + 10);
    let second = envelope("user.updated", user("user_tie", "Second", "tie@example.com", T), T + 20);
    let a =
        final_row("tie-ab", &[("msg_tie_1", first.clone()), ("msg_tie_2", second.clone())], "users", "user_tie").await;
    let b = final_row("tie-ba", &[("msg_tie_2", second), ("msg_tie_1", first)], "users", "user_tie").await;
    assert_eq!(a["first_name"], "Second");
    assert_eq!(a, b, "arrival order must not decide");

    // Same updated_at and envelope timestamp: the svix-id decides.
    let x = envelope("user.updated", user("user_tie", "X", "tie@example.com", T), T);
    let y = envelope("user.updated", user("user_tie", "Y", "tie@example.com", T), T);
    let a = final_row("tie2-ab", &[("msg_a", x.clone()), ("msg_b", y.clone())], "users", "user_tie").await;
    let b = final_row("tie2-ba", &[("msg_b", y), ("msg_a", x)], "users", "user_tie").await;
    assert_eq!(a["first_name"], "Y", "msg_b sorts after msg_a");
    assert_eq!(a, b);
}

#[tokio::test]
async fn external_id_after_a_last_update_and_a_deletion_does_not_depend_on_arrival_order() {
    let mut last = user("user_ext", "Ext", "ext@example.com", T);
    last["external_id"] = Value::Null;
    let update = envelope("user.updated", last, T);
    let deletion = envelope(
        "user.deleted",
        json!({"id": "user_ext", "object": "user", "deleted": true, "external_id": "ext_1"}),
        T + 5,
    );
    let a = final_row("ext-ud", &[("msg_u", update.clone()), ("msg_d", deletion.clone())], "users", "user_ext").await;
    let b = final_row("ext-du", &[("msg_d", deletion), ("msg_u", update)], "users", "user_ext").await;
    assert_eq!(a["external_id"], "ext_1", "the deletion is the last event and names the external id");
    assert!(a["deleted_at"].is_string() && a["first_name"].is_null());
    assert_eq!(a, b);
}

#[tokio::test]
async fn a_deletion_whose_envelope_timestamp_is_out_of_range_is_still_a_final_tombstone() {
    let env = setup("tomb-range").await;
    let worker = env.start_worker().await;
    let deletion = envelope("user.deleted", json!({"id": "user_far", "object": "user", "deleted": true}), 0);
    let mut deletion = deletion;
    // Far beyond what a timestamp can hold (the year 300,000).
    deletion["timestamp"] = json!(9_400_000_000_000_000_i64);
    env.publish_event(&svix_id(), &deletion).await;
    env.wait_processed(1, Duration::from_secs(10)).await;
    let row = env.row("users", "user_far").await.unwrap();
    assert!(row["deleted_at"].is_string(), "a deletion is always dated (the received time): {row}");

    env.publish_event(&svix_id(), &envelope("user.updated", user("user_far", "Back", "far@example.com", T), T)).await;
    env.wait_processed(2, Duration::from_secs(10)).await;
    let row = env.row("users", "user_far").await.unwrap();
    assert!(row["deleted_at"].is_string() && row["first_name"].is_null(), "a late update never revives: {row}");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_organization_waiting_on_the_row_lock_never_overwrites_a_full_version_of_the_same_updated_at() {
    let env = setup("nested-lock").await;
    let worker = env.start_worker().await;
    let at = T + 50_000;
    let mut full = organization("org_lock", "Full Name", at);
    full["members_count"] = json!(7);
    let full_event = envelope("organization.updated", full, at);

    // Another worker's transaction writes the full version and holds the row lock.
    let body = full_event.to_string();
    let parsed = event::parse("msg_full", at, body.as_bytes()).unwrap();
    let mut other = env.pool.begin().await.unwrap();
    let other_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *other).await.unwrap();
    apply_batch(&mut other, &[&parsed]).await.unwrap();

    // Meanwhile the worker applies a membership whose nested copy has the same updated_at.
    let mut m = membership("orgmem_lock", "org_lock", "user_lock", "org:member", at + 1);
    let mut nested = organization("org_lock", "Nested Copy", at);
    nested["members_count"] = json!(1);
    m["organization"] = nested;
    env.publish_event(&svix_id(), &envelope("organizationMembership.created", m, at + 1)).await;
    // A worker backend blocked by that transaction itself, not any session waiting on some lock
    // (the change feed's leader has sessions of its own); generous, as the worker only starts its
    // batch once it has consumed, and the broker is slow to start consumers under a loaded suite.
    wait_until(Duration::from_secs(30), "the worker waits on the row lock", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND application_name = 'clerk-sync-worker' AND $1 = ANY (pg_blocking_pids(pid))",
        )
        .bind(other_pid)
        .fetch_one(&env.pool)
        .await
        .unwrap()
            > 0
    })
    .await;
    other.commit().await.unwrap();
    // Both recorded: the other transaction's event and the worker's.
    env.wait_processed(2, Duration::from_secs(30)).await;

    let org = env.row("organizations", "org_lock").await.unwrap();
    assert_eq!(org["name"], "Full Name", "{org}");
    assert_eq!(org["members_count"], 7);
    assert!(env.row("organization_memberships", "orgmem_lock").await.is_some());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_nested_organization_arriving_after_the_full_version_of_the_same_updated_at_is_not_written() {
    let at = T + 60_000;
    let mut full = organization("org_eq", "Full Name", at);
    full["members_count"] = json!(7);
    let mut m = membership("orgmem_eq", "org_eq", "user_eq", "org:member", at + 1);
    let mut nested = organization("org_eq", "Nested Copy", at);
    nested["members_count"] = json!(1);
    m["organization"] = nested;
    let full = envelope("organization.updated", full, at);
    let member = envelope("organizationMembership.created", m, at + 1);
    let a =
        final_row("nested-fm", &[("msg_f", full.clone()), ("msg_m", member.clone())], "organizations", "org_eq").await;
    let b = final_row("nested-mf", &[("msg_m", member), ("msg_f", full)], "organizations", "org_eq").await;
    assert_eq!(a["name"], "Full Name");
    assert_eq!(a["members_count"], 7);
    assert_eq!(a, b);
}

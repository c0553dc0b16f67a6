//! The event history: what the worker keeps of each event, how a user's deletion scrubs it, and
//! how retention drops whole days.

use std::time::Duration;

use clerk_sync_core::samples::{envelope, membership, user};
use clerk_sync_store::history::query::{self, Filter};
use serde_json::json;

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

async fn stored(env: &TestEnv, filter: Filter) -> Vec<query::Stored> {
    let mut conn = env.pool.acquire().await.unwrap();
    query::list(&mut conn, &filter, 1000).await.unwrap()
}

async fn body_of(env: &TestEnv, svix_id: &str) -> String {
    let mut conn = env.pool.acquire().await.unwrap();
    let row = query::show(&mut conn, svix_id).await.unwrap().expect("stored");
    String::from_utf8(row.body().expect("a body")).unwrap()
}

#[tokio::test]
async fn every_distinct_event_is_kept_once_with_its_body_outcome_and_subjects() {
    let env = setup("hist-keep").await;
    let worker = env.start_worker().await;
    let newer = envelope("user.updated", user("user_h", "New", "new@example.com", T + 10), T + 10);
    let older = envelope("user.updated", user("user_h", "Old", "old@example.com", T + 5), T + 5);
    // A type not stored (its body carries a one-time code), still kept with its user.
    let session = clerk_sync_core::samples::sample("sms.created", T).unwrap();
    env.publish_event("msg_h1", &newer).await;
    env.publish_event("msg_h1", &newer).await; // a duplicate
    env.publish_event("msg_h2", &older).await;
    env.publish_event("msg_h3", &session).await;
    env.wait_processed(3, Duration::from_secs(10)).await;

    let all = stored(&env, Filter::default()).await;
    assert_eq!(all.len(), 3, "one row per distinct svix-id");
    let user_events = stored(&env, Filter { user_id: Some("user_h".into()), ..Default::default() }).await;
    let outcomes: Vec<(&str, &str)> = user_events.iter().map(|s| (s.svix_id.as_str(), s.outcome.as_str())).collect();
    assert!(outcomes.contains(&("msg_h1", "applied")) && outcomes.contains(&("msg_h2", "stale")), "{outcomes:?}");
    assert_eq!(body_of(&env, "msg_h1").await, newer.to_string(), "the body exactly as received");
    let sessions = stored(&env, Filter { event_type: Some("sms.created".into()), ..Default::default() }).await;
    assert_eq!(sessions[0].outcome, "ignored");
    assert_eq!(sessions[0].user_id.as_deref(), Some("user_2sampleUser0000000000"), "found by its user");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn with_the_history_off_nothing_is_kept() {
    let env = setup("hist-off").await;
    let worker = env.start_worker_with(|s| s.with_env("CLERK_SYNC__WORKER__KEEP_HISTORY", "false")).await;
    env.publish_event("msg_off", &envelope("user.created", user("user_off", "A", "a@example.com", T), T)).await;
    env.wait_processed(1, Duration::from_secs(10)).await;
    assert!(stored(&env, Filter::default()).await.is_empty());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_deleted_users_personal_data_is_in_no_stored_body_afterwards() {
    let env = setup("hist-scrub").await;
    let worker = env.start_worker().await;
    let mut created = user("user_gone", "Greta", "greta@example.com", T);
    created["last_name"] = json!("Garbo");
    env.publish_event("msg_s1", &envelope("user.created", created, T)).await;
    let m = membership("orgmem_gone", "org_keep", "user_gone", "org:member", T + 1);
    env.publish_event("msg_s2", &envelope("organizationMembership.created", m, T + 1)).await;
    env.wait_processed(2, Duration::from_secs(10)).await;
    assert!(body_of(&env, "msg_s1").await.contains("greta@example.com"), "kept while the user exists");

    let deletion = envelope("user.deleted", json!({"id": "user_gone", "object": "user", "deleted": true}), T + 2);
    env.publish_event("msg_s3", &deletion).await;
    env.wait_processed(3, Duration::from_secs(10)).await;
    // A late update of the deleted user arrives after the deletion.
    let late = user("user_gone", "Greta", "greta@example.com", T + 3);
    env.publish_event("msg_s4", &envelope("user.updated", late, T + 3)).await;
    env.wait_processed(4, Duration::from_secs(10)).await;

    let rows = stored(&env, Filter { user_id: Some("user_gone".into()), ..Default::default() }).await;
    assert_eq!(rows.len(), 4, "the rows, their svix-ids and outcomes stay");
    for row in &rows {
        let body = body_of(&env, &row.svix_id).await;
        for personal in ["greta@example.com", "Greta", "Garbo", "+1555", "user_gone.png", "/u.png"] {
            assert!(!body.contains(personal), "{}: {personal} in {body}", row.svix_id);
        }
        assert!(body.contains("user_gone"), "ids stay: {body}");
        assert!(row.scrubbed_at.is_some() || row.event_type == "user.deleted", "{}", row.svix_id);
    }
    worker.stop().await;
    env.cleanup().await;
}

/// A pending invitation to `email` sent by `inviter`.
fn invitation(id: &str, email: &str, inviter: &str) -> serde_json::Value {
    let mut v = crate::catalogue::invitation(id, email, "pending", None, T);
    v["inviter_id"] = json!(inviter);
    v["public_inviter_data"]["user_id"] = json!(inviter);
    v
}

#[tokio::test]
async fn invitations_and_waitlist_entries_that_reach_a_deleted_user_by_address_keep_no_personal_data_in_the_history() {
    let env = setup("hist-scrub-addr").await;
    let worker = env.start_worker().await;
    env.publish_event("msg_a1", &envelope("user.created", user("user_vi", "Vi", "vi@example.com", T), T)).await;
    let mut sent = invitation("orginv_by_vi", "sol@example.com", "user_vi");
    sent["public_inviter_data"]["first_name"] = json!("Vi");
    sent["public_inviter_data"]["identifier"] = json!("vi@example.com");
    let events = [
        ("msg_a2", "organizationInvitation.created", invitation("orginv_to_vi", "VI@example.com", "user_ina")),
        ("msg_a3", "organizationInvitation.created", invitation("orginv_to_old", "old.vi@example.com", "user_ina")),
        ("msg_a4", "organizationInvitation.created", sent),
        ("msg_a5", "organizationInvitation.created", invitation("orginv_other", "ursula@example.com", "user_ina")),
        ("msg_a6", "waitlistEntry.created", {
            let mut w = clerk_sync_core::samples::sample("waitlistEntry.created", T).unwrap()["data"].clone();
            w["email_address"] = json!("vi@example.com");
            w
        }),
    ];
    for (id, t, data) in &events {
        env.publish_event(id, &envelope(t, data.clone(), T)).await;
    }
    env.wait_processed(6, Duration::from_secs(10)).await;
    assert!(body_of(&env, "msg_a2").await.contains("VI@example.com"), "kept while the user exists");
    let deletion = envelope("user.deleted", json!({"id": "user_vi", "object": "user", "deleted": true}), T + 5);
    env.publish_event("msg_a7", &deletion).await;
    env.wait_processed(7, Duration::from_secs(10)).await;

    for id in ["msg_a2", "msg_a3", "msg_a6"] {
        let body = body_of(&env, id).await.to_lowercase();
        assert!(!body.contains("vi@example.com") && !body.contains("203.0.113.7"), "{id}: {body}");
        assert!(body.contains("\"id\""), "{id}: ids stay: {body}");
    }
    let by_vi = body_of(&env, "msg_a4").await;
    assert!(by_vi.contains("sol@example.com"), "the invitee's address stays, as in its row: {by_vi}");
    assert!(!by_vi.contains("vi@example.com") && !by_vi.contains("\"Vi\""), "the inviter's data goes: {by_vi}");
    let other = body_of(&env, "msg_a5").await;
    assert!(other.contains("ursula@example.com") && other.contains("Cleo"), "another invitee is untouched: {other}");
    // The invitee of the invitation Vi sent is deleted in turn: their address goes too.
    env.publish_event("msg_a8", &envelope("user.created", user("user_sol", "Sol", "sol@example.com", T + 6), T + 6))
        .await;
    env.wait_processed(8, Duration::from_secs(10)).await;
    let deletion = envelope("user.deleted", json!({"id": "user_sol", "object": "user", "deleted": true}), T + 7);
    env.publish_event("msg_a9", &deletion).await;
    env.wait_processed(9, Duration::from_secs(10)).await;
    assert!(!body_of(&env, "msg_a4").await.contains("sol@example.com"));
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn retention_drops_whole_days_and_keeps_the_recent_ones() {
    // No worker: its own housekeeping would drop the old day before this test looks.
    let env = setup("hist-ret").await;
    let partitions = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'clerk.event_history'::regclass ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    // Forty days ago and today: the old day gets a partition of its own, then its rows.
    sqlx::query("SELECT clerk.history_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 40, 1)")
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO clerk.event_history (received_at, svix_id, event_type, outcome)
         VALUES (now() - interval '40 days', 'msg_old', 'user.updated', 'applied'),
                (now(), 'msg_new', 'user.updated', 'applied')",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let old_day = format!("event_history_{}", (chrono::Utc::now() - chrono::Duration::days(40)).format("%Y%m%d"));
    assert!(partitions(env.pool.clone()).await.contains(&old_day));

    let metrics = clerk_sync_worker::metrics::WorkerMetrics::register(&prometheus::Registry::new()).unwrap();
    clerk_sync_worker::history::maintain(&env.pool, Duration::from_secs(30 * 86_400), &metrics).await;
    let after = partitions(env.pool.clone()).await;
    assert!(!after.contains(&old_day), "the old day is dropped whole: {after:?}");
    let today = format!("event_history_{}", chrono::Utc::now().format("%Y%m%d"));
    let tomorrow = format!("event_history_{}", (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y%m%d"));
    assert!(after.contains(&today) && after.contains(&tomorrow), "recent and coming days stay: {after:?}");
    let ids: Vec<String> = stored(&env, Filter::default()).await.into_iter().map(|s| s.svix_id).collect();
    assert_eq!(ids, vec!["msg_new".to_owned()]);
    assert!(metrics.history_bytes.get() > 0);
    env.cleanup().await;
}

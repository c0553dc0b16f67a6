//! What each kind of event does to the tables.

use std::time::Duration;

use clerk_sync_core::samples::{self, envelope, membership, organization, user};
use serde_json::json;

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

#[tokio::test]
async fn a_created_user_is_stored_with_its_primary_email_resolved_and_exact_timestamps() {
    let env = setup("fx-user").await;
    let worker = env.start_worker().await;
    let mut data = user("user_a", "Ada", "ada@example.com", T + 123);
    data["last_sign_in_at"] = json!(T + 7);
    data["two_factor_enabled"] = json!(true);
    env.publish_event(&svix_id(), &envelope("user.created", data, T + 200)).await;
    env.wait_processed(1, Duration::from_secs(10)).await;

    let row = env.row("users", "user_a").await.unwrap();
    assert_eq!(row["primary_email_address"], "ada@example.com", "resolved through primary_email_address_id");
    assert_eq!(row["primary_phone_number"], "+15555550100");
    assert_eq!(row["first_name"], "Ada");
    assert_eq!(row["external_id"], "app-user_a");
    assert_eq!(row["public_metadata"], json!({"role": "member"}));
    assert_eq!(row["unsafe_metadata"], json!({"theme": "dark"}));
    assert_eq!(row["banned"], false);
    assert_eq!(row["two_factor_enabled"], true);
    assert_eq!(row["updated_at"], "2024-05-28T08:00:00.123+00:00", "milliseconds kept exactly");
    assert_eq!(row["last_sign_in_at"], "2024-05-28T08:00:00.007+00:00");
    assert_eq!(row["raw"]["id"], "user_a");
    assert!(row["deleted_at"].is_null());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn updates_apply_in_updated_at_order_and_an_older_one_is_recorded_stale() {
    let env = setup("fx-order").await;
    let worker = env.start_worker().await;
    let (newer, older) = (svix_id(), svix_id());
    env.publish_event(
        &newer,
        &envelope("user.updated", user("user_b", "Newer", "b@example.com", T + 2_000), T + 2_000),
    )
    .await;
    env.wait_processed(1, Duration::from_secs(10)).await;
    env.publish_event(
        &older,
        &envelope("user.updated", user("user_b", "Older", "b@example.com", T + 1_000), T + 1_000),
    )
    .await;
    env.wait_processed(2, Duration::from_secs(10)).await;

    assert_eq!(env.row("users", "user_b").await.unwrap()["first_name"], "Newer");
    assert_eq!(env.outcome(&newer).await.as_deref(), Some("applied"));
    assert_eq!(env.outcome(&older).await.as_deref(), Some("stale"));
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn in_a_batch_only_the_newest_version_is_recorded_applied_even_behind_a_copy_already_applied() {
    let env = setup("fx-batch-outcomes").await;
    let version = |n: i64| envelope("user.updated", user("user_o", &format!("V{n}"), "o@example.com", T + n), T + n);
    // Messages are queued while no worker runs, so one batch takes them together.
    let drain = async |recorded: i64| {
        let worker = env.start_worker().await;
        env.wait_processed(recorded, Duration::from_secs(10)).await;
        worker.stop().await;
    };
    let v3 = svix_id();
    env.publish_event(&v3, &version(3)).await;
    drain(1).await;

    // Two older versions and a redelivered copy of v3, the newest of the three but applied before.
    let (v1, v2) = (svix_id(), svix_id());
    env.publish_event(&v1, &version(1)).await;
    env.publish_event(&v3, &version(3)).await;
    env.publish_event(&v2, &version(2)).await;
    drain(3).await;

    // Then the newest version between an older one and its own repeat.
    let (v4, v5) = (svix_id(), svix_id());
    env.publish_event(&v5, &version(5)).await;
    env.publish_event(&v4, &version(4)).await;
    env.publish_event(&v5, &version(5)).await;
    drain(5).await;

    assert_eq!(env.row("users", "user_o").await.unwrap()["first_name"], "V5");
    for (id, expected) in [(&v1, "stale"), (&v2, "stale"), (&v3, "applied"), (&v4, "stale"), (&v5, "applied")] {
        assert_eq!(env.outcome(id).await.as_deref(), Some(expected), "{id}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_svix_id_is_applied_once() {
    let env = setup("fx-dup").await;
    let worker = env.start_worker().await;
    let id = svix_id();
    env.publish_event(&id, &envelope("user.created", user("user_c", "Once", "c@example.com", T), T)).await;
    env.wait_processed(1, Duration::from_secs(10)).await;
    // Same svix-id, different content: a replay must not apply anything.
    env.publish_event(&id, &envelope("user.updated", user("user_c", "Twice", "c@example.com", T + 5), T + 5)).await;
    clerk_sync_testkit::wait_until(Duration::from_secs(10), "the duplicate is counted", || async {
        env.metrics(&worker)
            .await
            .contains(r#"clerk_sync_worker_events_total{outcome="duplicate",type="user.updated"} 1"#)
    })
    .await;
    assert_eq!(env.row("users", "user_c").await.unwrap()["first_name"], "Once");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_deleted_user_becomes_a_tombstone_without_personal_data_and_its_memberships_follow() {
    let env = setup("fx-del").await;
    let worker = env.start_worker().await;
    env.publish_event(&svix_id(), &envelope("user.created", user("user_d", "Del", "d@example.com", T), T)).await;
    env.publish_event(
        &svix_id(),
        &envelope(
            "organizationMembership.created",
            membership("orgmem_d", "org_d", "user_d", "org:member", T + 10),
            T + 10,
        ),
    )
    .await;
    env.wait_processed(2, Duration::from_secs(10)).await;
    let deleted = json!({"deleted": true, "external_id": "app-user_d", "id": "user_d", "object": "user"});
    env.publish_event(&svix_id(), &envelope("user.deleted", deleted, T + 1_000)).await;
    env.wait_processed(3, Duration::from_secs(10)).await;
    // A late update (a retry from before the deletion) must not bring anything back.
    let late = svix_id();
    env.publish_event(&late, &envelope("user.updated", user("user_d", "Zombie", "z@example.com", T + 500), T + 500))
        .await;
    env.wait_processed(4, Duration::from_secs(10)).await;

    let row = env.row("users", "user_d").await.unwrap();
    assert_eq!(row["deleted_at"], "2024-05-28T08:00:01+00:00");
    for personal in [
        "username",
        "first_name",
        "last_name",
        "primary_email_address",
        "primary_phone_number",
        "image_url",
        "public_metadata",
        "private_metadata",
        "unsafe_metadata",
        "raw",
    ] {
        assert!(row[personal].is_null(), "{personal} is removed: {row}");
    }
    assert_eq!(row["external_id"], "app-user_d", "the app's own id stays, so it can find its row");
    assert_eq!(env.outcome(&late).await.as_deref(), Some("stale"));
    let m = env.row("organization_memberships", "orgmem_d").await.unwrap();
    assert_eq!(m["deleted_at"], "2024-05-28T08:00:01+00:00", "the membership is tombstoned with its user");
    assert!(m["raw"].is_null() && m["public_metadata"].is_null());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_delete_for_a_user_never_seen_inserts_a_tombstone_that_a_late_create_cannot_revive() {
    let env = setup("fx-tomb").await;
    let worker = env.start_worker().await;
    env.publish_event(
        &svix_id(),
        &envelope("user.deleted", json!({"id": "user_e", "deleted": true, "object": "user"}), T + 9_000),
    )
    .await;
    env.publish_event(&svix_id(), &envelope("user.created", user("user_e", "Late", "e@example.com", T), T)).await;
    env.wait_processed(2, Duration::from_secs(10)).await;
    let row = env.row("users", "user_e").await.unwrap();
    assert_eq!(row["deleted_at"], "2024-05-28T08:00:09+00:00");
    assert!(row["first_name"].is_null() && row["primary_email_address"].is_null());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn organizations_and_memberships_are_stored_and_a_membership_upserts_its_nested_organization() {
    let env = setup("fx-org").await;
    let worker = env.start_worker().await;
    // The membership arrives first, before its organization and user: no foreign key stops it.
    let mut m = membership("orgmem_f", "org_f", "user_f", "org:admin", T + 50);
    m["organization"] = organization("org_f", "Nested Name", T + 40);
    env.publish_event(&svix_id(), &envelope("organizationMembership.created", m, T + 50)).await;
    env.wait_processed(1, Duration::from_secs(10)).await;
    let org = env.row("organizations", "org_f").await.unwrap();
    assert_eq!(org["name"], "Nested Name");
    // An older organization.created does not overwrite the newer nested copy.
    let old = svix_id();
    env.publish_event(&old, &envelope("organization.created", organization("org_f", "Old Name", T), T)).await;
    env.wait_processed(2, Duration::from_secs(10)).await;
    assert_eq!(env.row("organizations", "org_f").await.unwrap()["name"], "Nested Name");
    assert_eq!(env.outcome(&old).await.as_deref(), Some("stale"));

    let row = env.row("organization_memberships", "orgmem_f").await.unwrap();
    assert_eq!(row["organization_id"], "org_f");
    assert_eq!(row["user_id"], "user_f", "from public_user_data.user_id");
    assert_eq!(row["role"], "org:admin");
    assert_eq!(row["permissions"], json!(["org:sys_memberships:read", "org:sys_profile:read"]));
    assert_eq!(org["slug"], "nested-name");
    assert_eq!(org["members_count"], 3);

    env.publish_event(
        &svix_id(),
        &envelope("organization.deleted", json!({"id": "org_f", "deleted": true, "slug": "nested-name"}), T + 99_000),
    )
    .await;
    env.wait_processed(3, Duration::from_secs(10)).await;
    let org = env.row("organizations", "org_f").await.unwrap();
    assert!(org["deleted_at"].is_string() && org["name"].is_null() && org["raw"].is_null());
    let row = env.row("organization_memberships", "orgmem_f").await.unwrap();
    assert_eq!(row["deleted_at"], org["deleted_at"], "memberships of a deleted organization are tombstoned");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_organization_event_wins_over_the_copy_nested_in_a_membership_at_the_same_version_in_either_order() {
    let env = setup("fx-nest").await;
    let worker = env.start_worker().await;
    // Same version, different bodies: the organization's own event carries more fields.
    let full = |id: &str| {
        let mut o = organization(id, "Acme", T + 10);
        o["only_in_the_full_body"] = json!(true);
        o
    };
    let with_nested = |mid: &str, oid: &str| {
        let mut m = membership(mid, oid, "user_n", "org:member", T + 20);
        m["organization"] = organization(oid, "Acme", T + 10);
        envelope("organizationMembership.created", m, T + 20)
    };
    // org_n1: nested copy first, then the organization's event. org_n2: the other way round.
    env.publish_event(&svix_id(), &with_nested("orgmem_n1", "org_n1")).await;
    env.wait_processed(1, Duration::from_secs(10)).await;
    let own_1 = svix_id();
    env.publish_event(&own_1, &envelope("organization.updated", full("org_n1"), T + 10)).await;
    env.publish_event(&svix_id(), &envelope("organization.updated", full("org_n2"), T + 10)).await;
    env.wait_processed(3, Duration::from_secs(10)).await;
    env.publish_event(&svix_id(), &with_nested("orgmem_n2", "org_n2")).await;
    env.wait_processed(4, Duration::from_secs(10)).await;
    for id in ["org_n1", "org_n2"] {
        let raw = &env.row("organizations", id).await.unwrap()["raw"];
        assert_eq!(raw["only_in_the_full_body"], true, "{id} keeps the complete body: {raw}");
    }
    assert_eq!(env.outcome(&own_1).await.as_deref(), Some("applied"));
    assert!(env.row("organization_memberships", "orgmem_n2").await.is_some());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_deleted_membership_is_a_tombstone_keeping_its_ids_and_role() {
    let env = setup("fx-mdel").await;
    let worker = env.start_worker().await;
    let m = membership("orgmem_g", "org_g", "user_g", "org:member", T);
    env.publish_event(&svix_id(), &envelope("organizationMembership.created", m.clone(), T)).await;
    env.publish_event(&svix_id(), &envelope("organizationMembership.deleted", m, T + 3_000)).await;
    env.wait_processed(2, Duration::from_secs(10)).await;
    let row = env.row("organization_memberships", "orgmem_g").await.unwrap();
    assert_eq!(row["deleted_at"], "2024-05-28T08:00:03+00:00");
    assert_eq!(
        (row["user_id"].as_str(), row["organization_id"].as_str(), row["role"].as_str()),
        (Some("user_g"), Some("org_g"), Some("org:member"))
    );
    assert!(row["public_metadata"].is_null() && row["raw"].is_null());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn types_not_stored_and_unknown_future_types_are_recorded_as_ignored_and_acked() {
    let env = setup("fx-ign").await;
    let worker = env.start_worker().await;
    let ignored: Vec<&str> = clerk_sync_store::catalogue::CATALOGUE
        .iter()
        .filter(|t| t.handling == clerk_sync_store::catalogue::Handling::Ignored)
        .map(|t| t.name)
        .collect();
    assert!(ignored.contains(&"email.created") && ignored.contains(&"sms.created"), "one-time codes: never stored");
    let mut ids = Vec::new();
    for t in &ignored {
        let id = svix_id();
        env.publish_event(&id, &samples::sample(t, T).unwrap()).await;
        ids.push(id);
    }
    let future = svix_id();
    env.publish_event(&future, &envelope("user.teleported", json!({"id": "user_x"}), T)).await;
    env.wait_processed(ignored.len() as i64 + 1, Duration::from_secs(15)).await;
    for id in ids.iter().chain([&future]) {
        assert_eq!(env.outcome(id).await.as_deref(), Some("ignored"));
    }
    assert_eq!(env.probe.ready_count(&env.topology.queue()).await, 0);
    assert!(env.dead_letters(Duration::ZERO).await.is_empty(), "nothing dead-lettered");
    assert!(env.table("users").await.is_empty());
    let metrics = env.metrics(&worker).await;
    assert!(metrics.contains(r#"clerk_sync_worker_events_total{outcome="ignored",type="unknown"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"clerk_sync_worker_events_total{outcome="ignored",type="email.created"} 1"#));
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_started_before_migrate_waits_unready_and_consumes_once_the_schema_is_there() {
    let env = setup("fx-schema").await;
    sqlx::query("DROP SCHEMA clerk CASCADE").execute(&env.pool).await.unwrap();
    env.publish_event(&svix_id(), &envelope("user.created", user("user_m", "Mig", "m@example.com", T), T)).await;
    let worker = env.start_worker().await;
    clerk_sync_testkit::wait_until(Duration::from_secs(10), "the worker reports the missing schema", || async {
        env.metrics(&worker).await.contains(r#"clerk_sync_worker_database_pauses_total{condition="schema_missing"} 1"#)
    })
    .await;
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", worker.admin_port)).await.unwrap();
    assert_eq!(ready.status(), 503, "unready while it waits");
    assert!(!worker.task.is_finished(), "waiting, not crash-looping");

    clerk_sync_store::db::migrate(&env.pool).await.unwrap();
    env.wait_processed(1, Duration::from_secs(30)).await;
    assert_eq!(env.row("users", "user_m").await.unwrap()["first_name"], "Mig");
    assert!(env.dead_letters(Duration::ZERO).await.is_empty());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn old_dedup_rows_are_pruned_after_the_retention() {
    let env = setup("fx-prune").await;
    sqlx::query(
        "INSERT INTO clerk.webhook_events (svix_id, event_type, received_at, outcome)
         VALUES ('old', 'user.updated', now() - interval '31 days', 'applied'),
                ('new', 'user.updated', now() - interval '29 days', 'applied')",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let pruned = clerk_sync_worker::startup::prune_events(&env.pool, Duration::from_secs(30 * 86_400)).await.unwrap();
    assert_eq!(pruned, 1);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT svix_id FROM clerk.webhook_events").fetch_all(&env.pool).await.unwrap();
    assert_eq!(left, vec!["new"]);
    env.cleanup().await;
}

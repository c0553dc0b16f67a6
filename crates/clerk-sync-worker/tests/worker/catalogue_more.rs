//! Roles, permissions, organization domains and waitlist entries (issue 19): each type's effect,
//! deletion final (a late update never revives a role, a permission or a domain), a user's
//! deletion reaching the waitlist entries of the user's addresses, and hostile payloads.

use std::time::Duration;

use clerk_sync_core::amqp::{get_str, headers};
use clerk_sync_core::samples::{envelope, sample, user};
use serde_json::{Value, json};

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

fn data(t: &str, ts: i64) -> Value {
    sample(t, ts).unwrap()["data"].clone()
}

#[tokio::test]
async fn roles_permissions_domains_and_waitlist_entries_are_stored_and_deletion_is_final() {
    let env = setup("cat-more").await;
    let worker = env.start_worker().await;
    let mut role = data("role.created", T);
    role["permissions"] = json!([{"key": "org:invoices:read", "object": "permission"}, {"key": "org:invoices:pay"}]);
    let events = [
        envelope("role.created", role, T),
        envelope("permission.created", data("permission.created", T), T),
        envelope("organizationDomain.created", data("organizationDomain.created", T), T),
        envelope("waitlistEntry.created", data("waitlistEntry.created", T), T),
    ];
    for e in &events {
        env.publish_event(&svix_id(), e).await;
    }
    env.wait_processed(4, Duration::from_secs(10)).await;
    let role = env.row("roles", "role_2sampleRole000000000").await.unwrap();
    assert_eq!(role["key"], "org:billing");
    assert_eq!(role["permissions"], json!(["org:invoices:read", "org:invoices:pay"]), "the permission keys");
    let permission = env.row("permissions", "perm_2samplePermission000000").await.unwrap();
    assert_eq!((permission["key"].as_str(), permission["type"].as_str()), (Some("org:invoices:read"), Some("custom")));
    let domain = env.row("organization_domains", "orgdmn_2sampleDomain00000000").await.unwrap();
    assert_eq!(domain["organization_id"], "org_2sampleOrg00000000000");
    assert_eq!(
        (domain["verification_status"].as_str(), domain["enrollment_mode"].as_str()),
        (Some("verified"), Some("automatic_invitation"))
    );
    assert_eq!(domain["affiliation_email_address"], "admin@sample.example");
    let entry = env.row("waitlist_entries", "wle_2sampleWaitlist00000000").await.unwrap();
    assert_eq!(
        (entry["email_address"].as_str(), entry["status"].as_str()),
        (Some("early@example.com"), Some("pending"))
    );
    assert_eq!(entry["updated_at"], "2024-05-28T08:00:00+00:00");

    // Deleted, then a late update of each: the tombstones stay, without personal data.
    for t in ["role.deleted", "permission.deleted", "organizationDomain.deleted"] {
        env.publish_event(&svix_id(), &sample(t, T + 5_000).unwrap()).await;
    }
    env.wait_processed(7, Duration::from_secs(10)).await;
    for t in ["role.updated", "permission.updated", "organizationDomain.updated", "waitlistEntry.updated"] {
        env.publish_event(&svix_id(), &sample(t, T + 9_000).unwrap()).await;
    }
    env.wait_processed(11, Duration::from_secs(10)).await;
    for (table, id) in [
        ("roles", "role_2sampleRole000000000"),
        ("permissions", "perm_2samplePermission000000"),
        ("organization_domains", "orgdmn_2sampleDomain00000000"),
    ] {
        let row = env.row(table, id).await.unwrap();
        assert_eq!(row["deleted_at"], "2024-05-28T08:00:05+00:00", "{table}: deletion is final");
        assert!(row["raw"].is_null(), "{table}");
        assert_eq!(row["updated_at"], "2024-05-28T08:00:09+00:00", "{table}: non-personal columns refresh");
    }
    let domain = env.row("organization_domains", "orgdmn_2sampleDomain00000000").await.unwrap();
    assert!(domain["affiliation_email_address"].is_null(), "personal data removed");
    assert_eq!(env.row("waitlist_entries", "wle_2sampleWaitlist00000000").await.unwrap()["status"], "invited");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_deleted_user_loses_the_address_of_their_waitlist_entry() {
    let env = setup("cat-waitlist-deleted").await;
    let worker = env.start_worker().await;
    env.publish_event(&svix_id(), &envelope("user.created", user("user_w", "Wes", "early@example.com", T), T)).await;
    env.publish_event(&svix_id(), &sample("waitlistEntry.created", T).unwrap()).await;
    env.wait_processed(2, Duration::from_secs(10)).await;
    env.publish_event(&svix_id(), &envelope("user.deleted", json!({"id": "user_w", "deleted": true}), T + 5_000)).await;
    env.wait_processed(3, Duration::from_secs(10)).await;
    let entry = env.row("waitlist_entries", "wle_2sampleWaitlist00000000").await.unwrap();
    assert!(entry["email_address"].is_null() && entry["raw"].is_null(), "{entry}");
    assert_eq!(entry["deleted_at"], "2024-05-28T08:00:05+00:00", "dated by the user's deletion");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn hostile_role_permission_domain_and_waitlist_payloads_are_dead_lettered_with_their_reason() {
    let env = setup("cat-more-hostile").await;
    let poison: Vec<(String, Value, &str)> = vec![
        (svix_id(), envelope("role.created", json!({"id": "role_x"}), T), "missing_updated_at"),
        (
            svix_id(),
            envelope("role.updated", json!({"id": "role_y", "updated_at": T, "permissions": "all"}), T),
            "invalid_payload",
        ),
        (svix_id(), envelope("role.deleted", json!({"deleted": true}), T), "invalid_payload"),
        (svix_id(), envelope("permission.updated", json!({"id": 1, "updated_at": T}), T), "invalid_payload"),
        (
            svix_id(),
            envelope("organizationDomain.updated", json!({"id": "d", "updated_at": T, "verification": 3}), T),
            "invalid_payload",
        ),
        (svix_id(), envelope("organizationDomain.deleted", json!({"id": null}), T), "invalid_payload"),
        (
            svix_id(),
            envelope("waitlistEntry.updated", json!({"id": "w", "updated_at": T, "is_locked": "no"}), T),
            "invalid_payload",
        ),
    ];
    for (id, body, _) in &poison {
        env.publish_event(id, body).await;
    }
    // Nulls Clerk documents as nullable are fine.
    let entry = json!({"id": "wle_nulls", "email_address": null, "invitation": null, "status": null, "updated_at": T});
    env.publish_event(&svix_id(), &envelope("waitlistEntry.created", entry, T)).await;
    let domain = json!({"id": "orgdmn_nulls", "verification": null, "affiliation_verification": null, "updated_at": T});
    env.publish_event(&svix_id(), &envelope("organizationDomain.created", domain, T)).await;
    let worker = env.start_worker().await;
    env.wait_processed(2, Duration::from_secs(20)).await;
    let dead = env.dead_letters(Duration::from_secs(2)).await;
    assert_eq!(dead.len(), poison.len());
    for (id, _, kind) in &poison {
        let m = dead
            .iter()
            .find(|m| m.delivery.properties.message_id().as_ref().map(|s| s.as_str()) == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{kind} message dead-lettered"));
        assert_eq!(get_str(m.delivery.properties.headers().as_ref(), headers::ERROR_KIND).as_deref(), Some(*kind));
    }
    assert!(env.row("waitlist_entries", "wle_nulls").await.is_some());
    assert!(env.row("organization_domains", "orgdmn_nulls").await.is_some());
    worker.stop().await;
    env.cleanup().await;
}

//! The resources beyond users, organizations and memberships (issue 19): each event type's
//! effect, final statuses that stay final whatever the version order, a user's deletion reaching
//! the rows that name the user, and hostile payloads of each type dead-lettered with their reason.

use std::time::Duration;

use clerk_sync_core::amqp::{get_str, headers};
use clerk_sync_core::samples::{envelope, session, user};
use serde_json::json;

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

#[tokio::test]
async fn each_session_event_is_stored_with_its_user_client_status_activity_and_exact_times() {
    let env = setup("cat-session").await;
    let worker = env.start_worker().await;
    let mut n = 0;
    for (t, status) in [("session.pending", "pending"), ("session.created", "active"), ("session.ended", "ended")] {
        n += 1;
        let id = format!("sess_{status}");
        env.publish_event(&svix_id(), &envelope(t, session(&id, "user_s", status, T + 123), T + 200)).await;
        env.wait_processed(n, Duration::from_secs(10)).await;
        let row = env.row("sessions", &id).await.unwrap_or_else(|| panic!("{t} stored"));
        assert_eq!(row["status"], status, "{t}");
        assert_eq!(row["user_id"], "user_s");
        assert_eq!(row["client_id"], "client_2sampleClient000000000");
        assert_eq!(row["updated_at"], "2024-05-28T08:00:00.123+00:00", "milliseconds kept exactly");
        assert_eq!(row["last_active_at"], "2024-05-28T07:59:59.123+00:00");
        assert_eq!(row["expire_at"], "2024-06-04T08:00:00.123+00:00");
        assert_eq!(row["latest_activity"]["city"], "Lisbon");
        assert_eq!(row["raw"]["id"], id.as_str());
        assert!(row["deleted_at"].is_null());
    }
    for (t, status) in [("session.removed", "removed"), ("session.revoked", "revoked")] {
        n += 1;
        env.publish_event(&svix_id(), &envelope(t, session("sess_active", "user_s", status, T + 500), T + 600)).await;
        env.wait_processed(n, Duration::from_secs(10)).await;
        assert_eq!(env.row("sessions", "sess_active").await.unwrap()["status"], status, "{t}");
    }
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_ended_session_stays_ended_even_when_its_end_is_older_than_an_active_version_seen_first() {
    let env = setup("cat-final").await;
    let worker = env.start_worker().await;
    // Newer active version first, then an older `ended` (clock skew, a late retry): the session ends,
    // the newer version keeps its other columns.
    let (active, ended) = (svix_id(), svix_id());
    env.publish_event(
        &active,
        &envelope("session.created", session("sess_a", "user_f", "active", T + 2_000), T + 2_000),
    )
    .await;
    env.wait_processed(1, Duration::from_secs(10)).await;
    env.publish_event(&ended, &envelope("session.ended", session("sess_a", "user_f", "ended", T + 1_000), T + 1_000))
        .await;
    env.wait_processed(2, Duration::from_secs(10)).await;
    let row = env.row("sessions", "sess_a").await.unwrap();
    assert_eq!(row["status"], "ended", "a final status wins whatever its version");
    assert_eq!(row["updated_at"], "2024-05-28T08:00:02+00:00", "the newer version's columns stay");
    assert_eq!(env.outcome(&ended).await.as_deref(), Some("applied"));

    // A newer `active` after the end refreshes the columns, never the status.
    env.publish_event(
        &svix_id(),
        &envelope("session.created", session("sess_a", "user_f", "active", T + 9_000), T + 9_000),
    )
    .await;
    env.wait_processed(3, Duration::from_secs(10)).await;
    let row = env.row("sessions", "sess_a").await.unwrap();
    assert_eq!(
        (row["status"].as_str(), row["updated_at"].as_str()),
        (Some("ended"), Some("2024-05-28T08:00:09+00:00"))
    );
    worker.stop().await;

    // The same three in one batch (queued while no worker runs) end the same way.
    for (i, (t, status, at)) in
        [("session.created", "active", 2_000), ("session.ended", "ended", 1_000), ("session.created", "active", 9_000)]
            .into_iter()
            .enumerate()
    {
        let _ = i;
        env.publish_event(&svix_id(), &envelope(t, session("sess_b", "user_f", status, T + at), T + at)).await;
    }
    let worker = env.start_worker().await;
    env.wait_processed(6, Duration::from_secs(10)).await;
    let row = env.row("sessions", "sess_b").await.unwrap();
    assert_eq!(
        (row["status"].as_str(), row["updated_at"].as_str()),
        (Some("ended"), Some("2024-05-28T08:00:09+00:00"))
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_deleted_user_has_every_session_ended_and_scrubbed_including_sessions_that_arrive_later() {
    let env = setup("cat-user-deleted").await;
    let worker = env.start_worker().await;
    env.publish_event(&svix_id(), &envelope("user.created", user("user_d", "Dee", "dee@example.com", T), T)).await;
    env.publish_event(&svix_id(), &envelope("session.created", session("sess_d1", "user_d", "active", T), T)).await;
    env.publish_event(&svix_id(), &envelope("session.revoked", session("sess_d2", "user_d", "revoked", T), T)).await;
    env.publish_event(&svix_id(), &envelope("session.created", session("sess_other", "user_o", "active", T), T)).await;
    env.wait_processed(4, Duration::from_secs(10)).await;
    let deletion = json!({"id": "user_d", "object": "user", "deleted": true});
    env.publish_event(&svix_id(), &envelope("user.deleted", deletion, T + 5_000)).await;
    env.wait_processed(5, Duration::from_secs(10)).await;
    // A session event of the deleted user delivered late.
    env.publish_event(&svix_id(), &envelope("session.created", session("sess_d3", "user_d", "active", T + 1), T + 1))
        .await;
    env.wait_processed(6, Duration::from_secs(10)).await;

    for (id, status) in [("sess_d1", "ended"), ("sess_d2", "revoked"), ("sess_d3", "ended")] {
        let row = env.row("sessions", id).await.unwrap();
        assert_eq!(row["status"], status, "{id}: ended unless already final");
        assert!(row["raw"].is_null() && row["latest_activity"].is_null(), "{id}: personal data removed");
        assert_eq!(row["deleted_at"], "2024-05-28T08:00:05+00:00", "{id}: dated by the user's deletion");
        assert_eq!(row["user_id"], "user_d", "{id}: the ids stay");
    }
    let other = env.row("sessions", "sess_other").await.unwrap();
    assert_eq!(other["status"], "active");
    assert!(!other["raw"].is_null(), "another user's session is untouched");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn hostile_payloads_of_the_new_types_are_dead_lettered_with_their_reason_and_never_stop_the_worker() {
    let env = setup("cat-hostile").await;
    let poison: Vec<(String, serde_json::Value, &str)> = vec![
        (svix_id(), envelope("session.created", json!({"id": 42, "updated_at": T}), T), "invalid_payload"),
        (svix_id(), envelope("session.ended", json!({"id": "sess_x", "status": "ended"}), T), "missing_updated_at"),
        (
            svix_id(),
            envelope("session.revoked", json!({"id": "sess_y", "updated_at": "yesterday"}), T),
            "invalid_payload",
        ),
        (
            svix_id(),
            envelope("session.pending", json!({"id": "sess_z", "updated_at": T, "status": {"a": 1}}), T),
            "invalid_payload",
        ),
        (svix_id(), envelope("session.removed", json!({"id": "sess_\u{0}", "updated_at": T}), T), "database_rejected"),
    ];
    for (id, body, _) in &poison {
        env.publish_event(id, body).await;
        env.publish_event(
            &svix_id(),
            &envelope("session.created", session(&format!("sess_ok_{id}"), "user_h", "active", T), T),
        )
        .await;
    }
    // Nulls everywhere but the id and the version: stored, not refused.
    let nulls = json!({"id": "sess_nulls", "user_id": null, "client_id": null, "status": null, "latest_activity": null,
                       "last_active_at": null, "expire_at": null, "abandon_at": null, "created_at": null, "updated_at": T});
    env.publish_event(&svix_id(), &envelope("session.created", nulls, T)).await;
    // One-time codes: recorded as ignored, never stored.
    let email = svix_id();
    env.publish_event(&email, &clerk_sync_core::samples::sample("email.created", T).unwrap()).await;
    let worker = env.start_worker().await;
    env.wait_processed(i64::try_from(poison.len()).unwrap() + 2, Duration::from_secs(20)).await;
    let dead = env.dead_letters(Duration::from_secs(2)).await;
    assert_eq!(dead.len(), poison.len(), "exactly the hostile messages are dead-lettered");
    for (id, _, kind) in &poison {
        let m = dead
            .iter()
            .find(|m| m.delivery.properties.message_id().as_ref().map(|s| s.as_str()) == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{kind} message dead-lettered"));
        assert_eq!(get_str(m.delivery.properties.headers().as_ref(), headers::ERROR_KIND).as_deref(), Some(*kind));
    }
    assert_eq!(env.table("sessions").await.len(), poison.len() + 1, "every good session applied");
    assert!(env.row("sessions", "sess_nulls").await.unwrap()["status"].is_null());
    assert_eq!(env.outcome(&email).await.as_deref(), Some("ignored"));
    worker.stop().await;
    env.cleanup().await;
}

pub(crate) fn invitation(
    id: &str,
    email: &str,
    status: &str,
    user_id: Option<&str>,
    updated_at: i64,
) -> serde_json::Value {
    let mut v = clerk_sync_core::samples::sample("organizationInvitation.created", updated_at).unwrap()["data"].clone();
    v["id"] = json!(id);
    v["email_address"] = json!(email);
    v["status"] = json!(status);
    v["user_id"] = json!(user_id);
    v["inviter_id"] = json!("user_inviter");
    v
}

#[tokio::test]
async fn invitations_are_stored_and_an_older_acceptance_still_marks_a_newer_pending_one_accepted() {
    let env = setup("cat-invitation").await;
    let worker = env.start_worker().await;
    let created = invitation("orginv_1", "ivy@example.com", "pending", None, T + 2_000);
    env.publish_event(&svix_id(), &envelope("organizationInvitation.created", created, T + 2_000)).await;
    env.wait_processed(1, Duration::from_secs(10)).await;
    let row = env.row("organization_invitations", "orginv_1").await.unwrap();
    assert_eq!(row["status"], "pending");
    assert_eq!(row["email_address"], "ivy@example.com");
    assert_eq!(row["organization_id"], "org_2sampleOrg00000000000");
    assert_eq!(row["role"], "org:member");
    assert_eq!(row["inviter_id"], "user_inviter");
    assert_eq!(row["updated_at"], "2024-05-28T08:00:02+00:00");
    let accepted = invitation("orginv_1", "ivy@example.com", "accepted", Some("user_ivy"), T + 1_000);
    env.publish_event(&svix_id(), &envelope("organizationInvitation.accepted", accepted, T + 1_000)).await;
    env.wait_processed(2, Duration::from_secs(10)).await;
    let row = env.row("organization_invitations", "orginv_1").await.unwrap();
    assert_eq!((row["status"].as_str(), row["user_id"].as_str()), (Some("accepted"), Some("user_ivy")), "final");
    let pending = invitation("orginv_1", "ivy@example.com", "pending", None, T + 9_000);
    env.publish_event(&svix_id(), &envelope("organizationInvitation.created", pending, T + 9_000)).await;
    let revoked = invitation("orginv_2", "rex@example.com", "revoked", None, T);
    env.publish_event(&svix_id(), &envelope("organizationInvitation.revoked", revoked, T)).await;
    env.wait_processed(4, Duration::from_secs(10)).await;
    let row = env.row("organization_invitations", "orginv_1").await.unwrap();
    assert_eq!((row["status"].as_str(), row["user_id"].as_str()), (Some("accepted"), Some("user_ivy")), "stays");
    assert_eq!(env.row("organization_invitations", "orginv_2").await.unwrap()["status"], "revoked");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_deleted_user_loses_the_personal_data_of_invitations_sent_to_any_of_their_addresses_or_by_them() {
    let env = setup("cat-inv-deleted").await;
    let worker = env.start_worker().await;
    // The sample user has a primary and an older address.
    env.publish_event(&svix_id(), &envelope("user.created", user("user_inviter", "Ina", "ina@example.com", T), T))
        .await;
    env.publish_event(&svix_id(), &envelope("user.created", user("user_v", "Vi", "vi@example.com", T), T)).await;
    let to_primary = invitation("orginv_p", "VI@example.com", "pending", None, T);
    let to_old = invitation("orginv_o", "old.vi@example.com", "pending", None, T);
    let mut by_v = invitation("orginv_by", "someone@example.com", "pending", None, T);
    by_v["inviter_id"] = json!("user_v");
    let unrelated = invitation("orginv_u", "ursula@example.com", "pending", None, T);
    for v in [to_primary, to_old, by_v, unrelated] {
        env.publish_event(&svix_id(), &envelope("organizationInvitation.created", v, T)).await;
    }
    env.wait_processed(6, Duration::from_secs(10)).await;
    env.publish_event(&svix_id(), &envelope("user.deleted", json!({"id": "user_v", "deleted": true}), T + 5_000)).await;
    env.wait_processed(7, Duration::from_secs(10)).await;
    // Accepted by the deleted user, delivered late.
    let late = invitation("orginv_late", "vi.work@example.com", "accepted", Some("user_v"), T + 1);
    env.publish_event(&svix_id(), &envelope("organizationInvitation.accepted", late, T + 1)).await;
    env.wait_processed(8, Duration::from_secs(10)).await;

    for id in ["orginv_p", "orginv_o", "orginv_late"] {
        let row = env.row("organization_invitations", id).await.unwrap();
        assert!(row["email_address"].is_null() && row["raw"].is_null(), "{id}: personal data removed: {row}");
        assert!(row["public_metadata"].is_null());
        assert_eq!(row["deleted_at"], "2024-05-28T08:00:05+00:00", "{id}");
    }
    let by = env.row("organization_invitations", "orginv_by").await.unwrap();
    assert!(by["raw"].is_null(), "the inviter's name and address lived in raw");
    assert_eq!(
        (by["email_address"].as_str(), by["inviter_id"].as_str()),
        (Some("someone@example.com"), Some("user_v"))
    );
    let u = env.row("organization_invitations", "orginv_u").await.unwrap();
    assert!(!u["raw"].is_null() && u["deleted_at"].is_null(), "another invitee is untouched");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn hostile_invitation_payloads_are_dead_lettered_and_the_good_ones_apply() {
    let env = setup("cat-inv-hostile").await;
    let poison: Vec<(String, serde_json::Value, &str)> = vec![
        (
            svix_id(),
            envelope("organizationInvitation.created", json!({"id": [], "updated_at": T}), T),
            "invalid_payload",
        ),
        (svix_id(), envelope("organizationInvitation.accepted", json!({"id": "orginv_x"}), T), "missing_updated_at"),
        (
            svix_id(),
            envelope(
                "organizationInvitation.revoked",
                json!({"id": "orginv_y", "updated_at": T, "expires_at": "soon"}),
                T,
            ),
            "invalid_payload",
        ),
    ];
    for (id, body, _) in &poison {
        env.publish_event(id, body).await;
    }
    let nulls = json!({"id": "orginv_nulls", "email_address": null, "organization_id": null, "status": null,
                       "public_metadata": null, "user_id": null, "updated_at": T});
    env.publish_event(&svix_id(), &envelope("organizationInvitation.created", nulls, T)).await;
    let worker = env.start_worker().await;
    env.wait_processed(1, Duration::from_secs(20)).await;
    let dead = env.dead_letters(Duration::from_secs(2)).await;
    assert_eq!(dead.len(), poison.len());
    for (id, _, kind) in &poison {
        let m = dead
            .iter()
            .find(|m| m.delivery.properties.message_id().as_ref().map(|s| s.as_str()) == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{kind} message dead-lettered"));
        assert_eq!(get_str(m.delivery.properties.headers().as_ref(), headers::ERROR_KIND).as_deref(), Some(*kind));
    }
    assert!(env.row("organization_invitations", "orginv_nulls").await.is_some());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn invitations_matched_by_address_are_dated_by_their_own_users_deletion_when_one_batch_deletes_several() {
    let env = setup("cat-inv-two-deleted").await;
    // Queued while no worker runs, and one lane, so one batch takes both deletions.
    for (u, email, at) in [("user_a1", "a1@example.com", 5_000), ("user_b1", "b1@example.com", 9_000)] {
        env.publish_event(&svix_id(), &envelope("user.created", user(u, "X", email, T), T)).await;
        let v = invitation(&format!("orginv_{u}"), email, "pending", None, T);
        env.publish_event(&svix_id(), &envelope("organizationInvitation.created", v, T)).await;
        env.publish_event(&svix_id(), &envelope("user.deleted", json!({"id": u, "deleted": true}), T + at)).await;
    }
    let worker = env.start_worker_with(|s| s.with_env("CLERK_SYNC__WORKER__CONCURRENCY", "1")).await;
    env.wait_processed(6, Duration::from_secs(10)).await;
    for (u, deleted_at) in [("user_a1", "2024-05-28T08:00:05+00:00"), ("user_b1", "2024-05-28T08:00:09+00:00")] {
        let row = env.row("organization_invitations", &format!("orginv_{u}")).await.unwrap();
        assert_eq!(row["deleted_at"], deleted_at, "{u}");
        assert!(row["email_address"].is_null(), "{u}");
    }
    worker.stop().await;
    env.cleanup().await;
}

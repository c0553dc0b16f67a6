//! Clerk Billing (issue 19): subscriptions, their items and payment attempts stored with payer,
//! plan, status, periods and amounts; the old spelling `subscription.past_due`; a paying user's
//! deletion removing `raw` (the payer's name and address); hostile payloads dead-lettered.

use std::time::Duration;

use clerk_sync_core::amqp::{get_str, headers};
use clerk_sync_core::samples::{envelope, sample, user};
use serde_json::{Value, json};

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;
const USER: &str = "user_2sampleUser0000000000";

#[tokio::test]
async fn every_billing_type_is_stored_with_payer_plan_status_periods_and_amounts() {
    let env = setup("cat-billing").await;
    let worker = env.start_worker().await;
    let types: Vec<&str> = clerk_sync_store::catalogue::names()
        .filter(|t| t.starts_with("subscription") || t.starts_with("paymentAttempt."))
        .collect();
    for (i, t) in types.iter().enumerate() {
        let at = T + 1_000 * i64::try_from(i).unwrap();
        env.publish_event(&svix_id(), &sample(t, at).unwrap()).await;
        env.wait_processed(i64::try_from(i).unwrap() + 1, Duration::from_secs(10)).await;
        let table = if t.starts_with("subscriptionItem.") {
            "subscription_items"
        } else if t.starts_with("subscription.") {
            "subscriptions"
        } else {
            "payment_attempts"
        };
        let rows = env.table(table).await;
        assert_eq!(rows.len(), 1, "{t}");
        assert_eq!(rows[0]["user_id"], USER, "{t}: the payer's user");
        assert_eq!(rows[0]["payer_id"], "cpayer_2sample000000000", "{t}");
        assert!(!rows[0]["updated_at"].is_null(), "{t}");
    }
    let item = env.row("subscription_items", "csitem_2sampleItem000000000").await.unwrap();
    assert_eq!(
        (item["plan_slug"].as_str(), item["amount"].as_i64(), item["currency"].as_str()),
        (Some("pro"), Some(2000), Some("USD"))
    );
    assert_eq!(item["subscription_id"], "csub_2sampleSubscription0000");
    assert!(!item["period_end"].is_null());
    let subscription = env.row("subscriptions", "csub_2sampleSubscription0000").await.unwrap();
    assert_eq!(subscription["status"], "active", "the newest version: subscription.updated, sent last");
    let attempt = env.row("payment_attempts", "pa_2samplePayment00000000").await.unwrap();
    assert_eq!(
        (attempt["status"].as_str(), attempt["amount"].as_i64()),
        (Some("paid"), Some(2200)),
        "totals.grand_total"
    );

    // The old spelling is the same type.
    let mut old = sample("subscription.pastDue", T + 100_000).unwrap();
    old["type"] = json!("subscription.past_due");
    assert_eq!(old["data"]["status"], "past_due");
    let id = svix_id();
    env.publish_event(&id, &old).await;
    env.wait_processed(i64::try_from(types.len()).unwrap() + 1, Duration::from_secs(10)).await;
    assert_eq!(env.outcome(&id).await.as_deref(), Some("applied"));
    let subscription = env.row("subscriptions", "csub_2sampleSubscription0000").await.unwrap();
    assert_eq!(subscription["status"], "past_due");
    assert!(!subscription["past_due_at"].is_null());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_deleted_payer_loses_the_raw_payloads_of_their_billing_rows_but_keeps_the_accounting() {
    let env = setup("cat-billing-deleted").await;
    let worker = env.start_worker().await;
    env.publish_event(&svix_id(), &envelope("user.created", user(USER, "Sam", "sam@example.com", T), T)).await;
    for t in ["subscription.active", "subscriptionItem.active"] {
        env.publish_event(&svix_id(), &sample(t, T).unwrap()).await;
    }
    env.wait_processed(3, Duration::from_secs(10)).await;
    env.publish_event(&svix_id(), &envelope("user.deleted", json!({"id": USER, "deleted": true}), T + 5_000)).await;
    env.wait_processed(4, Duration::from_secs(10)).await;
    env.publish_event(&svix_id(), &sample("paymentAttempt.updated", T + 1).unwrap()).await;
    env.wait_processed(5, Duration::from_secs(10)).await;
    for table in ["subscriptions", "subscription_items", "payment_attempts"] {
        let rows = env.table(table).await;
        assert!(rows[0]["raw"].is_null(), "{table}: the payer's name and address are gone");
        assert_eq!(rows[0]["deleted_at"], "2024-05-28T08:00:05+00:00", "{table}");
        assert!(!rows[0]["status"].is_null(), "{table}: the accounting stays");
    }
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn hostile_billing_payloads_are_dead_lettered_with_their_reason() {
    let env = setup("cat-billing-hostile").await;
    let poison: Vec<(String, Value, &str)> = vec![
        (svix_id(), envelope("subscription.active", json!({"id": "csub_x"}), T), "missing_updated_at"),
        (
            svix_id(),
            envelope("subscription.updated", json!({"id": "csub_y", "updated_at": T, "payer": "me"}), T),
            "invalid_payload",
        ),
        (
            svix_id(),
            envelope("subscriptionItem.ended", json!({"id": "i", "updated_at": T, "plan": {"amount": "lots"}}), T),
            "invalid_payload",
        ),
        (svix_id(), envelope("paymentAttempt.created", json!({"id": {}, "updated_at": T}), T), "invalid_payload"),
    ];
    for (id, body, _) in &poison {
        env.publish_event(id, body).await;
    }
    let nulls =
        json!({"id": "pa_nulls", "payer": null, "totals": null, "amount": null, "status": null, "updated_at": T});
    env.publish_event(&svix_id(), &envelope("paymentAttempt.updated", nulls, T)).await;
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
    assert!(env.row("payment_attempts", "pa_nulls").await.is_some());
    worker.stop().await;
    env.cleanup().await;
}

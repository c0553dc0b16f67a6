//! What is left of a stored body once its user is deleted: the envelope's type and times, and of
//! `data` only what the synced tables keep of such an object after the deletion (ids, timestamps,
//! flags, role, status, a session's times, a Billing object's plan, amounts and periods), so that
//! `reproject` rebuilds the same rows from it; a membership keeps its organization (the
//! organization's data, not the user's), and of `public_user_data` and `payer` only their ids.
//! Everything else (names, email addresses, phone numbers, metadata, images, IPs, user agents,
//! a session's latest activity) is gone. An allowlist, so a field Clerk adds later is removed too.

use serde_json::{Map, Value};

const KEPT_DATA: &[&str] = &[
    "id",
    "object",
    "deleted",
    "external_id",
    "user_id",
    "organization_id",
    "client_id",
    "role",
    "permissions",
    "status",
    "banned",
    "locked",
    "two_factor_enabled",
    "created_at",
    "updated_at",
    "organization",
    // Sessions and invitations.
    "last_active_at",
    "last_active_organization_id",
    "expire_at",
    "abandon_at",
    "expires_at",
    "inviter_id",
    // Clerk Billing: the accounting stays when the paying user is deleted.
    "payer_id",
    "subscription_id",
    "latest_payment_id",
    "payment_source_id",
    "payment_id",
    "statement_id",
    "plan_id",
    "plan",
    "interval",
    "is_free_trial",
    "charge_type",
    "totals",
    "amount",
    "active_at",
    "past_due_at",
    "canceled_at",
    "ended_at",
    "period_start",
    "period_end",
    "billing_date",
    "paid_at",
    "failed_at",
];
/// Of these nested objects only their ids are kept.
const ID_ONLY: &[(&str, &[&str])] =
    &[("public_user_data", &["user_id"]), ("payer", &["id", "user_id", "organization_id"])];
const KEPT_ENVELOPE: &[&str] = &["type", "object", "timestamp", "instance_id"];

fn keep(map: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter().filter_map(|k| map.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect()
}

/// The scrubbed body, or `None` if `body` is not a JSON object (it is then dropped entirely).
pub fn scrub(body: &[u8]) -> Option<Vec<u8>> {
    scrub_keeping(body, &[])
}

/// An invitation's body once its inviter is deleted: scrubbed, but keeping the invitee's address
/// (`email_address`), which is not the inviter's data and which its row keeps too.
pub fn scrub_inviter(body: &[u8]) -> Option<Vec<u8>> {
    scrub_keeping(body, &["email_address"])
}

fn scrub_keeping(body: &[u8], also: &[&str]) -> Option<Vec<u8>> {
    let Value::Object(envelope) = serde_json::from_slice::<Value>(body).ok()? else { return None };
    let mut out = keep(&envelope, KEPT_ENVELOPE);
    if let Some(Value::Object(data)) = envelope.get("data") {
        let mut kept = keep(data, KEPT_DATA);
        kept.extend(keep(data, also));
        for (field, ids) in ID_ONLY {
            if let Some(Value::Object(nested)) = data.get(*field) {
                kept.insert((*field).into(), Value::Object(keep(nested, ids)));
            }
        }
        out.insert("data".into(), Value::Object(kept));
    }
    serde_json::to_vec(&Value::Object(out)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clerk_sync_core::samples;

    #[test]
    fn a_scrubbed_body_keeps_ids_and_versions_and_no_personal_field() {
        for t in [
            "user.updated",
            "organizationMembership.updated",
            "session.created",
            "organizationInvitation.accepted",
            "subscription.active",
            "subscriptionItem.active",
            "paymentAttempt.updated",
        ] {
            let body = samples::sample(t, 1_716_883_200_000).unwrap().to_string();
            let scrubbed = String::from_utf8(scrub(body.as_bytes()).unwrap()).unwrap();
            for personal in
                ["sam@example.com", "\"first_name\"", "\"last_name\"", "\"identifier\"", "+1555", "invitee@example.com"]
            {
                assert!(!scrubbed.contains(personal), "{t}: {personal} in {scrubbed}");
            }
            let v: Value = serde_json::from_str(&scrubbed).unwrap();
            for field in ["image_url", "public_metadata", "private_metadata", "unsafe_metadata", "email_address"] {
                assert!(v["data"].get(field).is_none(), "{t}: {field} kept");
            }
            if let Some(p) = v["data"].get("public_user_data") {
                assert_eq!(p.as_object().unwrap().len(), 1, "{t}: only user_id");
            }
            if let Some(p) = v["data"].get("payer") {
                assert!(p.as_object().unwrap().keys().all(|k| k.ends_with("id")), "{t}: only ids: {p}");
                assert_eq!(p["user_id"], "user_2sampleUser0000000000");
            }
            assert_eq!(v["type"], t);
            assert!(v["data"]["id"].is_string() && v["data"]["updated_at"].is_number(), "{t}: {scrubbed}");
        }
        // What the tables keep after the deletion stays, so that reproject rebuilds the same rows.
        let kept = |t: &str| -> Value {
            let body = samples::sample(t, 1_716_883_200_000).unwrap().to_string();
            serde_json::from_slice(&scrub(body.as_bytes()).unwrap()).unwrap()
        };
        let session = kept("session.created");
        for field in ["expire_at", "abandon_at", "last_active_at", "client_id", "status"] {
            assert!(session["data"].get(field).is_some(), "session: {field} lost");
        }
        assert!(session["data"].get("latest_activity").is_none(), "a session's latest activity names an IP");
        let item = kept("subscriptionItem.active");
        for field in ["plan", "plan_id", "period_start", "period_end", "interval", "status"] {
            assert!(item["data"].get(field).is_some(), "subscription item: {field} lost: {item}");
        }
        assert_eq!(scrub(b"not json"), None);
    }

    #[test]
    fn an_invitation_whose_inviter_is_deleted_keeps_its_invitees_address_and_loses_the_inviters_data() {
        let body = samples::sample("organizationInvitation.created", 1_716_883_200_000).unwrap();
        let address = body["data"]["email_address"].as_str().unwrap().to_owned();
        let inviter = body["data"]["public_inviter_data"].to_string();
        assert!(inviter.contains("identifier"), "the sample names its inviter: {inviter}");
        let scrubbed: Value = serde_json::from_slice(&scrub_inviter(body.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(scrubbed["data"]["email_address"], address.as_str());
        assert!(scrubbed["data"].get("public_inviter_data").is_none(), "{scrubbed}");
        assert!(scrubbed.get("event_attributes").is_none(), "the inviter's IP: {scrubbed}");
        assert_eq!(scrubbed["data"]["inviter_id"], body["data"]["inviter_id"], "ids stay");
        let full: Value = serde_json::from_slice(&scrub(&serde_json::to_vec(&scrubbed).unwrap()).unwrap()).unwrap();
        assert!(full["data"].get("email_address").is_none(), "the invitee's own deletion removes it later");
    }
}

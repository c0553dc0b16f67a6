//! What is left of a stored body once its user is deleted: the envelope's type and times, and of
//! `data` only what a tombstone keeps (ids, timestamps, flags, role, status); a membership keeps
//! its organization (the organization's data, not the user's) and of `public_user_data` only
//! `user_id`. Everything else (names, email addresses, phone numbers, metadata, images, IPs, user
//! agents) is gone. An allowlist, so a field Clerk adds later is removed too.

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
];
const KEPT_ENVELOPE: &[&str] = &["type", "object", "timestamp", "instance_id"];

fn keep(map: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter().filter_map(|k| map.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect()
}

/// The scrubbed body, or `None` if `body` is not a JSON object (it is then dropped entirely).
pub fn scrub(body: &[u8]) -> Option<Vec<u8>> {
    let Value::Object(envelope) = serde_json::from_slice::<Value>(body).ok()? else { return None };
    let mut out = keep(&envelope, KEPT_ENVELOPE);
    if let Some(Value::Object(data)) = envelope.get("data") {
        let mut kept = keep(data, KEPT_DATA);
        if let Some(user_id) = data.get("public_user_data").and_then(|p| p.get("user_id")) {
            kept.insert("public_user_data".into(), serde_json::json!({ "user_id": user_id }));
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
        for t in
            ["user.updated", "organizationMembership.updated", "session.created", "organizationInvitation.accepted"]
        {
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
            assert_eq!(v["type"], t);
            assert!(v["data"]["id"].is_string() && v["data"]["updated_at"].is_number(), "{t}: {scrubbed}");
        }
        assert_eq!(scrub(b"not json"), None);
    }
}

//! Realistic sample events for every Clerk webhook type, written for this project: what
//! `clerk-sync send` posts, what the tests and the benchmark load generator feed in.
//!
//! Shapes follow Clerk's payloads (envelope `{data, object, type, timestamp, instance_id,
//! event_attributes}`, millisecond timestamps, deleted objects `{id, object, deleted}`); the people
//! and companies are invented.

use serde_json::{Value, json};

/// Wraps `data` in a Clerk envelope.
pub fn envelope(event_type: &str, data: Value, timestamp_ms: i64) -> Value {
    json!({
        "data": data,
        "event_attributes": {"http_request": {"client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) clerk-sync-sample"}},
        "instance_id": "ins_2sampleInstance0000000000",
        "object": "event",
        "timestamp": timestamp_ms,
        "type": event_type
    })
}

/// A user as `user.created` / `user.updated` carry it.
pub fn user(id: &str, first_name: &str, email: &str, updated_at: i64) -> Value {
    let email_id = format!("idn_{}", &id[id.len().saturating_sub(10)..]);
    json!({
        "backup_code_enabled": false, "banned": false, "create_organization_enabled": true,
        "created_at": updated_at - 60_000, "delete_self_enabled": true,
        "email_addresses": [
            {"id": "idn_secondary00000", "object": "email_address", "email_address": format!("old.{email}"),
             "reserved": false, "linked_to": [], "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": null},
             "created_at": updated_at - 60_000, "updated_at": updated_at - 60_000},
            {"id": email_id, "object": "email_address", "email_address": email, "reserved": false,
             "linked_to": [{"id": "idn_oauth000000", "type": "oauth_google"}],
             "verification": {"status": "verified", "strategy": "from_oauth_google", "attempts": null, "expire_at": null},
             "created_at": updated_at - 60_000, "updated_at": updated_at}
        ],
        "enterprise_accounts": [], "external_accounts": [], "external_id": format!("app-{id}"),
        "first_name": first_name, "has_image": true, "id": id,
        "image_url": format!("https://img.example.com/{id}.png"),
        "last_active_at": updated_at, "last_name": "Sample", "last_sign_in_at": updated_at - 1_000,
        "legal_accepted_at": null, "locked": false, "lockout_expires_in_seconds": null,
        "mfa_disabled_at": null, "mfa_enabled_at": null, "object": "user", "passkeys": [], "password_enabled": false,
        "phone_numbers": [{"id": "idn_phone000000", "object": "phone_number", "phone_number": "+15555550100",
                           "reserved_for_second_factor": false, "default_second_factor": false, "linked_to": [],
                           "verification": {"status": "verified", "strategy": "phone_code", "attempts": 1, "expire_at": null},
                           "created_at": updated_at - 60_000, "updated_at": updated_at - 60_000}],
        "primary_email_address_id": email_id, "primary_phone_number_id": "idn_phone000000", "primary_web3_wallet_id": null,
        "private_metadata": {"plan": "pro"}, "public_metadata": {"role": "member"}, "saml_accounts": [],
        "totp_enabled": false, "two_factor_enabled": false, "unsafe_metadata": {"theme": "dark"},
        "updated_at": updated_at, "username": format!("{}_{}", first_name.to_lowercase(), &id[id.len().saturating_sub(4)..]),
        "verification_attempts_remaining": 100, "web3_wallets": []
    })
}

pub fn organization(id: &str, name: &str, updated_at: i64) -> Value {
    json!({
        "admin_delete_enabled": true, "created_at": updated_at - 60_000, "created_by": "user_2sampleCreator000000000",
        "has_image": false, "id": id, "image_url": format!("https://img.example.com/{id}.png"),
        "max_allowed_memberships": 25, "members_count": 3, "missing_member_with_elevated_permissions": false,
        "name": name, "object": "organization", "pending_invitations_count": 0,
        "private_metadata": {"billing_id": "cus_123"}, "public_metadata": {"tier": "team"}, "role_set_key": null,
        "slug": name.to_lowercase().replace(' ', "-"), "updated_at": updated_at
    })
}

pub fn membership(id: &str, org_id: &str, user_id: &str, role: &str, updated_at: i64) -> Value {
    json!({
        "created_at": updated_at - 30_000, "id": id, "object": "organization_membership",
        "organization": organization(org_id, "Sample Org", updated_at - 10_000),
        "permissions": ["org:sys_memberships:read", "org:sys_profile:read"],
        "private_metadata": {}, "public_metadata": {"team": "core"},
        "public_user_data": {"first_name": "Sam", "last_name": "Sample", "has_image": false, "identifier": "sam@example.com",
                             "image_url": "https://img.example.com/u.png", "profile_image_url": "https://img.example.com/u.png",
                             "user_id": user_id, "username": null},
        "role": role, "role_name": if role == "org:admin" { "Admin" } else { "Member" }, "updated_at": updated_at
    })
}

/// A session as `session.*` carry it (`status`: `active`, `pending`, `ended`, `removed`, `revoked`);
/// real events also nest the whole user, which the worker keeps in `raw` only.
pub fn session(id: &str, user_id: &str, status: &str, updated_at: i64) -> Value {
    json!({
        "abandon_at": updated_at + 2_592_000_000_i64, "actor": null, "client_id": "client_2sampleClient000000000",
        "created_at": updated_at - 60_000, "expire_at": updated_at + 604_800_000_i64, "id": id,
        "last_active_at": updated_at - 1_000, "last_active_organization_id": null,
        "latest_activity": {"browser_name": "Chrome", "browser_version": "128.0.0.0", "city": "Lisbon", "country": "PT",
                            "device_type": "Macintosh", "id": "sess_activity_2sample000000", "ip_address": "203.0.113.7",
                            "is_mobile": false, "object": "session_activity"},
        "object": "session", "status": status, "updated_at": updated_at, "user_id": user_id
    })
}

fn payer(user_id: &str) -> Value {
    json!({"created_at": 1_716_800_000_000_i64, "email": "sam@example.com", "first_name": "Sam", "id": "cpayer_2sample000000000",
           "last_name": "Sample", "object": "commerce_payer", "organization_id": null, "updated_at": 1_716_800_000_000_i64,
           "user_id": user_id})
}

/// A Billing subscription item (`status`: `active`, `canceled`, `ended`, `pastDue`, ...).
fn subscription_item(status: &str, user_id: &str, ts: i64) -> Value {
    let status = if status == "pastDue" {
        "past_due"
    } else if status == "freeTrialEnding" {
        "active"
    } else {
        status
    };
    json!({
        "created_at": ts - 5_000, "id": "csitem_2sampleItem000000000", "interval": "month", "is_free_trial": false,
        "object": "commerce_subscription_item", "payer": payer(user_id), "period_end": ts + 2_592_000_000_i64,
        "period_start": ts - 5_000,
        "plan": {"amount": 2000, "currency": "USD", "id": "cplan_2samplePro0000000", "is_recurring": true, "name": "Pro", "slug": "pro"},
        "plan_id": "cplan_2samplePro0000000", "status": status, "subscription_id": "csub_2sampleSubscription0000",
        "updated_at": ts
    })
}

fn deleted(object: &str, id: &str) -> Value {
    json!({"deleted": true, "id": id, "object": object})
}

/// A realistic envelope of `event_type` at `ts` (ms); `None` for a type it has no sample of.
/// Clerk's catalogue of types is `clerk_sync_store::catalogue`, which tests that every type has one.
pub fn sample(event_type: &str, ts: i64) -> Option<Value> {
    let (user_id, org_id) = ("user_2sampleUser0000000000", "org_2sampleOrg00000000000");
    let data = match event_type {
        "user.created" | "user.updated" => user(user_id, "Sam", "sam@example.com", ts),
        "user.deleted" => {
            json!({"deleted": true, "external_id": format!("app-{user_id}"), "id": user_id, "object": "user"})
        }
        "organization.created" | "organization.updated" => organization(org_id, "Sample Org", ts),
        "organization.deleted" => {
            json!({"deleted": true, "id": org_id, "object": "organization", "slug": "sample-org"})
        }
        "organizationMembership.created" | "organizationMembership.updated" | "organizationMembership.deleted" => {
            membership("orgmem_2sampleMembership00000", org_id, user_id, "org:member", ts)
        }
        t if t.starts_with("organizationInvitation.") => json!({
            "created_at": ts - 5_000, "email_address": "invitee@example.com", "expires_at": ts + 2_592_000_000_i64,
            "id": "orginv_2sampleInvitation0000", "inviter_id": "user_2sampleCreator000000000", "object": "organization_invitation",
            "organization_id": org_id, "private_metadata": {}, "public_metadata": {}, "role": "org:member", "role_name": "Member",
            "public_inviter_data": {"first_name": "Cleo", "last_name": "Creator", "identifier": "cleo@example.com",
                "has_image": false, "image_url": "https://img.clerk.com/cleo.png", "user_id": "user_2sampleCreator000000000"},
            "status": t.strip_prefix("organizationInvitation.").map(|s| if s == "created" { "pending" } else { s }),
            "updated_at": ts, "url": null, "user_id": if t.ends_with("accepted") { json!(user_id) } else { Value::Null }
        }),
        "organizationDomain.deleted" => deleted("organization_domain", "orgdmn_2sampleDomain00000000"),
        t if t.starts_with("organizationDomain.") => json!({
            "affiliation_email_address": "admin@sample.example", "created_at": ts - 5_000, "enrollment_mode": "automatic_invitation",
            "id": "orgdmn_2sampleDomain00000000", "name": "sample.example", "object": "organization_domain",
            "organization_id": org_id, "total_pending_invitations": 0, "total_pending_suggestions": 0, "updated_at": ts,
            "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": null}
        }),
        t if t.starts_with("session.") => {
            let status = t.strip_prefix("session.").map_or("active", |s| if s == "created" { "active" } else { s });
            session("sess_2sampleSession00000000", user_id, status, ts)
        }
        "email.created" => json!({
            "body": "<p>Your verification code is 123456</p>", "data": {"otp_code": "123456"}, "delivered_by_clerk": true,
            "email_address_id": "idn_sample", "from_email_name": "noreply", "id": "ema_2sampleEmail000000000",
            "object": "email", "slug": "verification_code", "status": "queued", "subject": "123456 is your verification code",
            "to_email_address": "sam@example.com", "user_id": user_id
        }),
        "sms.created" => json!({
            "created_at": ts, "data": {"otp_code": "123456"}, "delivered_by_clerk": true, "from_phone_number": "+15555550000",
            "id": "sms_2sampleSms0000000000", "message": "123456 is your verification code", "object": "sms_message",
            "phone_number_id": "idn_phone000000", "slug": "verification_code", "status": "queued",
            "to_phone_number": "+15555550100", "user_id": user_id
        }),
        "role.deleted" => json!({"deleted": true, "id": "role_2sampleRole000000000", "object": "role", "slug": null}),
        t if t.starts_with("role.") => json!({
            "created_at": ts - 5_000, "description": "Can bill", "id": "role_2sampleRole000000000", "is_creator_eligible": false,
            "key": "org:billing", "name": "Billing", "object": "role", "permissions": [], "updated_at": ts
        }),
        "permission.deleted" => deleted("permission", "perm_2samplePermission000000"),
        t if t.starts_with("permission.") => json!({
            "created_at": ts - 5_000, "description": "Read invoices", "id": "perm_2samplePermission000000",
            "key": "org:invoices:read", "name": "Read invoices", "object": "permission", "type": "custom", "updated_at": ts
        }),
        t if t.starts_with("waitlistEntry.") => json!({
            "created_at": ts - 5_000, "email_address": "early@example.com", "id": "wle_2sampleWaitlist00000000",
            "invitation": null, "is_locked": false, "object": "waitlist_entry",
            "status": if t.ends_with("created") { "pending" } else { "invited" }, "updated_at": ts
        }),
        t if t.starts_with("paymentAttempt.") => json!({
            "billing_date": ts - 5_000, "charge_type": "recurring", "created_at": ts - 5_000, "failed_at": null,
            "failed_reason": null, "id": "pa_2samplePayment00000000", "object": "commerce_payment_attempt",
            "paid_at": if t.ends_with("created") { Value::Null } else { json!(ts) },
            "payer": {"email": "sam@example.com", "first_name": "Sam", "id": "cpayer_2sample000000000", "last_name": "Sample",
                      "user_id": user_id},
            "payment_id": "cpa_2samplePayment0000000", "statement_id": "stmt_2sample000000000",
            "status": if t.ends_with("created") { "pending" } else { "paid" },
            "totals": {"grand_total": {"amount": 2200, "amount_formatted": "$22.00", "currency": "USD", "currency_symbol": "$"},
                       "subtotal": {"amount": 2000, "amount_formatted": "$20.00", "currency": "USD", "currency_symbol": "$"}},
            "updated_at": ts
        }),
        t if t.starts_with("subscriptionItem.") => {
            subscription_item(t.strip_prefix("subscriptionItem.").unwrap_or("active"), user_id, ts)
        }
        t if t.starts_with("subscription.") => {
            let status = match t.strip_prefix("subscription.") {
                Some("pastDue") => "past_due",
                Some("created") => "incomplete",
                _ => "active",
            };
            json!({
                "active_at": ts - 4_000, "canceled_at": null, "created_at": ts - 5_000, "ended_at": null,
                "id": "csub_2sampleSubscription0000", "items": [subscription_item("active", user_id, ts)],
                "latest_payment_id": "cpa_2samplePayment0000000", "object": "commerce_subscription",
                "past_due_at": if status == "past_due" { json!(ts) } else { Value::Null },
                "payer": payer(user_id), "payer_id": "cpayer_2sample000000000", "payment_source_id": "cps_2sample000000000",
                "status": status, "updated_at": ts
            })
        }
        _ => return None,
    };
    Some(envelope(event_type, data, ts))
}

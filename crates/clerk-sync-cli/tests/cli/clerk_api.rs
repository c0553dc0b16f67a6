//! A local fake of Clerk's Backend API with every endpoint backfill and reconcile read (the one
//! thing tests may fake: Clerk cannot be reached from here), over real HTTP. Lists page with
//! `limit`/`offset`; the organization, role, permission, waitlist and Billing lists answer
//! `{"data": [...], "total_count": n}`, users and sessions a bare array, as Clerk does. Payment
//! attempts are listed per Billing statement, as Clerk lists them. Its state
//! is mutable, so a test can change Clerk between runs; `malformed` makes an endpoint answer a
//! body of the wrong shape.

use std::collections::HashSet;
use std::sync::Mutex;

use actix_web::{HttpRequest, HttpResponse, web};
use clerk_sync_core::samples;
use serde_json::{Value, json};

pub const KEY: &str = "sk_test_catalogue_key";

#[derive(Default)]
pub struct State {
    pub users: Vec<Value>,
    pub organizations: Vec<Value>,
    pub memberships: Vec<Value>,
    pub sessions: Vec<Value>,
    pub invitations: Vec<Value>,
    pub roles: Vec<Value>,
    pub permissions: Vec<Value>,
    pub domains: Vec<Value>,
    pub waitlist: Vec<Value>,
    pub subscriptions: Vec<Value>,
    pub subscription_items: Vec<Value>,
    /// Billing statements (only their ids matter here) and the attempts of each (`statement_id`).
    pub statements: Vec<Value>,
    pub payment_attempts: Vec<Value>,
}

#[derive(Default)]
pub struct FakeClerk {
    pub state: Mutex<State>,
    /// Requests answered so far (path and query), with their `offset`.
    pub requests: Mutex<Vec<(String, usize)>>,
    /// Paths (without query) answered `200 {"data": {"not": "a list"}}`.
    pub malformed: Mutex<HashSet<String>>,
    /// Requests whose path and query contain this answered 400 (a permanent failure: not retried).
    pub broken: Mutex<Option<String>>,
}

fn param<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.query_string().split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
}

fn of_org<'a>(all: &'a [Value], id: &str) -> Vec<&'a Value> {
    all.iter().filter(|v| v["organization_id"] == id).collect()
}

fn id_of(v: &Value) -> &str {
    v["id"].as_str().unwrap_or_default()
}

async fn api(req: HttpRequest, fake: web::Data<FakeClerk>) -> HttpResponse {
    if req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
        return HttpResponse::Unauthorized().finish();
    }
    let limit = param(&req, "limit").and_then(|v| v.parse().ok()).unwrap_or(10usize).clamp(1, 500);
    let offset = param(&req, "offset").and_then(|v| v.parse().ok()).unwrap_or(0usize);
    let path = req.path().to_owned();
    let uri = req.uri().to_string();
    fake.requests.lock().unwrap().push((uri.clone(), offset));
    if fake.malformed.lock().unwrap().contains(&path) {
        return HttpResponse::Ok().json(json!({"data": {"not": "a list"}, "total_count": 1}));
    }
    if fake.broken.lock().unwrap().as_ref().is_some_and(|b| uri.contains(b.as_str())) {
        return HttpResponse::BadRequest().json(json!({"errors": [{"code": "broken_for_the_test"}]}));
    }
    let state = fake.state.lock().unwrap();
    let page = |all: Vec<&Value>| all.into_iter().skip(offset).take(limit).cloned().collect::<Vec<_>>();
    let wrapped = |all: Vec<&Value>| {
        let total = all.len();
        HttpResponse::Ok().json(json!({"data": page(all), "total_count": total}))
    };
    let not_found = || HttpResponse::NotFound().json(json!({"errors": [{"code": "resource_not_found"}]}));
    let one = |all: &Vec<Value>, id: &str| {
        all.iter().find(|v| id_of(v) == id).map_or_else(not_found, |v| HttpResponse::Ok().json(v))
    };
    let org_exists = |id: &str| state.organizations.iter().any(|o| id_of(o) == id);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "users"] => HttpResponse::Ok().json(page(state.users.iter().collect())),
        ["v1", "users", id] => one(&state.users, id),
        ["v1", "users", id, "billing", "subscription"] => state
            .subscriptions
            .iter()
            .find(|s| s["payer"]["user_id"] == *id)
            .map_or_else(not_found, |s| HttpResponse::Ok().json(s)),
        ["v1", "organizations"] => wrapped(state.organizations.iter().collect()),
        ["v1", "organizations", id] => one(&state.organizations, id),
        ["v1", "organizations", id, _] if !org_exists(id) => not_found(),
        ["v1", "organizations", id, "memberships"] => {
            wrapped(state.memberships.iter().filter(|m| m["organization"]["id"] == *id).collect())
        }
        ["v1", "organizations", id, "invitations"] => wrapped(of_org(&state.invitations, id)),
        ["v1", "organizations", id, "domains"] => wrapped(of_org(&state.domains, id)),
        ["v1", "organizations", id, "billing", "subscription"] => state
            .subscriptions
            .iter()
            .find(|s| s["payer"]["organization_id"] == *id)
            .map_or_else(not_found, |s| HttpResponse::Ok().json(s)),
        ["v1", "organization_memberships"] => wrapped(state.memberships.iter().collect()),
        // Clerk refuses a session list without a user (or client) to list them of.
        ["v1", "sessions"] => match param(&req, "user_id") {
            Some(user) => {
                HttpResponse::Ok().json(page(state.sessions.iter().filter(|s| s["user_id"] == user).collect()))
            }
            None => HttpResponse::UnprocessableEntity().finish(),
        },
        ["v1", "organization_roles"] => wrapped(state.roles.iter().collect()),
        ["v1", "organization_permissions"] => wrapped(state.permissions.iter().collect()),
        ["v1", "waitlist_entries"] => wrapped(state.waitlist.iter().collect()),
        ["v1", "billing", "subscription_items"] => wrapped(state.subscription_items.iter().collect()),
        ["v1", "billing", "statements"] => wrapped(state.statements.iter().collect()),
        ["v1", "billing", "statements", id, "payment_attempts"] => {
            if !state.statements.iter().any(|s| id_of(s) == *id) {
                return not_found();
            }
            wrapped(state.payment_attempts.iter().filter(|a| a["statement_id"] == *id).collect())
        }
        _ => not_found(),
    }
}

/// Serves `fake`; returns its base URL and the handle that stops it.
pub async fn start(fake: web::Data<FakeClerk>) -> (String, actix_web::dev::ServerHandle) {
    crate::helpers::serve_fake(fake, api).await
}

// Objects as Clerk's Backend API shows them (the shapes of the webhook payloads).

pub fn invitation(id: &str, org_id: &str, email: &str, status: &str, updated_at: i64) -> Value {
    json!({
        "created_at": updated_at - 1_000, "email_address": email, "expires_at": updated_at + 2_592_000_000_i64, "id": id,
        "inviter_id": "user_inviter", "object": "organization_invitation", "organization_id": org_id,
        "private_metadata": {}, "public_metadata": {}, "role": "org:member", "status": status, "updated_at": updated_at
    })
}

pub fn role(id: &str, key: &str, updated_at: i64) -> Value {
    json!({
        "created_at": updated_at - 1_000, "description": "A role", "id": id, "is_creator_eligible": false, "key": key,
        "name": key, "object": "role", "updated_at": updated_at,
        "permissions": [{"id": "perm_posts_create", "key": "org:posts:create", "name": "Create posts", "object": "permission",
                         "type": "custom", "created_at": updated_at - 2_000, "updated_at": updated_at - 2_000}]
    })
}

pub fn permission(id: &str, key: &str, updated_at: i64) -> Value {
    json!({
        "created_at": updated_at - 1_000, "description": "A permission", "id": id, "key": key, "name": key,
        "object": "permission", "type": "custom", "updated_at": updated_at
    })
}

pub fn domain(id: &str, org_id: &str, name: &str, updated_at: i64) -> Value {
    json!({
        "affiliation_email_address": format!("admin@{name}"), "created_at": updated_at - 1_000,
        "enrollment_mode": "automatic_invitation", "id": id, "name": name, "object": "organization_domain",
        "organization_id": org_id, "total_pending_invitations": 0, "total_pending_suggestions": 0,
        "updated_at": updated_at, "verification": {"status": "verified", "strategy": "email_code"}
    })
}

pub fn waitlist_entry(id: &str, email: &str, status: &str, updated_at: i64) -> Value {
    json!({
        "created_at": updated_at - 1_000, "email_address": email, "id": id, "invitation": null, "is_locked": false,
        "object": "waitlist_entry", "status": status, "updated_at": updated_at
    })
}

fn payer(user_id: Option<&str>, org_id: Option<&str>) -> Value {
    json!({"id": format!("cpayer_{}", user_id.or(org_id).unwrap_or_default()), "object": "commerce_payer",
           "user_id": user_id, "organization_id": org_id, "email": "payer@example.com", "first_name": "Pay"})
}

/// A subscription paid by a user (`user_`...) or an organization (`org_`...).
pub fn subscription(id: &str, payer_id: &str, status: &str, updated_at: i64) -> Value {
    let (user, org) = if payer_id.starts_with("org_") { (None, Some(payer_id)) } else { (Some(payer_id), None) };
    json!({
        "active_at": updated_at - 1_000, "canceled_at": null, "created_at": updated_at - 1_000, "ended_at": null,
        "id": id, "object": "commerce_subscription", "payer": payer(user, org), "payer_id": format!("cpayer_{payer_id}"),
        "status": status, "updated_at": updated_at
    })
}

pub fn subscription_item(id: &str, subscription_id: &str, user_id: &str, status: &str, updated_at: i64) -> Value {
    json!({
        "created_at": updated_at - 1_000, "id": id, "interval": "month", "is_free_trial": false,
        "object": "commerce_subscription_item", "payer": payer(Some(user_id), None),
        "period_start": updated_at - 1_000, "period_end": updated_at + 2_592_000_000_i64,
        "plan": {"amount": 2000, "currency": "USD", "id": "cplan_pro", "name": "Pro", "slug": "pro"},
        "plan_id": "cplan_pro", "status": status, "subscription_id": subscription_id, "updated_at": updated_at
    })
}

pub fn statement(id: &str, user_id: &str, updated_at: i64) -> Value {
    json!({"id": id, "object": "commerce_statement", "payer": payer(Some(user_id), None), "status": "closed",
           "timestamp": updated_at, "totals": {"grand_total": {"amount": 2000, "currency": "USD"}}})
}

pub fn payment_attempt(id: &str, statement_id: &str, user_id: &str, status: &str, updated_at: i64) -> Value {
    json!({
        "billing_date": updated_at - 1_000, "charge_type": "recurring", "created_at": updated_at - 1_000,
        "failed_at": null, "id": id, "object": "commerce_payment_attempt",
        "paid_at": if status == "paid" { Value::from(updated_at) } else { Value::Null },
        "payer": payer(Some(user_id), None), "payment_id": format!("cpa_{id}"), "statement_id": statement_id,
        "status": status, "totals": {"grand_total": {"amount": 2000, "currency": "USD"}}, "updated_at": updated_at
    })
}

/// A small instance with some of everything at version `t`: 12 users (each with 2 sessions), 5
/// organizations (each with 2 invitations and 1 domain), 3 roles, 4 permissions, 6 waitlist
/// entries, a subscription for each of the first 4 users and the first 2 organizations, 6
/// subscription items, and 4 statements (of the first 4 users) with 3, 2, 0 and 1 payment attempts.
pub fn instance(t: i64) -> State {
    let users: Vec<Value> =
        (0..12).map(|i| samples::user(&format!("user_{i:02}"), "Clerk", &format!("u{i}@example.com"), t)).collect();
    let organizations: Vec<Value> =
        (0..5).map(|i| samples::organization(&format!("org_{i}"), &format!("Org {i}"), t)).collect();
    let mut subscriptions: Vec<Value> =
        (0..4).map(|i| subscription(&format!("csub_u{i}"), &format!("user_{i:02}"), "active", t)).collect();
    subscriptions.extend((0..2).map(|i| subscription(&format!("csub_o{i}"), &format!("org_{i}"), "active", t)));
    State {
        sessions: (0..24)
            .map(|i| samples::session(&format!("sess_{i:02}"), &format!("user_{:02}", i / 2), "active", t))
            .collect(),
        invitations: (0..10)
            .map(|i| {
                invitation(
                    &format!("orginv_{i}"),
                    &format!("org_{}", i / 2),
                    &format!("i{i}@example.com"),
                    "pending",
                    t,
                )
            })
            .collect(),
        domains: (0..5)
            .map(|i| domain(&format!("orgdmn_{i}"), &format!("org_{i}"), &format!("d{i}.example.com"), t))
            .collect(),
        roles: (0..3).map(|i| role(&format!("role_{i}"), &format!("org:role{i}"), t)).collect(),
        permissions: (0..4).map(|i| permission(&format!("perm_{i}"), &format!("org:thing{i}:manage"), t)).collect(),
        waitlist: (0..6)
            .map(|i| waitlist_entry(&format!("wle_{i}"), &format!("w{i}@example.com"), "pending", t))
            .collect(),
        subscription_items: (0..6)
            .map(|i| {
                subscription_item(
                    &format!("csitem_{i}"),
                    &format!("csub_u{}", i % 4),
                    &format!("user_{:02}", i % 4),
                    "active",
                    t,
                )
            })
            .collect(),
        statements: (0..4).map(|i| statement(&format!("stmt_{i}"), &format!("user_{i:02}"), t)).collect(),
        payment_attempts: [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 3)]
            .into_iter()
            .map(|(i, s)| payment_attempt(&format!("pa_{i}"), &format!("stmt_{s}"), &format!("user_{s:02}"), "paid", t))
            .collect(),
        subscriptions,
        users,
        organizations,
        memberships: Vec::new(),
    }
}

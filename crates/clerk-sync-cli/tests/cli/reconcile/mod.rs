//! `clerk-sync reconcile` against a local fake of Clerk's Backend API over real HTTP, with every
//! kind of gap, more than one page of users, 429s and a server error, and live webhooks delivered
//! through the real gateway and worker while `--fix` runs.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use clerk_sync_core::samples;
use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_store::db;
use clerk_sync_store::event::{self, Event};
use clerk_sync_testkit::{TestDatabase, amqp_url, wait_until};
use serde_json::{Value, json};

use crate::helpers::*;

const KEY: &str = "sk_test_reconcile_key";
const T: i64 = 1_716_883_200_000;

/// Clerk as the Backend API shows it. Static: the webhooks the test sends are newer than it.
struct FakeClerk {
    users: Vec<Value>,
    organizations: Vec<Value>,
    memberships: Vec<Value>,
    /// Requests answered so far (429s and errors included).
    served: Mutex<u64>,
    /// Request numbers answered 429 (Retry-After: 1) and the one answered 500.
    rate_limited_at: Vec<u64>,
    failed_at: u64,
}

fn param(req: &HttpRequest, name: &str) -> usize {
    req.query_string()
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn id_of(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

async fn api(req: HttpRequest, fake: web::Data<FakeClerk>) -> HttpResponse {
    if req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
        return HttpResponse::Unauthorized().finish();
    }
    let n = {
        let mut served = fake.served.lock().unwrap();
        *served += 1;
        *served
    };
    if fake.rate_limited_at.contains(&n) {
        return HttpResponse::TooManyRequests().insert_header(("Retry-After", "1")).finish();
    }
    if n == fake.failed_at {
        return HttpResponse::BadGateway().finish();
    }
    let (limit, offset) = (param(&req, "limit").clamp(1, 500), param(&req, "offset"));
    let page = |all: Vec<&Value>| all.into_iter().skip(offset).take(limit).cloned().collect::<Vec<_>>();
    let wrapped = |all: Vec<&Value>| {
        let total = all.len();
        HttpResponse::Ok().json(json!({"data": page(all), "total_count": total}))
    };
    let one = |all: &Vec<Value>, id: &str| match all.iter().find(|v| id_of(v) == id) {
        Some(v) => HttpResponse::Ok().json(v),
        None => HttpResponse::NotFound().json(json!({"errors": [{"code": "resource_not_found"}]})),
    };
    let parts: Vec<&str> = req.path().trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "users"] => HttpResponse::Ok().json(page(fake.users.iter().collect())),
        ["v1", "users", id] => one(&fake.users, id),
        ["v1", "organizations"] => wrapped(fake.organizations.iter().collect()),
        ["v1", "organizations", id] => one(&fake.organizations, id),
        ["v1", "organizations", id, "memberships"] => {
            if !fake.organizations.iter().any(|o| id_of(o) == *id) {
                return HttpResponse::NotFound().finish();
            }
            wrapped(fake.memberships.iter().filter(|m| m["organization"]["id"] == *id).collect())
        }
        ["v1", "organization_memberships"] => wrapped(fake.memberships.iter().collect()),
        // The kinds of issue 19 have their own fake (`clerk_api`, `reconcile/catalogue.rs`); here, none.
        ["v1", "organization_roles" | "organization_permissions" | "waitlist_entries"] => wrapped(Vec::new()),
        ["v1", "sessions"] => HttpResponse::Ok().json(json!([])),
        _ => HttpResponse::NotFound().finish(),
    }
}

async fn start_fake(fake: web::Data<FakeClerk>) -> (String, actix_web::dev::ServerHandle) {
    serve_fake(fake, api).await
}

fn user(i: usize, updated_at: i64) -> Value {
    samples::user(&format!("user_{i:04}"), "Clerk", &format!("u{i}@example.com"), updated_at)
}

fn membership(i: usize, user: &str, updated_at: i64) -> Value {
    samples::membership(&format!("orgmem_{i:03}"), &format!("org_{:03}", i % 30), user, "org:member", updated_at)
}

/// Clerk: 600 users (two pages of 500), 32 organizations, 60 memberships plus one whose user is
/// deleted here. The ten first users, org_005 and orgmem_010 were updated after the last webhook.
fn clerk() -> FakeClerk {
    let newer = |stale: bool| if stale { T + 1_000 } else { T };
    let mut memberships: Vec<Value> = (0..60).map(|i| membership(i, &format!("user_{i:04}"), newer(i == 10))).collect();
    memberships.push(samples::membership("orgmem_orphan", "org_002", "user_orphan", "org:member", T));
    FakeClerk {
        users: (0..600).map(|i| user(i, newer(i < 10))).collect(),
        organizations: (0..32)
            .map(|i| samples::organization(&format!("org_{i:03}"), &format!("Org {i}"), newer(i == 5)))
            .collect(),
        memberships,
        served: Mutex::new(0),
        rate_limited_at: vec![2, 9, 40],
        failed_at: 5,
    }
}

/// What the webhooks left here: everything at version T except 50 users, 2 organizations and 2
/// memberships never delivered (org_030 and org_031: the others have at least a membership's copy); five users, one organization and one membership whose deletions
/// were lost; user_0020 deleted (Clerk still lists it, but a tombstone is final); and a membership
/// alive although its user is a tombstone (a cascade an older version did not make).
async fn seed(pool: &sqlx::PgPool) {
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut add = |event_type: &str, data: Value| {
        events.push((format!("msg_seed_{}", events.len()), samples::envelope(event_type, data, T)));
    };
    for i in 0..550 {
        add("user.created", user(i, T));
    }
    for i in 0..5 {
        add("user.created", samples::user(&format!("user_gone_{i}"), "Gone", &format!("g{i}@example.com"), T));
    }
    add("user.created", samples::user("user_orphan", "Orphan", "o@example.com", T));
    add("user.deleted", json!({"id": "user_0020", "object": "user", "deleted": true}));
    for i in 0..30 {
        add("organization.created", samples::organization(&format!("org_{i:03}"), &format!("Org {i}"), T));
    }
    add("organization.created", samples::organization("org_gone", "Gone Org", T));
    for i in 0..58 {
        add("organizationMembership.created", membership(i, &format!("user_{i:04}"), T));
    }
    add("organizationMembership.created", samples::membership("orgmem_gone", "org_001", "user_0001", "org:member", T));
    add(
        "organizationMembership.created",
        samples::membership("orgmem_orphan", "org_002", "user_orphan", "org:member", T),
    );
    let parsed: Vec<Event> =
        events.iter().map(|(id, e)| event::parse(id, T, e.to_string().as_bytes()).unwrap()).collect();
    let batch: Vec<&Event> = parsed.iter().collect();
    let mut tx = pool.begin().await.unwrap();
    db::apply_batch(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    sqlx::query("UPDATE clerk.users SET deleted_at = now(), first_name = NULL, raw = NULL WHERE id = 'user_orphan'")
        .execute(pool)
        .await
        .unwrap();
}

fn counts(report: &Value) -> Value {
    json!({"users": report["users"], "organizations": report["organizations"], "memberships": report["memberships"]})
}

async fn scalar<T>(pool: &sqlx::PgPool, sql: &'static str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

mod catalogue;
mod fix;
mod watch;

//! `clerk-sync backfill` against a local fake of Clerk's Backend API (the one thing tests may
//! fake: Clerk cannot be reached from here).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use actix_web::{HttpRequest, HttpResponse, web};
use clerk_sync_core::samples;
use clerk_sync_store::db;
use clerk_sync_store::event::{self, Event};
use clerk_sync_testkit::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::*;

mod catalogue;

const KEY: &str = "sk_test_fake_key";
const T: i64 = 1_716_883_200_000;

struct FakeClerk {
    users: Vec<Value>,
    organizations: Vec<Value>,
    memberships: Vec<Value>,
    /// Offsets asked for, per path, in order.
    requests: Mutex<Vec<(String, usize)>>,
    /// Answer 429 to this many requests first.
    rate_limited: AtomicUsize,
    /// While set, user pages at offset >= 200 fail for good (a 400, which the CLI does not retry).
    broken: AtomicBool,
}

fn param(req: &HttpRequest, name: &str) -> usize {
    req.query_string()
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn list(req: HttpRequest, fake: web::Data<FakeClerk>) -> HttpResponse {
    if req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
        return HttpResponse::Unauthorized().finish();
    }
    if fake.rate_limited.load(Ordering::SeqCst) > 0 {
        fake.rate_limited.fetch_sub(1, Ordering::SeqCst);
        return HttpResponse::TooManyRequests().insert_header(("Retry-After", "1")).finish();
    }
    let (limit, offset) = (param(&req, "limit"), param(&req, "offset"));
    let path = req.path().to_owned();
    fake.requests.lock().unwrap().push((path.clone(), offset));
    let page = |all: &Vec<Value>| all.iter().skip(offset).take(limit).cloned().collect::<Vec<_>>();
    match path.as_str() {
        "/v1/users" if fake.broken.load(Ordering::SeqCst) && offset >= 200 => HttpResponse::BadRequest().finish(),
        "/v1/users" => HttpResponse::Ok().json(page(&fake.users)),
        "/v1/organizations" => {
            HttpResponse::Ok().json(json!({"data": page(&fake.organizations), "total_count": fake.organizations.len()}))
        }
        "/v1/organization_memberships" => {
            HttpResponse::Ok().json(json!({"data": page(&fake.memberships), "total_count": fake.memberships.len()}))
        }
        // The kinds of issue 19 have their own fake (`clerk_api`, `backfill/catalogue.rs`); here, none.
        "/v1/organization_roles" | "/v1/organization_permissions" | "/v1/waitlist_entries" => {
            HttpResponse::Ok().json(json!({"data": [], "total_count": 0}))
        }
        "/v1/sessions" => HttpResponse::Ok().json(json!([])),
        _ => HttpResponse::NotFound().finish(),
    }
}

async fn start_fake(fake: web::Data<FakeClerk>) -> (String, actix_web::dev::ServerHandle) {
    serve_fake(fake, list).await
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn backfill_copies_everything_resumes_after_a_failure_and_never_overwrites_newer_data() {
    let db = TestDatabase::create("backfill").await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    let fake = web::Data::new(FakeClerk {
        users: (0..250)
            .map(|i| samples::user(&format!("user_{i:04}"), "Backfilled", &format!("u{i}@example.com"), T))
            .collect(),
        organizations: (0..30).map(|i| samples::organization(&format!("org_{i:03}"), &format!("Org {i}"), T)).collect(),
        memberships: (0..60)
            .map(|i| {
                samples::membership(
                    &format!("orgmem_{i:03}"),
                    &format!("org_{:03}", i % 30),
                    &format!("user_{i:04}"),
                    "org:member",
                    T,
                )
            })
            .collect(),
        requests: Mutex::new(Vec::new()),
        rate_limited: AtomicUsize::new(1),
        broken: AtomicBool::new(true),
    });
    let (api_url, server) = start_fake(fake.clone()).await;

    // Live webhooks got there first: a newer version of one user, and a deletion of another.
    let newer = samples::envelope(
        "user.updated",
        samples::user("user_0001", "FromWebhook", "new@example.com", T + 60_000),
        T + 60_000,
    );
    let deleted = samples::envelope("user.deleted", json!({"id": "user_0002", "deleted": true}), T + 60_000);
    let events = [
        event::parse("msg_live_1", T, newer.to_string().as_bytes()).unwrap(),
        event::parse("msg_live_2", T, deleted.to_string().as_bytes()).unwrap(),
    ];
    let mut tx = pool.begin().await.unwrap();
    let batch: Vec<&Event> = events.iter().collect();
    db::apply_batch(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();

    let env = env("backfill")
        .await
        .with("DATABASE_URL", &db.url)
        .with("CLERK_SECRET_KEY", KEY)
        .with("CLERK_SYNC__CLERK__API_URL", &api_url);
    let failed = env.run(&["backfill", "--users", "--page-size", "100"]).await;
    assert!(!failed.status.success(), "a permanent API failure stops the run");
    assert_eq!(
        count(&pool, "SELECT next_offset::bigint FROM clerk.backfill_progress WHERE resource = 'users'").await,
        200
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM clerk.users").await, 200, "the committed pages stay");

    fake.broken.store(false, Ordering::SeqCst);
    fake.requests.lock().unwrap().clear();
    let report = env.json(&["backfill", "--page-size", "100"]).await;
    let first_user_request = fake.requests.lock().unwrap().iter().find(|(p, _)| p == "/v1/users").cloned();
    assert_eq!(first_user_request, Some(("/v1/users".to_owned(), 200)), "resumed where it stopped");
    assert_eq!(report[0]["resumed_at_offset"], 200);
    assert_eq!(report[1]["fetched"], 30);
    assert_eq!(report[2]["fetched"], 60);

    assert_eq!(count(&pool, "SELECT count(*) FROM clerk.users").await, 250);
    assert_eq!(count(&pool, "SELECT count(*) FROM clerk.organizations").await, 30);
    assert_eq!(count(&pool, "SELECT count(*) FROM clerk.organization_memberships WHERE user_id IS NOT NULL").await, 60);
    let kept: String =
        sqlx::query_scalar("SELECT first_name FROM clerk.users WHERE id = 'user_0001'").fetch_one(&pool).await.unwrap();
    assert_eq!(kept, "FromWebhook", "the newer webhook data wins over the older backfilled copy");
    let gone: (Option<String>, bool) =
        sqlx::query_as("SELECT first_name, deleted_at IS NOT NULL FROM clerk.users WHERE id = 'user_0002'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(gone, (None, true), "a deleted user stays deleted");
    assert_eq!(fake.rate_limited.load(Ordering::SeqCst), 0, "the 429 was met and waited out");

    // A second full run changes nothing: every object version is already recorded.
    let again = env.json(&["backfill", "--organizations"]).await;
    assert_eq!((again[0]["written"].as_u64(), again[0]["unchanged"].as_u64()), (Some(0), Some(30)));

    let no_key = env.run_with(&[("CLERK_SECRET_KEY", "")], &["backfill"]).await;
    assert_eq!(no_key.status.code(), Some(2), "the missing key is a configuration error");
    assert!(stderr(&no_key).contains("CLERK_SECRET_KEY"));

    server.stop(true).await;
    env.cleanup().await;
    pool.close().await;
    db.drop_now().await;
}

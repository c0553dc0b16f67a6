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

#[tokio::test]
async fn reconcile_reports_every_gap_fixes_them_while_webhooks_race_and_then_reports_none() {
    let db = TestDatabase::create("reconcile").await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    seed(&pool).await;
    let fake = web::Data::new(clerk());
    let (api_url, clerk_server) = start_fake(fake.clone()).await;
    let env = env("reconcile")
        .await
        .with("DATABASE_URL", &db.url)
        .with("CLERK_SECRET_KEY", KEY)
        .with("CLERK_SYNC__CLERK__API_URL", &api_url)
        // The retry warnings are logged to stdout, where --json prints too.
        .with("CLERK_SYNC__LOG__LEVEL", "error");
    let args = ["--json", "reconcile", "--rate", "200", "--show", "3"];

    // A person's view of the same report (printed for `--no-capture`).
    let table = env.run(&args[1..]).await;
    assert_eq!(table.status.code(), Some(1));
    assert!(stdout(&table).contains("user_gone_0, user_gone_1, user_gone_2, …"), "{}", stdout(&table));
    println!("$ clerk-sync reconcile\n{}{}", stdout(&table), stderr(&table));

    *fake.served.lock().unwrap() = 0; // the 429s and the 502 again
    let report = env.run(&args).await;
    assert_eq!(report.status.code(), Some(1), "drift exits 1: {}", stderr(&report));
    assert!(stderr(&report).contains("--fix"), "{}", stderr(&report));
    let report: Value = serde_json::from_slice(&report.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&report), stderr(&report)));
    assert_eq!(
        counts(&report),
        json!({
            "users": {"missing": 50, "stale": 10, "gone": 5},
            "organizations": {"missing": 2, "stale": 1, "gone": 1},
            "memberships": {"missing": 2, "stale": 1, "gone": 1, "orphaned": 1},
        })
    );
    assert_eq!(report["first_ids"]["users"]["gone"], json!(["user_gone_0", "user_gone_1", "user_gone_2"]));
    assert_eq!(report["first_ids"]["memberships"]["orphaned"], json!(["orgmem_orphan"]));
    assert!(report["rate_limited"].as_u64().unwrap() >= 2, "the fake's 429s were met: {report}");
    assert_eq!(
        scalar::<i64>(&pool, "SELECT count(*) FROM clerk.webhook_events WHERE svix_id LIKE 'reconcile:%'").await,
        0
    );
    assert_eq!(
        scalar::<i64>(&pool, "SELECT count(*) FROM clerk.users WHERE deleted_at IS NULL").await,
        554,
        "report mode changes nothing"
    );

    // The real gateway and worker, delivering live webhooks while --fix runs.
    let sources = Sources::default()
        .with_env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
        .with_env("AMQP_URL", amqp_url())
        .with_env("DATABASE_URL", &db.url)
        .with_env("CLERK_SYNC__AMQP__PREFIX", &env.prefix)
        .with_env("CLERK_SYNC__GATEWAY__LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__GATEWAY__ADMIN_LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__WORKER__ADMIN_LISTEN", "127.0.0.1:0");
    let settings = Settings::load(&sources, &[]).unwrap();
    let gateway = clerk_sync_gateway::Application::build(&settings).await.unwrap();
    let url = format!("http://127.0.0.1:{}/webhooks/clerk", gateway.port());
    let stop_gateway = gateway.shutdown_token();
    let gateway = tokio::spawn(gateway.run_until_stopped());
    let worker = clerk_sync_worker::Application::build(&settings).await.unwrap();
    let stop_worker = worker.shutdown_token();
    let worker = tokio::spawn(worker.run_until_stopped());

    *fake.served.lock().unwrap() = 0;
    let fix = {
        let cmd = env.command(&["reconcile", "--fix", "--rate", "200", "--show", "3"]);
        tokio::task::spawn_blocking(move || {
            let mut cmd = cmd;
            cmd.stdin(std::process::Stdio::null()).output().unwrap()
        })
    };
    let live = [
        // Newer than Clerk's listed version of a stale user: the webhook wins whatever the order.
        (
            "msg_live_newer",
            samples::envelope(
                "user.updated",
                samples::user("user_0003", "Webhook", "w@example.com", T + 5_000),
                T + 5_000,
            ),
        ),
        // A missing user created meanwhile, newer than the listing.
        (
            "msg_live_created",
            samples::envelope(
                "user.created",
                samples::user("user_0555", "Webhook", "c@example.com", T + 5_000),
                T + 5_000,
            ),
        ),
        // A stale user deleted meanwhile: it stays deleted even if the reconcile writes Clerk's older copy.
        (
            "msg_live_deleted",
            samples::envelope("user.deleted", json!({"id": "user_0007", "object": "user", "deleted": true}), T + 5_000),
        ),
    ];
    let secret = secrecy::SecretString::from(SECRET);
    let http = reqwest::Client::new();
    for (id, body) in &live {
        let body = body.to_string();
        // Svix retries until a 2xx; the gateway answers 503 until its broker connection is up.
        wait_until(Duration::from_secs(15), "the gateway accepts the webhook", || async {
            let ts = chrono::Utc::now().timestamp();
            clerk_sync_testkit::signed_post(&http, &url, &secret, id, ts, body.as_bytes())
                .header("content-type", "application/json")
                .send()
                .await
                .is_ok_and(|a| a.status().is_success())
        })
        .await;
    }
    assert!(!fix.is_finished(), "the webhooks were applied while --fix ran (its 429s alone take 3 s)");
    let fixed = fix.await.unwrap();
    assert!(fixed.status.success(), "--fix leaves nothing: {}", stderr(&fixed));
    println!("$ clerk-sync reconcile --fix\n{}{}", stdout(&fixed), stderr(&fixed));
    assert!(stdout(&fixed).contains("nothing left"), "{}", stdout(&fixed));
    wait_until(Duration::from_secs(20), "the live webhooks are applied", || async {
        scalar::<i64>(
            &pool,
            "SELECT count(*) FROM clerk.webhook_events WHERE svix_id LIKE 'msg_live_%' AND outcome IS NOT NULL",
        )
        .await
            == 3
    })
    .await;

    let row = |id: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, bool)>(
                "SELECT first_name, deleted_at IS NOT NULL FROM clerk.users WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(row("user_0001").await, (Some("Clerk".to_owned()), false), "stale: Clerk's version written");
    assert_eq!(row("user_0599").await, (Some("Clerk".to_owned()), false), "missing: written");
    assert_eq!(row("user_0003").await, (Some("Webhook".to_owned()), false), "the newer webhook wins");
    assert_eq!(row("user_0555").await, (Some("Webhook".to_owned()), false), "the newer webhook wins");
    assert_eq!(row("user_0007").await, (None, true), "a deletion stays final");
    assert_eq!(row("user_gone_2").await, (None, true), "gone: tombstoned, personal data removed");
    let tombstone: (Option<String>, Option<String>, bool) = sqlx::query_as(
        "SELECT primary_email_address, raw::text, deleted_at > now() - interval '5 minutes' FROM clerk.users WHERE id = 'user_gone_2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tombstone, (None, None, true), "dated at the reconcile, no personal data");
    let deleted_by = |id: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT deleted_by FROM clerk.users WHERE id = $1 UNION ALL
                 SELECT deleted_by FROM clerk.organizations WHERE id = $1 UNION ALL
                 SELECT deleted_by FROM clerk.organization_memberships WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for id in ["user_gone_2", "org_gone", "orgmem_gone", "orgmem_orphan"] {
        assert_eq!(
            deleted_by(id).await.as_deref(),
            Some("reconcile"),
            "{id}: the tombstone says the reconcile made it"
        );
    }
    assert_eq!(deleted_by("user_0007").await, None, "a webhook's deletion is not the reconcile's");
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT svix_id FROM clerk.webhook_events WHERE svix_id LIKE 'reconcile:%:gone' OR svix_id LIKE 'reconcile:%:orphaned' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    let recorded: HashSet<String> = recorded.into_iter().collect();
    for id in [
        "reconcile:users:user_gone_0:gone",
        "reconcile:organizations:org_gone:gone",
        "reconcile:memberships:orgmem_gone:gone",
        "reconcile:memberships:orgmem_orphan:orphaned",
    ] {
        assert!(recorded.contains(id), "{id} recorded: {recorded:?}");
    }
    let orphan: bool =
        scalar(&pool, "SELECT deleted_at IS NOT NULL FROM clerk.organization_memberships WHERE id = 'orgmem_orphan'")
            .await;
    assert!(orphan, "the orphaned membership is tombstoned");
    let org: (Option<String>, bool) =
        sqlx::query_as("SELECT name, deleted_at IS NOT NULL FROM clerk.organizations WHERE id = 'org_gone'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(org, (None, true));

    let table = env.run(&args[1..]).await;
    assert!(table.status.success());
    println!("$ clerk-sync reconcile\n{}{}", stdout(&table), stderr(&table));
    let again = env.run(&args).await;
    assert!(again.status.success(), "in sync exits 0: {}", stderr(&again));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        counts(&again),
        json!({
            "users": {"missing": 0, "stale": 0, "gone": 0},
            "organizations": {"missing": 0, "stale": 0, "gone": 0},
            "memberships": {"missing": 0, "stale": 0, "gone": 0, "orphaned": 0},
        })
    );

    stop_gateway.cancel();
    stop_worker.cancel();
    gateway.await.unwrap().unwrap();
    worker.await.unwrap().unwrap();
    clerk_server.stop(true).await;
    env.cleanup().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn reconcile_watch_serves_drift_metrics_and_reruns_on_schedule() {
    let db = TestDatabase::create("reconcile_watch").await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    seed(&pool).await;
    let mut fake = clerk();
    fake.rate_limited_at.clear();
    fake.failed_at = 0;
    let fake = web::Data::new(fake);
    let (api_url, clerk_server) = start_fake(fake.clone()).await;
    let env = env("reconcile_watch")
        .await
        .with("DATABASE_URL", &db.url)
        .with("CLERK_SECRET_KEY", KEY)
        .with("CLERK_SYNC__CLERK__API_URL", &api_url);
    let mut child = env
        .command(&[
            "reconcile",
            "--users",
            "--watch",
            "--interval",
            "1s",
            "--rate",
            "500",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let metrics_url = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")).map(str::to_owned))
            .expect("the CLI says where it serves metrics");
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        url
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let scrape = || async { http.get(&metrics_url).send().await.ok()?.text().await.ok() };
    wait_until(Duration::from_secs(30), "two runs recorded", || async {
        scrape().await.is_some_and(|m| m.contains("clerk_sync_reconcile_runs_total{result=\"success\"} 2"))
    })
    .await;
    let text = scrape().await.unwrap();
    for line in [
        "clerk_sync_reconcile_drift{gap=\"missing\",kind=\"users\"} 50",
        "clerk_sync_reconcile_drift{gap=\"gone\",kind=\"users\"} 5",
        "clerk_sync_reconcile_drift{gap=\"orphaned\",kind=\"memberships\"} 0",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    for family in [
        "clerk_sync_reconcile_last_run_timestamp_seconds",
        "clerk_sync_reconcile_last_success_timestamp_seconds",
        "clerk_sync_reconcile_last_run_duration_seconds",
        "clerk_sync_reconcile_requests_total",
        "clerk_sync_reconcile_repaired_total",
    ] {
        assert!(text.contains(family), "{family} in\n{text}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    clerk_server.stop(true).await;
    env.cleanup().await;
    pool.close().await;
    db.drop_now().await;
}

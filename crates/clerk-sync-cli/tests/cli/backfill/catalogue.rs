//! `clerk-sync backfill` of the kinds of issue 19 (sessions, invitations, roles, permissions,
//! domains, the waitlist, subscriptions, their items and payment attempts) against the fake of
//! Clerk's Backend API in `clerk_api`.

use actix_web::web;
use clerk_sync_core::samples;
use clerk_sync_store::db;
use clerk_sync_store::event::{self, Event};
use clerk_sync_testkit::TestDatabase;
use serde_json::{Value, json};

use crate::clerk_api::{self, FakeClerk, KEY};
use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

async fn count(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM clerk.{table}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Applies webhooks the way the worker does.
async fn deliver(pool: &sqlx::PgPool, events: &[(&str, Value)]) {
    let parsed: Vec<Event> =
        events.iter().map(|(id, body)| event::parse(id, T, body.to_string().as_bytes()).unwrap()).collect();
    let batch: Vec<&Event> = parsed.iter().collect();
    let mut tx = pool.begin().await.unwrap();
    db::apply_batch(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
}

/// Runs a backfill of `resource` (pages of 1) while requests containing `broken` fail for good:
/// the run must stop cleanly; returns the position it saved (`parent_cursor`, `next_offset`).
async fn stopped_at(
    env: &Env,
    fake: &FakeClerk,
    pool: &sqlx::PgPool,
    broken: &str,
    resource: &str,
) -> (Option<String>, i32) {
    *fake.broken.lock().unwrap() = Some(broken.to_owned());
    let kind = resource.replace('_', "-");
    let failed = env.run(&["backfill", "--kind", &kind, "--page-size", "1"]).await;
    assert!(!failed.status.success(), "a permanent API failure stops the run");
    assert!(!stderr(&failed).contains("panicked"), "{}", stderr(&failed));
    sqlx::query_as("SELECT parent_cursor, next_offset FROM clerk.backfill_progress WHERE resource = $1")
        .bind(resource)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn by_name<'a>(report: &'a Value, name: &str) -> &'a Value {
    report.as_array().unwrap().iter().find(|r| r["resource"] == name).unwrap_or_else(|| panic!("{name} in {report}"))
}

#[tokio::test]
async fn backfill_fills_each_new_table_resumes_within_a_parent_and_never_overwrites_a_newer_webhook_row() {
    let db = TestDatabase::create("backfill_catalogue").await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    let fake = web::Data::new(FakeClerk { state: clerk_api::instance(T).into(), ..Default::default() });
    let (api_url, server) = clerk_api::start(fake.clone()).await;
    let env = env("backfill_catalogue")
        .await
        .with("DATABASE_URL", &db.url)
        .with("CLERK_SECRET_KEY", KEY)
        .with("CLERK_SYNC__CLERK__API_URL", &api_url);

    // The parents first: the per-user and per-organization listings walk what is stored here.
    let parents = env.json(&["backfill", "--kind", "users,organizations"]).await;
    assert_eq!(parents.as_array().unwrap().len(), 2, "only the kinds named: {parents}");

    // Live webhooks got there first, each newer than Clerk's listed version.
    let mut ended = samples::session("sess_03", "user_01", "ended", T + 60_000);
    ended["last_active_at"] = json!(T + 59_000);
    deliver(
        &pool,
        &[
            ("msg_live_session", samples::envelope("session.ended", ended, T + 60_000)),
            (
                "msg_live_role",
                samples::envelope(
                    "role.deleted",
                    json!({"id": "role_1", "object": "role", "deleted": true}),
                    T + 60_000,
                ),
            ),
            (
                "msg_live_invitation",
                samples::envelope(
                    "organizationInvitation.accepted",
                    clerk_api::invitation("orginv_0", "org_0", "i0@example.com", "accepted", T + 60_000),
                    T + 60_000,
                ),
            ),
        ],
    )
    .await;

    // Sessions fail for good at user_06's second page: the run stops with what it committed.
    let saved = stopped_at(&env, &fake, &pool, "user_id=user_06&limit=1&offset=1", "sessions").await;
    assert_eq!(saved, (Some("users:user_05".to_owned()), 1), "user_05 done, user_06 one page in");
    assert_eq!(count(&pool, "sessions").await, 13, "the committed pages stay: 6 users' two sessions and one");

    *fake.broken.lock().unwrap() = None;
    fake.requests.lock().unwrap().clear();
    let report = env.json(&["backfill", "--page-size", "1"]).await;
    let first_session = fake.requests.lock().unwrap().iter().find(|(p, _)| p.starts_with("/v1/sessions")).cloned();
    assert!(
        first_session.as_ref().is_some_and(|(p, o)| p.contains("user_id=user_06") && *o == 1),
        "resumed in user_06 at offset 1: {first_session:?}"
    );
    assert_eq!(by_name(&report, "sessions")["resumed_after"], "users:user_05");
    let names: Vec<&str> = report.as_array().unwrap().iter().map(|r| r["resource"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "users",
            "organizations",
            "memberships",
            "roles",
            "permissions",
            "invitations",
            "domains",
            "waitlist_entries",
            "subscription_items",
            "sessions",
            "subscriptions",
            "payment_attempts"
        ],
        "the default covers every kind Clerk lists, parents first"
    );

    for (table, n) in [
        ("sessions", 24),
        ("organization_invitations", 10),
        ("roles", 3),
        ("permissions", 4),
        ("organization_domains", 5),
        ("waitlist_entries", 6),
        ("subscriptions", 6),
        ("subscription_items", 6),
        ("payment_attempts", 6),
    ] {
        assert_eq!(count(&pool, table).await, n, "clerk.{table}");
    }
    let session: (String, i64) = sqlx::query_as(
        "SELECT status, (extract(epoch FROM updated_at) * 1000)::bigint FROM clerk.sessions WHERE id = 'sess_03'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(session, ("ended".to_owned(), T + 60_000), "the newer webhook session wins");
    let role: bool = sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM clerk.roles WHERE id = 'role_1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(role, "a deleted role stays deleted");
    let invitation: String =
        sqlx::query_scalar("SELECT status FROM clerk.organization_invitations WHERE id = 'orginv_0'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(invitation, "accepted");
    assert_eq!(by_name(&report, "roles")["kept_newer"], 1);
    assert_eq!(by_name(&report, "invitations")["kept_newer"], 1);
    let payers: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT id, user_id, organization_id FROM clerk.subscriptions ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(payers[0], ("csub_o0".to_owned(), None, Some("org_0".to_owned())), "{payers:?}");
    assert_eq!(payers[2], ("csub_u0".to_owned(), Some("user_00".to_owned()), None), "{payers:?}");
    let domain: (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT organization_id, verification_status FROM clerk.organization_domains WHERE id = 'orgdmn_2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(domain, (Some("org_2".to_owned()), Some("verified".to_owned())));

    // Again: every object version is already recorded (the ones the webhooks outdated too), so
    // nothing is written.
    let again = env.json(&["backfill", "--kind", "sessions,roles,subscriptions,payment-attempts"]).await;
    for (name, n) in [("sessions", 24), ("roles", 3), ("subscriptions", 6), ("payment_attempts", 6)] {
        assert_eq!(
            (by_name(&again, name)["written"].as_u64(), by_name(&again, name)["unchanged"].as_u64()),
            (Some(0), Some(n)),
            "{name}: {again}"
        );
    }

    server.stop(true).await;
    env.cleanup().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn payment_attempts_are_read_statement_by_statement_and_a_run_resumes_inside_the_statement_it_stopped_in() {
    let db = TestDatabase::create("backfill_payments").await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    let fake = web::Data::new(FakeClerk { state: clerk_api::instance(T).into(), ..Default::default() });
    let (api_url, server) = clerk_api::start(fake.clone()).await;
    let env = env("backfill_payments")
        .await
        .with("DATABASE_URL", &db.url)
        .with("CLERK_SECRET_KEY", KEY)
        .with("CLERK_SYNC__CLERK__API_URL", &api_url);

    // A live webhook: pa_4 failed after Clerk's listed version.
    deliver(
        &pool,
        &[(
            "msg_live_payment",
            samples::envelope(
                "paymentAttempt.updated",
                clerk_api::payment_attempt("pa_4", "stmt_1", "user_01", "failed", T + 60_000),
                T + 60_000,
            ),
        )],
    )
    .await;

    // stmt_0's three attempts, then stmt_1's first; its second page fails for good.
    let saved =
        stopped_at(&env, &fake, &pool, "/statements/stmt_1/payment_attempts?limit=1&offset=1", "payment_attempts")
            .await;
    assert_eq!(saved, (Some("statements:1".to_owned()), 1), "one statement done, the next one page in");
    assert_eq!(count(&pool, "payment_attempts").await, 5, "stmt_0's three, stmt_1's first, pa_4 by its webhook");

    *fake.broken.lock().unwrap() = None;
    fake.requests.lock().unwrap().clear();
    let report = env.json(&["backfill", "--kind", "payment-attempts", "--page-size", "1"]).await;
    let requests = fake.requests.lock().unwrap().clone();
    assert!(
        requests.first().is_some_and(|(p, o)| p.starts_with("/v1/billing/statements?") && *o == 1),
        "the statements are read again from the second: {requests:?}"
    );
    assert!(
        requests.get(1).is_some_and(|(p, o)| p.contains("/statements/stmt_1/payment_attempts") && *o == 1),
        "resumed in stmt_1 at offset 1: {requests:?}"
    );
    assert!(!requests.iter().any(|(p, _)| p.contains("stmt_0")), "stmt_0 is not read again: {requests:?}");
    assert_eq!(report[0]["resumed_after"], "statements:1");
    assert_eq!(report[0]["kept_newer"], 1, "{report}");
    assert_eq!(count(&pool, "payment_attempts").await, 6);
    // id, status, statement, user, amount
    type Attempt = (String, Option<String>, Option<String>, Option<String>, Option<i64>);
    let rows: Vec<Attempt> = sqlx::query_as(
        "SELECT id, status, statement_id, user_id, amount FROM clerk.payment_attempts WHERE id IN ('pa_0', 'pa_4') ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let row = |id: &str, status: &str, statement: &str, user: &str| {
        (id.to_owned(), Some(status.to_owned()), Some(statement.to_owned()), Some(user.to_owned()), Some(2000))
    };
    assert_eq!(
        rows,
        [row("pa_0", "paid", "stmt_0", "user_00"), row("pa_4", "failed", "stmt_1", "user_01")],
        "Clerk's version stored, the newer webhook's kept"
    );

    server.stop(true).await;
    env.cleanup().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_malformed_answer_stops_the_backfill_clearly_a_malformed_object_is_skipped_and_missing_parents_are_named() {
    let db = TestDatabase::create("backfill_malformed").await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    let mut state = clerk_api::instance(T);
    // One entry Clerk sent without `updated_at`: it cannot be ordered, so it is skipped.
    state.waitlist[2].as_object_mut().unwrap().remove("updated_at");
    let fake = web::Data::new(FakeClerk { state: state.into(), ..Default::default() });
    fake.malformed.lock().unwrap().insert("/v1/organization_roles".to_owned());
    let (api_url, server) = clerk_api::start(fake.clone()).await;
    let env = env("backfill_malformed")
        .await
        .with("DATABASE_URL", &db.url)
        .with("CLERK_SECRET_KEY", KEY)
        .with("CLERK_SYNC__CLERK__API_URL", &api_url);

    // Before its parents are stored, a kind listed per parent reads nothing, and says why.
    let early = env.run(&["backfill", "--kind", "sessions"]).await;
    assert!(early.status.success(), "{}", stderr(&early));
    assert!(stderr(&early).contains("sessions: no users stored here"), "{}", stderr(&early));

    let out = env.run(&["backfill", "--kind", "roles"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("unexpected answer from") && err.contains("/v1/organization_roles"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    fake.malformed.lock().unwrap().insert("/v1/billing/statements".to_owned());
    let out = env.run(&["backfill", "--kind", "payment-attempts"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("unexpected answer from") && stderr(&out).contains("/v1/billing/statements"));

    let report = env.json(&["backfill", "--kind", "waitlist-entries"]).await;
    assert_eq!((report[0]["written"].as_u64(), report[0]["skipped_invalid"].as_u64()), (Some(5), Some(1)), "{report}");

    server.stop(true).await;
    env.cleanup().await;
    pool.close().await;
    db.drop_now().await;
}

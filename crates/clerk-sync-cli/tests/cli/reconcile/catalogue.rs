//! `reconcile` of the kinds of issue 19 against the fake of Clerk's Backend API in `clerk_api`:
//! missing, stale and (for the kinds Clerk deletes) gone, each found and repaired by `--fix`.

use crate::clerk_api::{self, FakeClerk};

use super::*;

fn gaps(report: &Value, kinds: &[&str]) -> Value {
    kinds.iter().map(|k| ((*k).to_owned(), report[*k].clone())).collect::<serde_json::Map<_, _>>().into()
}

const NEW_KINDS: [&str; 9] = [
    "roles",
    "permissions",
    "invitations",
    "domains",
    "waitlist_entries",
    "subscription_items",
    "sessions",
    "subscriptions",
    "payment_attempts",
];

#[tokio::test]
async fn reconcile_finds_and_fixes_missing_stale_and_gone_objects_of_each_new_kind() {
    let db = TestDatabase::create("reconcile_catalogue").await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    let fake = web::Data::new(FakeClerk { state: clerk_api::instance(T).into(), ..Default::default() });
    let (api_url, server) = clerk_api::start(fake.clone()).await;
    let env = env("reconcile_catalogue")
        .await
        .with("DATABASE_URL", &db.url)
        .with("CLERK_SECRET_KEY", clerk_api::KEY)
        .with("CLERK_SYNC__CLERK__API_URL", &api_url)
        .with("CLERK_SYNC__LOG__LEVEL", "error");
    env.json(&["backfill"]).await;
    let clean = env.run(&["--json", "reconcile", "--all-kinds", "--rate", "500"]).await;
    assert!(clean.status.success(), "in sync after the backfill: {} {}", stdout(&clean), stderr(&clean));

    // Clerk moves on without the webhooks: per kind, one object created, one updated, and for
    // the kinds Clerk deletes one deleted; a waitlist entry and a session disappear from the
    // lists too (Clerk never deletes those here: not a gap).
    {
        let mut clerk = fake.state.lock().unwrap();
        clerk.roles.push(clerk_api::role("role_new", "org:new", T));
        clerk.roles[0] = clerk_api::role("role_0", "org:renamed", T + 1_000);
        clerk.roles.retain(|r| r["id"] != "role_2");
        clerk.permissions.push(clerk_api::permission("perm_new", "org:new:manage", T));
        clerk.permissions[1] = clerk_api::permission("perm_1", "org:renamed:manage", T + 1_000);
        clerk.permissions.retain(|p| p["id"] != "perm_3");
        clerk.invitations.push(clerk_api::invitation("orginv_new", "org_1", "new@example.com", "pending", T));
        clerk.invitations[4] = clerk_api::invitation("orginv_4", "org_2", "i4@example.com", "accepted", T + 1_000);
        clerk.domains.push(clerk_api::domain("orgdmn_new", "org_2", "new.example.com", T));
        clerk.domains[1] = clerk_api::domain("orgdmn_1", "org_1", "renamed.example.com", T + 1_000);
        clerk.domains.retain(|d| d["id"] != "orgdmn_4");
        clerk.waitlist.push(clerk_api::waitlist_entry("wle_new", "new@example.com", "pending", T));
        clerk.waitlist[0] = clerk_api::waitlist_entry("wle_0", "w0@example.com", "invited", T + 1_000);
        clerk.waitlist.retain(|w| w["id"] != "wle_5");
        clerk.subscription_items.push(clerk_api::subscription_item("csitem_new", "csub_u0", "user_00", "active", T));
        clerk.subscription_items[2] =
            clerk_api::subscription_item("csitem_2", "csub_u2", "user_02", "canceled", T + 1_000);
        clerk.sessions.push(samples::session("sess_new", "user_07", "active", T));
        clerk.sessions[5] = samples::session("sess_05", "user_02", "revoked", T + 1_000);
        clerk.sessions.retain(|s| s["id"] != "sess_09");
        clerk.subscriptions.push(clerk_api::subscription("csub_u5", "user_05", "active", T));
        clerk.subscriptions[1] = clerk_api::subscription("csub_u1", "user_01", "past_due", T + 1_000);
        clerk.payment_attempts.push(clerk_api::payment_attempt("pa_new", "stmt_2", "user_02", "pending", T));
        clerk.payment_attempts[3] = clerk_api::payment_attempt("pa_3", "stmt_1", "user_01", "failed", T + 1_000);
        clerk.payment_attempts.retain(|a| a["id"] != "pa_5");
    }

    let found = env.run(&["--json", "reconcile", "--all-kinds", "--rate", "500", "--show", "3"]).await;
    assert_eq!(found.status.code(), Some(1), "drift exits 1: {}", stderr(&found));
    let found: Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(
        gaps(&found, &NEW_KINDS),
        json!({
            "roles": {"missing": 1, "stale": 1, "gone": 1},
            "permissions": {"missing": 1, "stale": 1, "gone": 1},
            "invitations": {"missing": 1, "stale": 1},
            "domains": {"missing": 1, "stale": 1, "gone": 1},
            "waitlist_entries": {"missing": 1, "stale": 1},
            "subscription_items": {"missing": 1, "stale": 1},
            "sessions": {"missing": 1, "stale": 1},
            "subscriptions": {"missing": 1, "stale": 1},
            "payment_attempts": {"missing": 1, "stale": 1},
        }),
        "{found}"
    );
    assert_eq!(found["first_ids"]["domains"]["gone"], json!(["orgdmn_4"]));
    assert_eq!(found["first_ids"]["sessions"]["missing"], json!(["sess_new"]));

    // The default leaves out the kinds that cost a request per user.
    let default = env.run(&["--json", "reconcile", "--rate", "500"]).await;
    let default: Value = serde_json::from_slice(&default.stdout).unwrap();
    for costly in ["sessions", "subscriptions", "payment_attempts"] {
        assert!(default.get(costly).is_none(), "{costly}: {default}");
    }
    assert_eq!(default["roles"]["gone"], 1);

    let fixed = env.run(&["reconcile", "--all-kinds", "--fix", "--rate", "500"]).await;
    assert!(fixed.status.success(), "--fix leaves nothing: {} {}", stdout(&fixed), stderr(&fixed));
    println!("$ clerk-sync reconcile --all-kinds --fix\n{}", stdout(&fixed));

    let text = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, Option<String>>(sql).fetch_one(&pool).await.unwrap() }
    };
    assert_eq!(text("SELECT key FROM clerk.roles WHERE id = 'role_0'").await.as_deref(), Some("org:renamed"));
    assert_eq!(text("SELECT key FROM clerk.roles WHERE id = 'role_new'").await.as_deref(), Some("org:new"));
    assert_eq!(
        text("SELECT key FROM clerk.permissions WHERE id = 'perm_1'").await.as_deref(),
        Some("org:renamed:manage")
    );
    assert_eq!(
        text("SELECT status FROM clerk.organization_invitations WHERE id = 'orginv_4'").await.as_deref(),
        Some("accepted")
    );
    assert_eq!(
        text("SELECT organization_id FROM clerk.organization_invitations WHERE id = 'orginv_new'").await.as_deref(),
        Some("org_1")
    );
    assert_eq!(
        text("SELECT name FROM clerk.organization_domains WHERE id = 'orgdmn_1'").await.as_deref(),
        Some("renamed.example.com")
    );
    assert_eq!(text("SELECT status FROM clerk.waitlist_entries WHERE id = 'wle_0'").await.as_deref(), Some("invited"));
    assert_eq!(
        text("SELECT status FROM clerk.subscription_items WHERE id = 'csitem_2'").await.as_deref(),
        Some("canceled")
    );
    assert_eq!(text("SELECT status FROM clerk.sessions WHERE id = 'sess_05'").await.as_deref(), Some("revoked"));
    assert_eq!(text("SELECT user_id FROM clerk.sessions WHERE id = 'sess_new'").await.as_deref(), Some("user_07"));
    assert_eq!(text("SELECT status FROM clerk.subscriptions WHERE id = 'csub_u1'").await.as_deref(), Some("past_due"));
    assert_eq!(text("SELECT user_id FROM clerk.subscriptions WHERE id = 'csub_u5'").await.as_deref(), Some("user_05"));
    for (table, id) in [("roles", "role_2"), ("permissions", "perm_3"), ("organization_domains", "orgdmn_4")] {
        let row: (bool, Option<String>, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT deleted_at IS NOT NULL, deleted_by, raw::text FROM clerk.{table} WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(row, (true, Some("reconcile".to_owned()), None), "{table} {id}: tombstoned by the reconcile");
    }
    assert_eq!(text("SELECT status FROM clerk.payment_attempts WHERE id = 'pa_3'").await.as_deref(), Some("failed"));
    assert_eq!(
        text("SELECT statement_id FROM clerk.payment_attempts WHERE id = 'pa_new'").await.as_deref(),
        Some("stmt_2")
    );
    for (table, id) in [("waitlist_entries", "wle_5"), ("sessions", "sess_09"), ("payment_attempts", "pa_5")] {
        let alive: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT deleted_at IS NULL AND raw IS NOT NULL FROM clerk.{table} WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(alive, "{table} {id}: Clerk does not delete these; the row stays");
    }
    let recorded: i64 = scalar(
        &pool,
        "SELECT count(*) FROM clerk.webhook_events WHERE svix_id IN
             ('reconcile:roles:role_2:gone', 'reconcile:domains:orgdmn_4:gone', 'reconcile:sessions:sess_new:1716883200000')",
    )
    .await;
    assert_eq!(recorded, 3, "each repair recorded under its synthetic svix-id");

    let again = env.run(&["--json", "reconcile", "--all-kinds", "--rate", "500"]).await;
    assert!(again.status.success(), "in sync exits 0: {}", stderr(&again));

    server.stop(true).await;
    env.cleanup().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_malformed_api_answer_stops_the_reconcile_with_a_clear_error() {
    let db = TestDatabase::create("reconcile_malformed").await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    let fake = web::Data::new(FakeClerk { state: clerk_api::instance(T).into(), ..Default::default() });
    fake.malformed.lock().unwrap().insert("/v1/organizations/org_3/domains".to_owned());
    let (api_url, server) = clerk_api::start(fake.clone()).await;
    let env = env("reconcile_malformed")
        .await
        .with("DATABASE_URL", &db.url)
        .with("CLERK_SECRET_KEY", clerk_api::KEY)
        .with("CLERK_SYNC__CLERK__API_URL", &api_url);
    env.json(&["backfill", "--kind", "organizations"]).await;

    let out = env.run(&["reconcile", "--kind", "domains", "--rate", "500"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("unexpected answer from") && err.contains("/v1/organizations/org_3/domains"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("drift found"), "{err}");

    server.stop(true).await;
    env.cleanup().await;
    pool.close().await;
    db.drop_now().await;
}

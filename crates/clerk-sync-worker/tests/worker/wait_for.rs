//! Migration 17's `clerk.wait_for` for every stored resource: each name of the catalogue maps to a
//! table, a new resource's row ends the wait once at the version asked (or a tombstone), an unknown
//! object gives false after the timeout, and a name that is not a resource raises.

use std::time::{Duration, Instant};

use clerk_sync_store::catalogue::Resource;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

async fn apply(pool: &PgPool, resource: &str, batch: Value) {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM clerk.apply_batch({resource} => $1)")))
        .bind(batch)
        .execute(pool)
        .await
        .unwrap();
}

fn session(id: &str, status: &str, at: &str, svix: &str) -> Value {
    json!({"upserts": [{"id": id, "user_id": "user_1", "status": status, "updated_at": at, "raw": {},
        "version_svix_id": svix}], "deletions": []})
}

async fn wait_for(pool: &PgPool, resource: &str, id: &str, version: &str, timeout: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT clerk.wait_for($1, $2, $3::timestamptz, $4::interval)")
        .bind(resource)
        .bind(id)
        .bind(version)
        .bind(timeout)
        .fetch_one(pool)
        .await
}

#[tokio::test]
async fn wait_for_knows_every_resource_the_catalogue_stores_and_raises_for_any_other_name() {
    let env = setup("wait_for_names").await;
    let pool = &env.pool;
    // The names `clerk.changes` accepts are the catalogue's: one list in Rust, checked against both.
    let check: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'changes_resource_check'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    for resource in Resource::ALL {
        let name = resource.as_sql();
        assert!(check.contains(&format!("'{name}'")), "clerk.changes accepts {name}: {check}");
        let found = wait_for(pool, name, "nothing_here", "2026-01-01", "0 seconds").await;
        assert!(!found.unwrap_or_else(|e| panic!("{name}: {e}")), "{name}: nothing stored, nothing reached");
    }
    for bad in ["users", "sessions", "Session", "", "user; DROP TABLE clerk.users"] {
        let err = wait_for(pool, bad, "x", "2026-01-01", "1 second").await.unwrap_err();
        assert!(err.to_string().contains("unknown resource"), "{bad:?}: {err}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn wait_for_a_session_returns_once_its_version_is_there_and_false_after_the_timeout_for_an_unknown_one() {
    let env = setup("wait_for_session").await;
    let pool = env.pool.clone();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { wait_for(&pool, "session", "sess_1", "2026-01-02T00:00:00Z", "20 seconds").await.unwrap() }
    });
    apply(&pool, "sessions", session("sess_1", "active", "2026-01-01T00:00:00Z", "s1")).await;
    assert!(!waiter.is_finished(), "an older version does not end the wait");
    let started = Instant::now();
    apply(&pool, "sessions", session("sess_1", "ended", "2026-01-02T00:00:00Z", "s2")).await;
    assert!(waiter.await.unwrap(), "reached");
    assert!(started.elapsed() < Duration::from_secs(5));

    let started = Instant::now();
    let never = wait_for(&pool, "session", "sess_unknown", "2026-01-01", "200 milliseconds").await.unwrap();
    assert!(!never, "an object that never comes: false");
    assert!(started.elapsed() >= Duration::from_millis(200), "after the timeout, not before");
    env.cleanup().await;
}

#[tokio::test]
async fn wait_for_counts_a_tombstone_as_synced_and_reads_billing_versions() {
    let env = setup("wait_for_tombstone").await;
    let pool = &env.pool;
    let deletion = json!({"upserts": [], "deletions": [{"id": "role_1", "deleted_at": "2026-01-03T00:00:00Z"}]});
    apply(pool, "roles", deletion).await;
    assert!(wait_for(pool, "role", "role_1", "9999-01-01", "5 seconds").await.unwrap(), "a deleted role is synced");

    let item = json!({"upserts": [{"id": "csitem_1", "subscription_id": "csub_1", "status": "active",
        "updated_at": "2026-01-05T00:00:00Z", "raw": {}, "version_svix_id": "s1"}], "deletions": []});
    apply(pool, "subscription_items", item).await;
    let item_at = |v: &'static str| wait_for(pool, "subscription_item", "csitem_1", v, "0 seconds");
    assert!(item_at("2026-01-05T00:00:00Z").await.unwrap(), "the version itself");
    assert!(!item_at("2026-01-05T00:00:00.001Z").await.unwrap(), "a newer version than stored");
    env.cleanup().await;
}

//! Migration 10's SQL on its own: what a change records (changed columns, a deletion's svix-id,
//! a cascade's), what writes none (an equal version, the switch off), `clerk.wait_for` and the
//! retention.

use std::time::{Duration, Instant};

use clerk_sync_store::feed;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

async fn apply(pool: &PgPool, sources: Option<Value>, users: Value, memberships: Value) {
    let mut tx = pool.begin().await.unwrap();
    if let Some(s) = sources {
        sqlx::query("SELECT set_config('clerk.change_sources', $1, true)")
            .bind(s.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query("SELECT count(*) FROM clerk.apply_batch(users => $1, memberships => $2)")
        .bind(users)
        .bind(memberships)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn user(id: &str, name: &str, at: &str, svix: &str) -> Value {
    json!({"upserts": [{"id": id, "first_name": name, "updated_at": at, "raw": {}, "version_svix_id": svix}], "deletions": []})
}

const NONE: fn() -> Value = || json!({"upserts": [], "deletions": []});

async fn changes(pool: &PgPool) -> Vec<(String, String, String, Vec<String>, Option<String>)> {
    feed::sequence(pool, 1000).await.unwrap();
    sqlx::query_as("SELECT resource, object_id, operation, changed, svix_id FROM clerk.changes ORDER BY position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_change_names_its_columns_and_event_and_unchanged_or_switched_off_writes_record_nothing() {
    let env = setup("feed_sql").await;
    let pool = &env.pool;
    apply(pool, None, user("user_1", "Ada", "2026-01-01T00:00:00Z", "s1"), NONE()).await;
    let membership = json!({"upserts": [{"id": "mem_1", "user_id": "user_1", "organization_id": "org_1", "role": "admin",
        "updated_at": "2026-01-01T00:00:00Z", "raw": {}, "version_svix_id": "s2"}], "deletions": []});
    apply(pool, None, NONE(), membership).await;
    // A newer version with the same values (a tie broken by the svix-id): nothing changed.
    apply(pool, None, user("user_1", "Ada", "2026-01-01T00:00:00Z", "s9"), NONE()).await;
    // The switch: this session writes no change.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET clerk.changes = off").execute(&mut *conn).await.unwrap();
    sqlx::query("SELECT count(*) FROM clerk.apply_batch(users => $1)")
        .bind(user("user_1", "Off", "2026-01-02T00:00:00Z", "s3"))
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let deletion = json!({"upserts": [], "deletions": [{"id": "user_1", "deleted_at": "2026-01-03T00:00:00Z"}]});
    apply(pool, Some(json!({"user": {"user_1": "s4"}})), deletion, NONE()).await;

    let s = |v: &str| Some(v.to_owned());
    let cols = |c: &[&str]| c.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    let got = changes(pool).await;
    let want = vec![
        ("user".into(), "user_1".into(), "created".into(), cols(&["first_name", "id", "updated_at"]), s("s1")),
        (
            "membership".into(),
            "mem_1".into(),
            "created".into(),
            cols(&["id", "organization_id", "role", "updated_at", "user_id"]),
            s("s2"),
        ),
        ("user".into(), "user_1".into(), "deleted".into(), cols(&["deleted_at", "first_name"]), s("s4")),
        // Tombstoned with its user: named after the user's deletion.
        ("membership".into(), "mem_1".into(), "deleted".into(), cols(&["deleted_at"]), s("s4")),
    ];
    assert_eq!(got, want);
    env.cleanup().await;
}

#[tokio::test]
async fn wait_for_returns_once_the_version_is_there_and_false_at_the_timeout() {
    let env = setup("feed_wait").await;
    let pool = env.pool.clone();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT clerk.wait_for('user', 'user_1', '2026-01-02T00:00:00Z', '20 seconds')",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    });
    apply(&pool, None, user("user_1", "Ada", "2026-01-01T00:00:00Z", "s1"), NONE()).await;
    assert!(!waiter.is_finished(), "an older version does not end the wait");
    let started = Instant::now();
    apply(&pool, None, user("user_1", "Ada", "2026-01-02T00:00:00Z", "s2"), NONE()).await;
    assert!(waiter.await.unwrap(), "reached");
    assert!(started.elapsed() < Duration::from_secs(5));
    let never: bool = sqlx::query_scalar("SELECT clerk.wait_for('user', 'user_2', '2026-01-01', '50 milliseconds')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!never);
    env.cleanup().await;
}

#[tokio::test]
async fn retention_prunes_old_changes_but_keeps_those_the_relay_has_not_published() {
    let env = setup("feed_prune").await;
    let pool = &env.pool;
    for n in 1..=4 {
        apply(pool, None, user(&format!("user_{n}"), "Ada", "2026-01-01T00:00:00Z", "s"), NONE()).await;
    }
    changes(pool).await;
    sqlx::query("UPDATE clerk.changes SET committed_at = now() - interval '30 days'").execute(pool).await.unwrap();
    sqlx::query("UPDATE clerk.change_feed_state SET relayed_position = 2").execute(pool).await.unwrap();
    let cutoff = chrono::Utc::now() - chrono::Duration::days(7);
    assert_eq!(feed::prune(pool, cutoff, true).await.unwrap(), 2, "positions 1 and 2 were relayed");
    assert_eq!(feed::prune(pool, cutoff, false).await.unwrap(), 2, "without the relay, the rest too");
    assert_eq!(feed::last_position(pool).await.unwrap(), 4, "positions are not reused");
    env.cleanup().await;
}

/// A function that turns a plan type off costs any plan still using it at 10^10, far above
/// `jit_above_cost`: without `jit = off` every such statement is compiled with LLVM on each call
/// (tens of ms; migration 21).
#[tokio::test]
async fn every_function_that_turns_a_plan_type_off_turns_jit_off_too() {
    let env = setup("feed_sql_jit").await;
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE n.nspname = 'clerk'
           AND EXISTS (SELECT 1 FROM unnest(p.proconfig) AS c WHERE c ~ '^enable_[a-z]+=off$')
           AND NOT 'jit=off' = ANY (p.proconfig)
         ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert!(missing.is_empty(), "without jit = off: {missing:?}");
    let pinned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE n.nspname = 'clerk' AND 'enable_seqscan=off' = ANY (p.proconfig)",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(pinned >= 14, "the apply functions, the lookup and the sequencer are checked: {pinned}");
    env.cleanup().await;
}

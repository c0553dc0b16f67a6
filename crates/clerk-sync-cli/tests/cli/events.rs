//! `clerk-sync events list/show/replay` and `clerk-sync reproject` against a history the real
//! worker wrote; `dlq purge --user`.

use std::time::Duration;

use clerk_sync_core::amqp::{self, headers};
use clerk_sync_core::samples::{self, envelope, membership, organization, user};
use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_store::catalogue::Resource;
use clerk_sync_store::db;
use clerk_sync_testkit::{TestDatabase, amqp_url, wait_until};
use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

struct History {
    env: Env,
    db: TestDatabase,
    pool: PgPool,
    stop: tokio_util::sync::CancellationToken,
    worker: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn history(label: &str) -> History {
    let env = env(label).await;
    let db = TestDatabase::create(label).await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    let sources = Sources::default()
        .with_env("AMQP_URL", amqp_url())
        .with_env("DATABASE_URL", &db.url)
        .with_env("CLERK_SYNC__AMQP__PREFIX", &env.prefix)
        .with_env("CLERK_SYNC__WORKER__ADMIN_LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__WORKER__BATCH_LINGER", "2ms");
    let worker = clerk_sync_worker::Application::build(&Settings::load(&sources, &[]).unwrap()).await.unwrap();
    let stop = worker.shutdown_token();
    let worker = tokio::spawn(worker.run_until_stopped());
    let env = env.with("DATABASE_URL", &db.url);
    History { env, db, pool, stop, worker }
}

impl History {
    /// Publishes as the gateway does, received at `received_at_ms`.
    async fn publish(&self, svix_id: &str, event: &Value, received_at_ms: i64) {
        let mut table = FieldTable::default();
        amqp::put_i64(&mut table, headers::RECEIVED_AT, received_at_ms);
        let props = BasicProperties::default().with_message_id(svix_id.into()).with_headers(table);
        let body = event.to_string();
        let t = event["type"].as_str().unwrap();
        self.env.probe.publish(&self.env.topology.exchange(), t, body.as_bytes(), props).await;
    }

    async fn wait_processed(&self, n: i64) {
        let pool = self.pool.clone();
        wait_until(Duration::from_secs(20), &format!("{n} events processed"), || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM clerk.webhook_events")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    >= n
            }
        })
        .await;
    }

    async fn rows(&self, table: &str) -> Vec<Value> {
        let sql = format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) - 'synced_at' ORDER BY t.id), '[]') FROM clerk.{table} AS t"
        );
        let rows: sqlx::types::Json<Vec<Value>> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.pool).await.unwrap();
        rows.0
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.worker.await;
        self.env.cleanup().await;
        self.db.drop_now().await;
    }
}

fn ids(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|e| e["svix_id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn events_are_found_by_each_selector_and_shown_whole() {
    let h = history("ev-list").await;
    let now = amqp::now_ms();
    h.publish("msg_u1", &envelope("user.created", user("user_1", "Ada", "ada@example.com", T), T), now - 3 * 3_600_000)
        .await;
    h.publish("msg_u1b", &envelope("user.updated", user("user_1", "Ada", "ada@example.com", T - 5), T), now).await;
    h.publish("msg_o1", &envelope("organization.created", organization("org_1", "Acme", T), T), now).await;
    let m = membership("orgmem_1", "org_1", "user_2", "org:admin", T);
    h.publish("msg_m1", &envelope("organizationMembership.created", m, T), now).await;
    h.wait_processed(4).await;

    let all = h.env.json(&["events", "list"]).await;
    assert_eq!(all.as_array().unwrap().len(), 4);
    assert_eq!(all[3]["svix_id"], "msg_u1", "newest first: the one received three hours ago is last");
    let by_user = h.env.json(&["events", "list", "--user", "user_1"]).await;
    assert_eq!(ids(&by_user).len(), 2);
    assert_eq!(by_user[0]["svix_id"], "msg_u1b", "newest first");
    assert_eq!(ids(&h.env.json(&["events", "list", "--user", "user_2"]).await), ["msg_m1"], "a membership's user");
    assert_eq!(ids(&h.env.json(&["events", "list", "--organization", "org_1"]).await).len(), 2);
    assert_eq!(ids(&h.env.json(&["events", "list", "--type", "organization.created"]).await), ["msg_o1"]);
    assert_eq!(ids(&h.env.json(&["events", "list", "--outcome", "stale"]).await), ["msg_u1b"]);
    assert_eq!(ids(&h.env.json(&["events", "list", "--since", "1h"]).await).len(), 3);
    assert_eq!(ids(&h.env.json(&["events", "list", "--until", "1h"]).await), ["msg_u1"]);
    assert_eq!(h.env.json(&["events", "list", "--limit", "1"]).await.as_array().unwrap().len(), 1);

    let shown = h.env.json(&["events", "show", "msg_o1"]).await;
    assert_eq!(shown["type"], "organization.created");
    assert_eq!(shown["outcome"], "applied");
    assert_eq!(shown["body"]["data"]["name"], "Acme", "the body as received");
    let missing = h.env.run(&["events", "show", "msg_nope"]).await;
    assert!(!missing.status.success() && stderr(&missing).contains("no stored event"));
    // `show` finds the stored row through the deduplication row; retention can delete that first.
    sqlx::query("DELETE FROM clerk.webhook_events WHERE svix_id = 'msg_m1'").execute(&h.pool).await.unwrap();
    let shown = h.env.json(&["events", "show", "msg_m1"]).await;
    assert_eq!(shown["type"], "organizationMembership.created", "found without its deduplication row");
    h.stop().await;
}

#[tokio::test]
async fn a_replayed_window_applies_exactly_what_the_ordering_guard_allows() {
    let h = history("ev-replay").await;
    let now = amqp::now_ms();
    h.publish("msg_a1", &envelope("user.updated", user("user_a", "A-old", "a@example.com", T), T), now).await;
    h.publish("msg_a2", &envelope("user.updated", user("user_a", "A-new", "a@example.com", T + 10), T + 10), now).await;
    h.publish("msg_b1", &envelope("user.updated", user("user_b", "B", "b@example.com", T), T), now).await;
    h.wait_processed(3).await;
    // A bug lost user_b's row.
    sqlx::query("DELETE FROM clerk.users WHERE id = 'user_b'").execute(&h.pool).await.unwrap();

    let dry = h.env.json(&["events", "replay", "--since", "1h", "--dry-run"]).await;
    assert_eq!((dry["selected"].as_u64(), dry["by_type"]["user.updated"].as_u64()), (Some(3), Some(3)));
    assert_eq!(h.rows("users").await.len(), 1, "a dry run publishes nothing");
    let refused = h.env.run(&["events", "replay", "--since", "1h"]).await;
    assert!(!refused.status.success(), "a replay asks for confirmation");

    let report = h.env.json(&["events", "replay", "--since", "1h", "--yes"]).await;
    assert_eq!(report["published"], 3);
    // The older version of user_a and the one already stored are stale; user_b comes back.
    assert_eq!((report["applied"].as_u64(), report["stale"].as_u64()), (Some(1), Some(2)), "{report}");
    let users = h.rows("users").await;
    assert_eq!(users.iter().map(|u| u["first_name"].as_str().unwrap()).collect::<Vec<_>>(), ["A-new", "B"]);
    let replays = h.env.json(&["events", "list", "--user", "user_b"]).await;
    assert_eq!(replays[0]["replay_of"], "msg_b1", "the replay is in the history too, naming its original");
    h.stop().await;
}

#[tokio::test]
async fn reproject_after_truncating_gives_back_the_same_rows() {
    let h = history("ev-reproj").await;
    let now = amqp::now_ms();
    let send = |id: String, event: Value| (id, event);
    let mut events = Vec::new();
    for i in 0..20 {
        let u = format!("user_{i:02}");
        events.push(send(format!("msg_c{i}"), envelope("user.created", user(&u, "First", &format!("{u}@x.io"), T), T)));
        let v = T + 1_000 + i;
        events
            .push(send(format!("msg_u{i}"), envelope("user.updated", user(&u, "Second", &format!("{u}@y.io"), v), v)));
        let org = format!("org_{}", i % 3);
        let m = membership(&format!("orgmem_{i:02}"), &org, &u, "org:member", T + 5);
        events.push(send(format!("msg_m{i}"), envelope("organizationMembership.created", m, T + 5)));
    }
    for o in 0..3 {
        let org = organization(&format!("org_{o}"), &format!("Org {o}"), T + 100);
        events.push(send(format!("msg_o{o}"), envelope("organization.updated", org, T + 100)));
    }
    // One object of every other stored resource, the Billing ones paid by the user deleted below
    // (their accounting stays), and a session of that user (ended and scrubbed by the deletion,
    // and so again when rebuilt from the scrubbed history).
    for (i, t) in [
        "session.created",
        "organizationInvitation.created",
        "organizationDomain.created",
        "role.created",
        "permission.created",
        "waitlistEntry.created",
        "subscription.created",
        "subscriptionItem.created",
        "paymentAttempt.created",
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = samples::sample(t, T + 200).unwrap();
        if e["data"].get("payer").is_some() {
            e["data"]["payer"]["user_id"] = json!("user_07");
        }
        events.push(send(format!("msg_r{i}"), e));
    }
    let mut session = samples::sample("session.created", T + 300).unwrap();
    session["data"]["id"] = json!("sess_07");
    session["data"]["user_id"] = json!("user_07");
    events.push(send("msg_s7".into(), session));
    let deleted = json!({"id": "user_07", "object": "user", "deleted": true});
    events.push(send("msg_d7".into(), envelope("user.deleted", deleted, T + 9_000)));
    for (id, e) in &events {
        h.publish(id, e, now).await;
    }
    h.wait_processed(i64::try_from(events.len()).unwrap()).await;
    let tables: Vec<&str> = Resource::ALL.iter().map(|r| r.table()).collect();
    let mut before = Vec::new();
    for t in &tables {
        before.push(h.rows(t).await);
    }
    assert!(before[0].iter().any(|u| u["id"] == "user_07" && !u["deleted_at"].is_null()));
    assert!(before.iter().all(|rows| !rows.is_empty()), "every table has a row: {before:?}");
    let sessions = &before[3];
    assert!(sessions.iter().any(|s| s["id"] == "sess_07" && s["status"] == "ended"), "{sessions:?}");
    let items = &before[10];
    assert!(items[0]["raw"].is_null() && items[0]["plan_id"].is_string(), "the payer's deletion: {items:?}");

    sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE clerk.{}", tables.join(", clerk."))))
        .execute(&h.pool)
        .await
        .unwrap();
    // Pages of 7 objects, each resource paged by the column that names its objects, and at most
    // 2 events per transaction: a user's several events span transactions.
    let report = h.env.json(&["reproject", "--yes", "--page-size", "7", "--batch-events", "2"]).await;
    let kinds = report["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 12, "every stored resource: {report}");
    let objects: Vec<u64> = kinds.iter().map(|k| k["objects"].as_u64().unwrap()).collect();
    assert_eq!(objects[..4], [3, 20, 20, 2], "organizations, users, memberships, sessions: {report}");
    assert_eq!(kinds[1]["events"], 41, "each user event read once over 21 transactions: {report}");
    for (t, b) in tables.iter().zip(&before) {
        assert_eq!(b, &h.rows(t).await, "clerk.{t}: the same rows as the live table");
    }
    // Rewriting rows already there changes nothing either.
    h.env.json(&["reproject", "--kind", "users", "--yes"]).await;
    assert_eq!(h.rows("users").await, before[0]);
    h.stop().await;
}

#[tokio::test]
async fn a_webhook_that_commits_after_reproject_read_its_page_keeps_its_newer_version() {
    let h = history("ev-reproj-live").await;
    let now = amqp::now_ms();
    let older = envelope("user.updated", user("user_l", "Older", "l@x.io", T + 1), T + 1);
    h.publish("msg_l1", &envelope("user.created", user("user_l", "Old", "l@x.io", T), T), now).await;
    h.publish("msg_l2", &older, now).await;
    let newer = envelope("user.updated", user("user_l", "Newer", "l@x.io", T + 5_000), T + 5_000);
    h.publish("msg_l3", &newer, now).await;
    h.wait_processed(3).await;
    // As if msg_l3 had committed after reproject read the history: only the table has it.
    sqlx::query("DELETE FROM clerk.event_history WHERE svix_id = 'msg_l3'").execute(&h.pool).await.unwrap();
    let report = h.env.json(&["reproject", "--kind", "users", "--yes"]).await;
    assert_eq!(report["kinds"][0]["events"], 2, "{report}");
    let rows = h.rows("users").await;
    assert_eq!(rows[0]["first_name"], "Newer", "the older history never overwrites the live row: {rows:?}");
    h.stop().await;
}

#[tokio::test]
async fn purge_by_user_deletes_only_the_dead_letters_about_that_user() {
    let env = env("dlq-user").await;
    env.dead_letter("msg_user", "user.updated", "invalid_payload", amqp::now_ms()).await;
    env.dead_letter("msg_member", "organizationMembership.updated", "invalid_payload", amqp::now_ms()).await;
    env.dead_letter("msg_org", "organization.created", "invalid_payload", amqp::now_ms()).await;
    let purged = env.json(&["dlq", "purge", "--user", "user_2sampleUser0000000000", "--yes"]).await;
    assert_eq!((purged["purged"].as_u64(), purged["skipped"].as_u64()), (Some(2), Some(1)), "{purged}");
    let left = env.json(&["dlq", "list"]).await;
    assert_eq!(ids(&left), ["msg_org"]);
    env.cleanup().await;
}

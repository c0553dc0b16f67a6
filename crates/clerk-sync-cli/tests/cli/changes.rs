//! `clerk-sync changes tail`: the change feed read by position, filtered by resource, as JSON
//! lines, and followed while changes commit.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use clerk_sync_store::{db, feed};
use clerk_sync_testkit::{TestDatabase, wait_until};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

/// Writes one version of a user (or an organization) the way the worker's apply path does, and
/// positions it.
async fn write(pool: &PgPool, resource: &str, id: &str, name: &str, at: &str) {
    let (arg, column) = if resource == "users" { ("users", "first_name") } else { ("organizations", "name") };
    let mut row =
        json!({"id": id, column: name, "updated_at": at, "raw": {}, "version_svix_id": format!("msg_{id}_{at}")});
    if resource == "organizations" {
        row["nested"] = json!(false);
    }
    let batch = json!({"upserts": [row], "deletions": []});
    let sql = format!("SELECT count(*) FROM clerk.apply_batch({arg} => $1)");
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(batch).execute(pool).await.unwrap();
    feed::sequence(pool, 1000).await.unwrap();
}

fn lines(out: &std::process::Output) -> Vec<Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn changes_tail_prints_the_changes_after_a_position_of_one_resource_as_json_lines() {
    let database = TestDatabase::create("cli-changes").await;
    let pool = database.connect().await;
    db::migrate(&pool).await.unwrap();
    let env = env("cli-changes").await.with("DATABASE_URL", &database.url);
    write(&pool, "users", "user_1", "Ada", "2026-01-01T00:00:00Z").await;
    write(&pool, "organizations", "org_1", "Acme", "2026-01-01T00:00:00Z").await;
    write(&pool, "users", "user_1", "Grace", "2026-01-02T00:00:00Z").await;

    let all = lines(&env.run(&["--json", "changes", "tail", "--from", "0"]).await);
    let ops: Vec<(&str, &str)> =
        all.iter().map(|c| (c["object_id"].as_str().unwrap(), c["operation"].as_str().unwrap())).collect();
    assert_eq!(ops, [("user_1", "created"), ("org_1", "created"), ("user_1", "updated")]);
    assert_eq!(all[2]["changed"], json!(["first_name", "updated_at"]));

    let users = lines(&env.run(&["--json", "changes", "tail", "--from", "1", "--resource", "user"]).await);
    assert_eq!(users.len(), 1, "after position 1, users only: {users:?}");
    assert_eq!(users[0]["position"], 3);

    let last = lines(&env.run(&["--json", "changes", "tail", "-n", "1"]).await);
    assert_eq!(last.iter().map(|c| c["position"].clone()).collect::<Vec<_>>(), [json!(3)], "the last one, like tail");

    let human = env.run(&["changes", "tail", "--from", "2"]).await;
    assert!(stdout(&human).contains("user.updated") && stdout(&human).contains("user_1"), "{}", stdout(&human));
    env.cleanup().await;
    pool.close().await;
    database.drop_now().await;
}

#[tokio::test]
async fn changes_tail_follow_prints_a_change_soon_after_it_commits() {
    let database = TestDatabase::create("cli-changes-follow").await;
    let pool = database.connect().await;
    db::migrate(&pool).await.unwrap();
    let env = env("cli-changes-follow").await.with("DATABASE_URL", &database.url);
    write(&pool, "users", "user_1", "Ada", "2026-01-01T00:00:00Z").await;
    let mut child = env
        .command(&["--json", "changes", "tail", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap());
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(first["position"], 1, "starts with the last changes");
    let mut seen = Vec::new();
    for n in 0..3 {
        write(&pool, "users", &format!("user_{}", n + 2), "New", "2026-01-02T00:00:00Z").await;
    }
    wait_until(Duration::from_secs(10), "the follower prints the new changes", || {
        while let Ok(c) = rx.try_recv() {
            seen.push(c["position"].as_i64().unwrap());
        }
        let done = seen.len() >= 3;
        async move { done }
    })
    .await;
    assert_eq!(seen, [2, 3, 4], "each new change once, in order");
    let _ = child.kill();
    let _ = child.wait();
    env.cleanup().await;
    pool.close().await;
    database.drop_now().await;
}

//! `clerk-sync migrate` and `clerk-sync send`.

use std::time::Duration;

use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_testkit::{TestDatabase, admin_url, amqp_url};
use sqlx::{Connection, PgConnection};

use crate::helpers::*;

#[tokio::test]
async fn migrate_check_lists_pending_migrations_then_migrate_applies_them() {
    let db = TestDatabase::create("cli-migrate").await;
    let env = env("cli-migrate").await.with("DATABASE_URL", &db.url);
    let before = env.run(&["migrate", "--check"]).await;
    assert_eq!(before.status.code(), Some(1));
    assert!(stdout(&before).contains("pending: 20261127000001 clerk schema"), "{}", stdout(&before));
    let applied = env.run(&["migrate"]).await;
    assert!(applied.status.success(), "{}", stderr(&applied));
    let after = env.run(&["migrate", "--check"]).await;
    assert!(after.status.success());
    assert!(stdout(&after).contains("up to date"));
    env.cleanup().await;
    db.drop_now().await;
}

/// A database name nobody has created, on the test server.
fn missing_database(label: &str) -> (String, String) {
    let name = clerk_sync_testkit::unique_prefix(label).replace('-', "_");
    let server = admin_url().rsplit_once('/').map(|(s, _)| s.to_owned()).unwrap();
    (name.clone(), format!("{server}/{name}"))
}

async fn admin(sql: String) {
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
    let _ = admin.close().await;
}

#[tokio::test]
async fn migrate_creates_the_database_named_in_database_url_when_it_does_not_exist_yet() {
    let (name, url) = missing_database("cli-newdb");
    let env = env("cli-newdb").await.with("DATABASE_URL", &url);
    let out = env.run(&["migrate"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("created database \"{name}\"")), "says so: {}", stdout(&out));
    let check = env.run(&["migrate", "--check"]).await;
    assert!(check.status.success(), "{}", stdout(&check));
    let again = env.run(&["migrate"]).await;
    assert!(again.status.success() && !stdout(&again).contains("created database"), "{}", stdout(&again));
    admin(format!("DROP DATABASE \"{name}\" WITH (FORCE)")).await;
    env.cleanup().await;
}

#[tokio::test]
async fn migrate_says_what_to_run_when_the_role_may_not_create_databases() {
    let (name, _) = missing_database("cli-nocreate");
    let role = format!("{name}_role");
    admin(format!("CREATE ROLE \"{role}\" LOGIN NOCREATEDB")).await;
    let url = format!("postgres://{role}@127.0.0.1:5432/{name}");
    let env = env("cli-nocreate").await.with("DATABASE_URL", &url);
    let out = env.run(&["migrate"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");
    assert!(err.contains(&format!("role \"{role}\" may not create databases")), "{err}");
    assert!(err.contains(&format!("CREATE DATABASE \"{name}\" OWNER \"{role}\"")), "says what to run: {err}");
    admin(format!("DROP ROLE \"{role}\"")).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_fatal_error_is_one_sentence_naming_host_port_and_database_but_never_the_password() {
    let env = env("cli-fatal").await.with("DATABASE_URL", "postgres://postgres:hunter2@127.0.0.1:1/nowhere");
    let out = env.run(&["migrate"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("127.0.0.1:1") && err.contains("nowhere"), "names the target: {err}");
    assert!(!err.contains("hunter2"), "never the password: {err}");
    assert!(!err.contains(" at line "), "no source line numbers: {err}");
    env.cleanup().await;
}

#[tokio::test]
async fn send_posts_a_signed_sample_that_the_gateway_queues() {
    let env = env("cli-send").await;
    let sources = Sources::default()
        .with_env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
        .with_env("AMQP_URL", amqp_url())
        .with_env("CLERK_SYNC__AMQP__PREFIX", &env.prefix)
        .with_env("CLERK_SYNC__GATEWAY__LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__GATEWAY__ADMIN_LISTEN", "127.0.0.1:0");
    let gateway = clerk_sync_gateway::Application::build(&Settings::load(&sources, &[]).unwrap()).await.unwrap();
    let url = format!("http://127.0.0.1:{}/webhooks/clerk", gateway.port());
    let stop = gateway.shutdown_token();
    let task = tokio::spawn(gateway.run_until_stopped());

    let answer =
        clerk_sync_testkit::wait_until_value(Duration::from_secs(10), "the gateway queues the event", || async {
            let out = env
                .run(&["--json", "send", "organizationMembership.created", "--url", &url, "--id", "msg_cli_1"])
                .await;
            out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
        })
        .await;
    assert_eq!(answer["status"], 202);
    assert_eq!(answer["response"]["status"], "queued");
    let queued = env.probe.drain(&env.topology.queue(), Duration::from_millis(200)).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].delivery.routing_key.as_str(), "organizationMembership.created");
    assert_eq!(queued[0].delivery.properties.message_id().as_ref().unwrap().as_str(), "msg_cli_1");

    let unknown = env.run(&["send", "user.exploded", "--url", &url]).await;
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("send --list"));
    let list = stdout(&env.run(&["send", "--list"]).await);
    assert_eq!(list.lines().count(), clerk_sync_store::catalogue::CATALOGUE.len());

    let forged = env
        .run_with(
            &[("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")],
            &["send", "--url", &url],
        )
        .await;
    assert!(!forged.status.success(), "a wrong secret is answered 401 and the CLI says so");
    assert!(stdout(&forged).contains("401"));
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

//! `clerk-sync migrate` and `clerk-sync send`.

use std::time::Duration;

use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_testkit::{TestDatabase, amqp_url};

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
    assert_eq!(list.lines().count(), clerk_sync_core::samples::TYPES.len());

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

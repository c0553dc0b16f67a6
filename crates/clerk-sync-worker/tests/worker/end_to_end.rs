//! The whole pipeline: a signed request to the gateway ends as a row in `clerk.users`.

use std::time::Duration;

use clerk_sync_core::samples;
use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_testkit::signed_post;
use secrecy::SecretString;

use crate::helpers::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn a_signed_request_to_the_gateway_becomes_a_row_in_clerk_users() {
    let env = setup("e2e").await;
    let worker = env.start_worker().await;
    let sources = Sources { env: env.sources().env, ..Default::default() }
        .with_env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
        .with_env("CLERK_SYNC__GATEWAY__LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__GATEWAY__ADMIN_LISTEN", "127.0.0.1:0");
    let gateway = clerk_sync_gateway::Application::build(&Settings::load(&sources, &[]).unwrap()).await.unwrap();
    let url = format!("http://127.0.0.1:{}/webhooks/clerk", gateway.port());
    let stop_gateway = gateway.shutdown_token();
    let gateway_task = tokio::spawn(gateway.run_until_stopped());

    let body = samples::sample("user.created", chrono::Utc::now().timestamp_millis()).unwrap().to_string();
    let id = svix_id();
    let ts = chrono::Utc::now().timestamp();
    let (client, secret) = (reqwest::Client::new(), SecretString::from(SECRET.to_owned()));
    let post = |ts: i64| signed_post(&client, &url, &secret, &id, ts, body.as_bytes()).send();
    let status = clerk_sync_testkit::wait_until_value(Duration::from_secs(10), "the gateway accepts", || async {
        let response = post(ts).await.ok()?;
        (response.status() != 503).then_some(response.status().as_u16())
    })
    .await;
    assert_eq!(status, 202);

    env.wait_processed(1, Duration::from_secs(10)).await;
    let row = env.row("users", "user_2sampleUser0000000000").await.expect("the user row exists");
    assert_eq!(row["primary_email_address"], "sam@example.com");
    assert_eq!(env.outcome(&id).await.as_deref(), Some("applied"));

    // A replay: the same svix-id with a fresh, valid signature. Accepted, and applied once.
    let replay = post(chrono::Utc::now().timestamp() + 1).await.unwrap();
    assert_eq!(replay.status(), 202);
    clerk_sync_testkit::wait_until(Duration::from_secs(10), "the replay is counted as a duplicate", || async {
        env.metrics(&worker)
            .await
            .contains(r#"clerk_sync_worker_events_total{outcome="duplicate",type="user.created"} 1"#)
    })
    .await;
    assert_eq!(env.processed().await, 1);

    stop_gateway.cancel();
    gateway_task.await.unwrap().unwrap();
    worker.stop().await;
    env.cleanup().await;
}

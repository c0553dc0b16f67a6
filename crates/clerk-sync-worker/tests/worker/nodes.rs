//! Several broker nodes in `AMQP_URL`: a worker whose list starts with a dead node consumes
//! through the live one, and `/readyz` names the node its consumer and its publisher are on.

use std::time::Duration;

use clerk_sync_testkit::{amqp_addr, wait_until_value};

use crate::helpers::*;

#[tokio::test]
async fn a_worker_skips_a_dead_node_consumes_through_the_next_and_readyz_names_it() {
    let env = setup("nodes").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let live = amqp_addr();
    let list = format!("amqp://guest:guest@{closed}/%2f,amqp://guest:guest@{live}/%2f");
    let worker = env.start_worker_with(|s| s.with_env("AMQP_URL", list)).await;

    let readyz = format!("http://127.0.0.1:{}/readyz", worker.admin_port);
    // The publisher (retries, dead letters) connects on its own task, so readiness can come first.
    let body = wait_until_value(Duration::from_secs(20), "the worker is ready and its publisher up", || {
        let readyz = readyz.clone();
        async move {
            let response = reqwest::get(readyz).await.ok()?;
            let ready = response.status() == 200;
            let body: serde_json::Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
            (ready && !body["publisher_node"].is_null()).then_some(body)
        }
    })
    .await;
    assert_eq!(body["amqp_node"], live.to_string(), "{body}");
    assert_eq!(body["publisher_node"], live.to_string(), "{body}");

    let event = clerk_sync_core::samples::envelope(
        "user.created",
        clerk_sync_core::samples::user("user_nodes", "Ada", "ada@example.com", 1),
        1,
    );
    env.publish_event("msg_nodes_1", &event).await;
    env.wait_processed(1, Duration::from_secs(20)).await;
    worker.stop().await;
    env.cleanup().await;
}

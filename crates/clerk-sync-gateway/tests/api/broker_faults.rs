//! The broker away, stalled or refusing to route: the gateway answers 503 (never 2xx), does not
//! hang, and recovers by itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clerk_sync_testkit::{TcpProxy, wait_until};
use lapin::types::FieldTable;

use crate::helpers::*;

fn broker_addr() -> SocketAddr {
    clerk_sync_testkit::amqp_addr()
}

async fn spawn_behind(proxy: &TcpProxy, confirm_timeout: &str) -> TestApp {
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let confirm_timeout = confirm_timeout.to_owned();
    spawn_app_with(move |s| {
        s.with_env("AMQP_URL", url)
            .with_env("CLERK_SYNC__AMQP__RECONNECT_MIN_BACKOFF", "50ms")
            .with_env("CLERK_SYNC__AMQP__RECONNECT_MAX_BACKOFF", "500ms")
            .with_env("CLERK_SYNC__AMQP__CONFIRM_TIMEOUT", confirm_timeout)
            .with_env("CLERK_SYNC__GATEWAY__RETRY_AFTER", "7s")
    })
    .await
}

async fn status_of(app: &TestApp) -> u16 {
    app.post_signed(&user_event("user.updated", "user_1")).await.1.status().as_u16()
}

#[tokio::test]
async fn while_the_broker_is_unreachable_requests_get_503_and_the_gateway_recovers_by_itself() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let app = spawn_behind(&proxy, "2s").await;
    assert_eq!(status_of(&app).await, 202);

    proxy.cut();
    let readyz = format!("{}/readyz", app.admin_address);
    let client = app.client.clone();
    wait_until(Duration::from_secs(10), "readiness reports the broker down", || {
        let (client, readyz) = (client.clone(), readyz.clone());
        async move { client.get(readyz).send().await.is_ok_and(|r| r.status() == 503) }
    })
    .await;
    for _ in 0..5 {
        let started = Instant::now();
        let (_, response) = app.post_signed(&user_event("user.updated", "user_1")).await;
        assert_eq!(response.status(), 503);
        assert!(started.elapsed() < Duration::from_secs(1), "503 comes fast while disconnected");
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(json(response).await["error"], "broker_unavailable");
    }

    proxy.restore();
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        last = status_of(&app).await;
        if last == 202 {
            break;
        }
        assert_eq!(last, 503, "only 503 while reconnecting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, 202, "recovered after the broker came back");
    // Exactly the confirmed ones are queued: the first and the one after recovery.
    assert_eq!(app.probe.drain(&app.topology.queue(), Duration::from_millis(200)).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_gateway_started_with_no_broker_listening_answers_503_instead_of_failing() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = {
        clerk_sync_core::telemetry::init_for_tests();
        let sources = clerk_sync_core::settings::Sources::default()
            .with_env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
            .with_env("AMQP_URL", format!("amqp://guest:guest@127.0.0.1:{closed_port}/%2f"))
            .with_env("CLERK_SYNC__AMQP__PREFIX", clerk_sync_testkit::unique_prefix("nobroker"))
            .with_env("CLERK_SYNC__GATEWAY__LISTEN", "127.0.0.1:0")
            .with_env("CLERK_SYNC__GATEWAY__ADMIN_LISTEN", "127.0.0.1:0");
        let settings = clerk_sync_core::settings::Settings::load(&sources, &[]).unwrap();
        clerk_sync_gateway::Application::build(&settings).await.unwrap()
    };
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    let token = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let body = user_event("user.created", "user_1");
    let id = new_id();
    let response = client
        .post(format!("{base}/webhooks/clerk"))
        .header("svix-id", &id)
        .header("svix-timestamp", now().to_string())
        .header("svix-signature", sign(SECRET, &id, now(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(client.get(format!("{admin}/readyz")).send().await.unwrap().status(), 503);
    assert_eq!(client.get(format!("{admin}/healthz")).send().await.unwrap().status(), 200);
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_stalled_broker_connection_answers_503_at_the_confirm_timeout_and_does_not_hang() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let app = spawn_behind(&proxy, "500ms").await;
    assert_eq!(status_of(&app).await, 202);

    proxy.stall();
    let started = Instant::now();
    let statuses = futures_util::future::join_all((0..10).map(|_| status_of(&app))).await;
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "answered within about the confirm timeout");

    proxy.restore();
    wait_until(Duration::from_secs(30), "the gateway confirms again", || async { status_of(&app).await == 202 }).await;
    app.stop().await;
}

#[tokio::test]
async fn an_unroutable_event_is_answered_503_not_2xx() {
    let app = spawn_app().await;
    app.probe
        .channel()
        .queue_unbind(app.topology.queue().into(), app.topology.exchange().into(), "#".into(), FieldTable::default())
        .await
        .unwrap();
    let (_, response) = app.post_signed(&user_event("user.created", "user_1")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(json(response).await["error"], "broker_unavailable");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"clerk_sync_gateway_publish_confirm_seconds_count{result="unroutable"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"clerk_sync_gateway_requests_total{outcome="unavailable",status="503"} 1"#));
    app.stop().await;
}

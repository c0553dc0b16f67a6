//! Several broker nodes in `AMQP_URL`: the gateway publishes through whichever answers, moves to
//! another when its node is lost, says in `/readyz` which node it uses, and answers 503 (never
//! 2xx) for a publish whose confirm was lost with the connection. The "nodes" are TCP proxies in
//! front of the test broker, so each can be cut alone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clerk_sync_testkit::{TcpProxy, wait_until, wait_until_value};

use crate::helpers::*;

/// The test broker's address, from `AMQP_URL` (the single RabbitMQ 4 node in CI's second run).
fn broker_addr() -> SocketAddr {
    clerk_sync_testkit::amqp_addr()
}

fn node_url(addr: SocketAddr) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

async fn spawn_on(urls: &[String], confirm_timeout: &str) -> TestApp {
    let list = urls.join(",");
    let confirm_timeout = confirm_timeout.to_owned();
    spawn_app_with(move |s| {
        s.with_env("AMQP_URL", list)
            .with_env("CLERK_SYNC__AMQP__RECONNECT_MIN_BACKOFF", "50ms")
            .with_env("CLERK_SYNC__AMQP__RECONNECT_MAX_BACKOFF", "200ms")
            .with_env("CLERK_SYNC__AMQP__CONFIRM_TIMEOUT", confirm_timeout)
    })
    .await
}

/// The node `/readyz` names, once it names one.
async fn readyz_node(app: &TestApp) -> String {
    let url = format!("{}/readyz", app.admin_address);
    let client = app.client.clone();
    wait_until_value(Duration::from_secs(10), "readyz names a node", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = json(client.get(url).send().await.ok()?).await;
            body["amqp_node"].as_str().map(str::to_owned)
        }
    })
    .await
}

async fn status_of(app: &TestApp) -> u16 {
    app.post_signed(&user_event("user.updated", "user_1")).await.1.status().as_u16()
}

#[tokio::test]
async fn with_the_first_node_dead_the_gateway_publishes_through_the_second() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let live = TcpProxy::start(broker_addr()).await;
    let app = spawn_on(&[node_url(closed), node_url(live.addr())], "5s").await;
    assert_eq!(readyz_node(&app).await, live.addr().to_string());
    for _ in 0..3 {
        assert_eq!(status_of(&app).await, 202);
    }
    assert_eq!(app.probe.drain(&app.topology.queue(), Duration::from_millis(200)).await.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn when_its_node_is_lost_the_gateway_moves_to_another_and_readyz_says_which() {
    let a = TcpProxy::start(broker_addr()).await;
    let b = TcpProxy::start(broker_addr()).await;
    let app = spawn_on(&[node_url(a.addr()), node_url(b.addr())], "2s").await;
    let first = readyz_node(&app).await;
    assert_eq!(status_of(&app).await, 202);
    let (lost, other) = if first == a.addr().to_string() { (&a, &b) } else { (&b, &a) };
    lost.cut();

    let started = Instant::now();
    let mut accepted = 1;
    loop {
        match status_of(&app).await {
            202 => break accepted += 1,
            503 => assert!(started.elapsed() < Duration::from_secs(10), "no other node within 10 s"),
            other => panic!("only 202 or 503 while moving, got {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readyz_node(&app).await, other.addr().to_string());
    assert_eq!(app.probe.drain(&app.topology.queue(), Duration::from_millis(200)).await.len(), accepted);
    app.stop().await;
}

#[tokio::test]
async fn a_connection_lost_with_confirms_outstanding_answers_503_never_2xx() {
    let proxy = TcpProxy::start(broker_addr()).await;
    // A confirm timeout far beyond the test: only the lost connection can end these publishes.
    let app = spawn_on(&[node_url(proxy.addr())], "60s").await;
    assert_eq!(status_of(&app).await, 202);

    // Publishes leave, confirms never come back; then the connection dies with them outstanding.
    proxy.stall();
    let requests = futures_util::future::join_all((0..8).map(|_| status_of(&app)));
    let cut = async {
        let metrics = format!("{}/metrics", app.admin_address);
        let client = app.client.clone();
        wait_until(Duration::from_secs(10), "eight requests wait for their confirms", || {
            let (client, metrics) = (client.clone(), metrics.clone());
            async move {
                let Ok(response) = client.get(metrics).send().await else { return false };
                let text = response.text().await.unwrap_or_default();
                text.lines().any(|l| l == "clerk_sync_gateway_in_flight_requests 8")
            }
        })
        .await;
        proxy.cut();
        Instant::now()
    };
    let (statuses, cut_at) = tokio::join!(requests, cut);
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    assert!(cut_at.elapsed() < Duration::from_secs(10), "answered when the connection went, not at the timeout");

    proxy.restore();
    wait_until(Duration::from_secs(20), "the gateway reconnects", || async { status_of(&app).await == 202 }).await;
    app.stop().await;
}

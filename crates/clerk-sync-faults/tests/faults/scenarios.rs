//! The scenarios. Each one: start a stack, drive a Svix-like stream of signed events, inject one
//! fault, then prove every accepted event was applied exactly once and nothing was dead-lettered.

use std::time::{Duration, Instant};

use clerk_sync_testkit::{TcpProxy, signed_post, wait_until};
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

#[tokio::test]
#[ignore = "restarts shared services; run with `make test-faults`"]
async fn rabbitmq_restarted_during_load() {
    let mut stack = Stack::new("f-rabbit").await;
    stack.spawn_worker();
    stack.spawn_worker();
    let gateway = stack.spawn_gateway().await;
    let history = History::new(40, 25);
    let urls = vec![gateway.url.clone()];
    let load = deliver(&history, &urls, 32, Duration::from_secs(240));
    let inject = async {
        wait_until(Duration::from_secs(60), "load is flowing", || async { stack.processed().await >= 100 }).await;
        run("rabbitmqctl", &["stop_app"]);
        // While the broker is away the gateway must refuse, not accept.
        let refused = probe_status(&gateway.url).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        run("rabbitmqctl", &["start_app"]);
        run("rabbitmqctl", &["await_startup"]);
        refused
    };
    let (stats, refused) = tokio::join!(load, inject);
    assert!(refused != Some(202), "no 2xx while RabbitMQ is stopped (got {refused:?})");
    let verified = stack.verify(&history, Duration::from_secs(120)).await;
    report("RabbitMQ stop_app/start_app during load", 32, "broker down 5 s", &stats, &verified);
    stack.cleanup().await;
}

/// A signed request's status, or `None` if the gateway could not be reached.
async fn probe_status(url: &str) -> Option<u16> {
    // An old version of a history user: if it gets in after all, it is stale and changes nothing.
    let body = br#"{"type":"user.updated","data":{"id":"user_0000","first_name":"probe","updated_at":1}}"#;
    let id = format!("msg_probe_{}", uuid::Uuid::new_v4().simple());
    let ts = chrono::Utc::now().timestamp();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    signed_post(&client, url, &secrecy::SecretString::from(SECRET.to_owned()), &id, ts, body)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
#[ignore = "restarts shared services; run with `make test-faults`"]
async fn postgres_restarted_during_a_worker_drain() {
    let mut stack = Stack::new("f-pg").await;
    let gateway = stack.spawn_gateway().await;
    let history = History::new(50, 40);
    let stats = deliver(&history, std::slice::from_ref(&gateway.url), 32, Duration::from_secs(120)).await;
    stack.spawn_worker();
    stack.spawn_worker();
    wait_until(Duration::from_secs(60), "the drain is under way", || async { stack.processed().await >= 300 }).await;
    let version = postgres_version();
    run("pg_ctlcluster", &["--skip-systemctl-redirect", &version, "main", "stop", "--", "-m", "fast"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    run("pg_ctlcluster", &["--skip-systemctl-redirect", &version, "main", "start"]);
    let verified = stack.verify(&history, Duration::from_secs(120)).await;
    report("Postgres stopped (fast) and started mid-drain", 2_000, "database down 3 s", &stats, &verified);
    stack.cleanup().await;
}

#[tokio::test]
#[ignore = "restarts shared services; run with `make test-faults`"]
async fn workers_killed_with_sigkill_repeatedly() {
    let mut stack = Stack::new("f-kill").await;
    let gateway = stack.spawn_gateway().await;
    let history = History::new(100, 60);
    let stats = deliver(&history, std::slice::from_ref(&gateway.url), 32, Duration::from_secs(180)).await;
    for _ in 0..3 {
        stack.spawn_worker();
    }
    let mut kills = 0;
    while stack.processed().await < 5_000 && kills < 10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let victim = stack.children.len() - 3;
        let mut child = stack.children.remove(victim);
        let _ = child.kill();
        let _ = child.wait();
        kills += 1;
        stack.spawn_worker();
    }
    let verified = stack.verify(&history, Duration::from_secs(120)).await;
    assert!(kills >= 3, "killed mid-drain more than once ({kills})");
    report("worker SIGKILL, repeatedly, others running", 6_000, &format!("{kills} SIGKILLs"), &stats, &verified);
    stack.cleanup().await;
}

#[tokio::test]
#[ignore = "restarts shared services; run with `make test-faults`"]
async fn a_gateway_sent_sigterm_under_load() {
    let mut stack = Stack::new("f-term").await;
    stack.spawn_worker();
    let mut doomed = stack.spawn_gateway().await;
    let survivor = stack.spawn_gateway().await;
    let history = History::new(40, 25);
    let urls = vec![doomed.url.clone(), survivor.url.clone()];
    let load = deliver(&history, &urls, 32, Duration::from_secs(120));
    let mut doomed_child = doomed.child.take().unwrap();
    let inject = async {
        wait_until(Duration::from_secs(60), "load is flowing", || async { stack.processed().await >= 150 }).await;
        signal(&doomed_child, "TERM");
        let status = tokio::task::spawn_blocking(move || doomed_child.wait().unwrap()).await.unwrap();
        assert!(status.success(), "the gateway drains and exits cleanly on SIGTERM");
    };
    let (stats, ()) = tokio::join!(load, inject);
    let verified = stack.verify(&history, Duration::from_secs(120)).await;
    report("gateway SIGTERM under load (client fails over)", 32, "SIGTERM to one of two gateways", &stats, &verified);
    drop(survivor);
    stack.cleanup().await;
}

#[tokio::test]
#[ignore = "restarts shared services; run with `make test-faults`"]
async fn the_broker_path_stalls_without_closing() {
    let mut stack = Stack::new("f-stall").await;
    stack.spawn_worker();
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    // The gateway reaches RabbitMQ only through the proxy.
    let gateway = stack.spawn_gateway_via(&format!("amqp://guest:guest@{}/%2f", proxy.addr())).await;
    let history = History::new(40, 25);
    let urls = vec![gateway.url.clone()];
    let load = deliver(&history, &urls, 32, Duration::from_secs(180));
    let inject = async {
        wait_until(Duration::from_secs(60), "load is flowing", || async { stack.processed().await >= 100 }).await;
        proxy.stall();
        let started = Instant::now();
        let status = probe_status(&gateway.url).await;
        let waited = started.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.restore();
        (status, waited)
    };
    let (stats, (status, waited)) = tokio::join!(load, inject);
    assert_eq!(status, Some(503), "a stalled broker is a 503");
    assert!(waited < Duration::from_secs(5), "answered at the 2 s confirm timeout, not hung ({waited:?})");
    let verified = stack.verify(&history, Duration::from_secs(120)).await;
    report("gateway-to-broker path stalls (TCP open, no bytes)", 32, "3 s stall", &stats, &verified);
    stack.cleanup().await;
}

#[tokio::test]
#[ignore = "restarts shared services; run with `make test-faults`"]
async fn slow_clients_and_idle_connections_do_not_starve_valid_requests() {
    let mut stack = Stack::new("f-slow").await;
    stack.spawn_worker();
    let gateway = stack.spawn_gateway().await;
    let addr = gateway.url.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    // 500 slowloris clients dribbling a header byte every second, and 500 that say nothing.
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut slow = Vec::new();
    for i in 0..1_000 {
        let addr = addr.clone();
        let connected = connected.clone();
        slow.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else { return };
            connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if i % 2 == 0 {
                let _ = s.write_all(b"POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n").await;
                for _ in 0..30 {
                    if s.write_all(b"X").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            } else {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }));
    }
    wait_until(Duration::from_secs(20), "the slow connections are open", || async {
        connected.load(std::sync::atomic::Ordering::SeqCst) >= 1_000
    })
    .await;
    let history = History::new(25, 20);
    let started = Instant::now();
    let stats = deliver(&history, std::slice::from_ref(&gateway.url), 16, Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "valid requests were not starved ({took:?} for 500)");
    for s in slow {
        s.abort();
    }
    let verified = stack.verify(&history, Duration::from_secs(60)).await;
    report(
        "1,000 slowloris/idle connections beside valid traffic",
        16,
        &format!("valid load took {took:?}"),
        &stats,
        &verified,
    );
    stack.cleanup().await;
}

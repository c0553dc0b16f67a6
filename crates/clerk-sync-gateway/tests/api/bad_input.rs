//! Hostile and broken requests: each gets a clear 4xx (or, when authentic, is kept), never a 5xx,
//! never a crash, and the gateway keeps serving.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

async fn still_serving(app: &TestApp) {
    let (_, response) = app.post_signed(&user_event("user.created", "user_alive")).await;
    assert_eq!(response.status(), 202, "the gateway still serves valid requests");
}

#[tokio::test]
async fn huge_and_repetitive_signature_headers_are_refused_with_a_4xx() {
    let app = spawn_app().await;
    let body = user_event("user.updated", "user_1");
    let id = new_id();
    let ts = now().to_string();
    for signature in ["v1,".to_owned() + &"A".repeat(60_000), vec!["v1,AAAA"; 1_500].join(" ")] {
        let response = app
            .client
            .post(app.webhook_url())
            .header("svix-id", &id)
            .header("svix-timestamp", &ts)
            .header("svix-signature", signature)
            .body(body.clone())
            .send()
            .await;
        if let Ok(response) = response {
            let status = response.status().as_u16();
            assert!((400..500).contains(&status), "a 4xx, got {status}");
        }
        // Otherwise the server closed the connection on an oversized header block, which is also
        // a refusal without a 5xx.
    }
    assert_eq!(app.main_queue_len().await, 0);
    still_serving(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_signed_deeply_nested_body_is_kept_as_a_dead_letter_not_a_crash() {
    let app = spawn_app().await;
    let nested = format!(r#"{{"type":"user.created","data":{}1{}}}"#, "[".repeat(50_000), "]".repeat(50_000));
    let (_, response) = app.post_signed(nested.as_bytes()).await;
    assert_eq!(response.status(), 202);
    assert_eq!(json(response).await["status"], "dead_lettered");
    still_serving(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_non_utf8_body_is_a_bad_request() {
    let app = spawn_app().await;
    let id = new_id();
    let response = app
        .client
        .post(app.webhook_url())
        .header("svix-id", &id)
        .header("svix-timestamp", now().to_string())
        .header("svix-signature", sign(SECRET, &id, now(), b"{}"))
        .body(vec![0xff, 0xfe, 0x00, 0x7b])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(json(response).await["error"], "invalid_body");
    app.stop().await;
}

#[tokio::test]
async fn the_same_svix_id_replayed_with_a_fresh_signature_is_accepted_and_left_to_deduplication() {
    let app = spawn_app().await;
    let body = user_event("user.updated", "user_1");
    let id = new_id();
    for ts in [now() - 60, now()] {
        assert_eq!(app.post_signed_as(&id, SECRET, ts, &body).await.status(), 202);
    }
    let queued = app.probe.drain(&app.topology.queue(), Duration::from_millis(200)).await;
    assert_eq!(queued.len(), 2, "both are queued; the worker applies the id once (see the worker's tests)");
    assert!(queued.iter().all(|m| m.delivery.properties.message_id().as_ref().unwrap().as_str() == id));
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_408_and_does_not_block_others() {
    let app = spawn_app_with(|s| s.with_env("CLERK_SYNC__GATEWAY__REQUEST_TIMEOUT", "1s")).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Headers that pass every check made before the body, so only the body's deadline refuses it.
    let headers: String = forged_headers().iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let head = format!("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 1000\r\n\r\n{{\"type\":");
    slow.write_all(head.as_bytes()).await.unwrap();
    still_serving(&app).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"));
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = spawn_app_with(|s| s.with_env("CLERK_SYNC__GATEWAY__REQUEST_TIMEOUT", "1s")).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closes the connection instead of waiting forever");
    still_serving(&app).await;
    app.stop().await;
}

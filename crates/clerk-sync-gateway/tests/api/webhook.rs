//! What the gateway answers to signed, forged and malformed requests, and what reaches the queue.

use std::time::Duration;

use clerk_sync_core::amqp::{get_i64, get_str, headers};

use crate::helpers::*;

#[tokio::test]
async fn a_valid_signed_request_is_confirmed_and_exactly_one_identical_message_is_queued() {
    let app = spawn_app().await;
    let body = user_event("user.created", "user_1");

    let (id, response) = app.post_signed(&body).await;
    assert_eq!(response.status(), 202);
    let answer = json(response).await;
    assert_eq!(answer["status"], "queued");
    assert_eq!(answer["svix_id"], id.as_str());

    let messages = app.probe.drain(&app.topology.queue(), Duration::from_millis(200)).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0].delivery;
    assert_eq!(m.routing_key.as_str(), "user.created");
    assert_eq!(m.exchange.as_str(), app.topology.exchange());
    assert_eq!(m.data, body, "the body is published byte for byte");
    let p = &m.properties;
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some(id.as_str()));
    assert_eq!(p.delivery_mode(), &Some(2), "persistent");
    assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    assert!(p.timestamp().is_some());
    let h = p.headers().as_ref();
    let signed_ts = get_i64(h, headers::SVIX_TIMESTAMP).unwrap();
    assert!((signed_ts - now()).abs() < 5);
    let received = get_i64(h, headers::RECEIVED_AT).unwrap();
    assert!((received / 1000 - now()).abs() < 5);
    app.stop().await;
}

#[tokio::test]
async fn forged_requests_are_unauthorized_and_nothing_is_queued() {
    let app = spawn_app().await;
    let body = user_event("user.updated", "user_1");
    let id = new_id();
    let ts = now();

    let tampered = app
        .client
        .post(app.webhook_url())
        .header("svix-id", &id)
        .header("svix-timestamp", ts.to_string())
        .header("svix-signature", sign(SECRET, &id, ts, &body))
        .body(user_event("user.deleted", "user_1"))
        .send()
        .await
        .unwrap();
    let wrong_secret = app.post_signed_as(&new_id(), OTHER_SECRET, ts, &body).await;
    let stale = app.post_signed_as(&new_id(), SECRET, ts - 600, &body).await;
    let future = app.post_signed_as(&new_id(), SECRET, ts + 600, &body).await;

    for (name, response, code) in [
        ("tampered body", tampered, "invalid_signature"),
        ("wrong secret", wrong_secret, "invalid_signature"),
        ("stale timestamp", stale, "timestamp_out_of_tolerance"),
        ("future timestamp", future, "timestamp_out_of_tolerance"),
    ] {
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(json(response).await["error"], code, "{name}");
    }
    assert_eq!(app.main_queue_len().await, 0);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"clerk_sync_gateway_verification_failures_total{reason="invalid_signature"} 2"#),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn each_missing_or_malformed_header_is_a_bad_request_and_nothing_is_queued() {
    let app = spawn_app().await;
    let body = user_event("user.created", "user_1");
    let id = new_id();
    let ts = now().to_string();
    let signature = sign(SECRET, &id, now(), &body);
    let full = [("svix-id", id.as_str()), ("svix-timestamp", ts.as_str()), ("svix-signature", signature.as_str())];

    for skip in 0..3 {
        let mut request = app.client.post(app.webhook_url()).body(body.clone());
        for (i, (name, value)) in full.iter().enumerate() {
            if i != skip {
                request = request.header(*name, *value);
            }
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "without {}", full[skip].0);
        let answer = json(response).await;
        assert_eq!(answer["error"], "missing_header");
        assert_eq!(answer["message"], format!("missing {} header", full[skip].0));
    }
    for (name, bad) in [("svix-timestamp", "yesterday"), ("svix-signature", "not-a-signature"), ("svix-id", "")] {
        let mut request = app.client.post(app.webhook_url()).body(body.clone());
        for (n, v) in full {
            request = request.header(n, if n == name { bad } else { v });
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "malformed {name}");
        assert_eq!(json(response).await["error"], "malformed_header", "malformed {name}");
    }
    assert_eq!(app.main_queue_len().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_empty_body_is_a_bad_request() {
    let app = spawn_app().await;
    let (_, response) = app.post_signed(b"").await;
    assert_eq!(response.status(), 400);
    assert_eq!(json(response).await["error"], "empty_body");
    assert_eq!(app.main_queue_len().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_whether_announced_or_streamed() {
    let app = spawn_app_with(|s| s.with_env("CLERK_SYNC__GATEWAY__MAX_BODY_SIZE", "4096")).await;
    let big = vec![b'x'; 4097];
    let (_, response) = app.post_signed(&big).await;
    assert_eq!(response.status(), 413);
    assert_eq!(json(response).await["error"], "payload_too_large");

    // Chunked, so no Content-Length announces the size: the limit still holds while streaming. The
    // signature is well formed (a `v1,AAAA` would be refused before the body).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..5).map(|_| Ok(vec![b'y'; 1024])).collect();
    let stream = futures_util::stream::iter(chunks);
    let id = new_id();
    let response = app
        .client
        .post(app.webhook_url())
        .header("svix-id", &id)
        .header("svix-timestamp", now().to_string())
        .header("svix-signature", sign(OTHER_SECRET, &id, now(), b"whatever"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // Exactly at the limit is fine (it fails later, as a forgery, not as too large).
    let response = app.post_signed_as(&new_id(), OTHER_SECRET, now(), &vec![b'{'; 4096]).await;
    assert_eq!(response.status(), 401);
    assert_eq!(app.main_queue_len().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn with_two_secrets_configured_requests_signed_by_either_pass() {
    let app = spawn_app_with(|s| s.with_env("CLERK_WEBHOOK_SIGNING_SECRET", format!("{SECRET},{OTHER_SECRET}"))).await;
    let body = user_event("user.created", "user_1");
    for secret in [SECRET, OTHER_SECRET] {
        let response = app.post_signed_as(&new_id(), secret, now(), &body).await;
        assert_eq!(response.status(), 202, "signed with {}", &secret[..10]);
    }
    let response = app.post_signed_as(&new_id(), "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", now(), &body).await;
    assert_eq!(response.status(), 401);
    assert_eq!(app.probe.drain(&app.topology.queue(), Duration::from_millis(200)).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn standard_webhooks_header_names_are_accepted() {
    let app = spawn_app().await;
    let body = user_event("user.created", "user_1");
    let id = new_id();
    let ts = now();
    let response = app
        .client
        .post(app.webhook_url())
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(SECRET, &id, ts, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn a_signed_body_that_is_not_a_clerk_envelope_is_dead_lettered_with_its_reason() {
    let app = spawn_app().await;
    let cases: [(&[u8], &str); 3] = [
        (b"this is not json", "not_an_envelope"),
        (br#"{"type":"user.created","data":[]}"#, "data_not_an_object"),
        (br#"{"type":"user created!","data":{}}"#, "bad_event_type"),
    ];
    for (body, kind) in cases {
        let (id, response) = app.post_signed(body).await;
        assert_eq!(response.status(), 202);
        let answer = json(response).await;
        assert_eq!(answer["status"], "dead_lettered");
        assert_eq!(answer["reason"], kind);
        let dead = app.probe.drain(&app.topology.dead_queue(), Duration::from_millis(200)).await;
        assert_eq!(dead.len(), 1, "{kind}");
        let m = &dead[0].delivery;
        assert_eq!(m.data, body);
        assert_eq!(m.properties.message_id().as_ref().unwrap().as_str(), id);
        let h = m.properties.headers().as_ref();
        assert_eq!(get_str(h, headers::ERROR_KIND).as_deref(), Some(kind));
        assert!(get_str(h, headers::ERROR).is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(app.main_queue_len().await, 0, "nothing routed as an event");
    app.stop().await;
}

#[tokio::test]
async fn other_methods_and_paths_get_clear_json_errors() {
    let app = spawn_app().await;
    let get = app.client.get(app.webhook_url()).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(json(get).await["error"], "method_not_allowed");
    let other = app.client.post(format!("{}/webhooks/other", app.address)).send().await.unwrap();
    assert_eq!(other.status(), 404);
    // The admin endpoints are not on the public port.
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    assert_eq!(metrics.status(), 404);
    app.stop().await;
}

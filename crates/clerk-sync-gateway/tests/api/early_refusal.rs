//! Requests whose headers already say no are answered before a byte of their body is read, so an
//! unauthenticated client cannot make the gateway wait for (and buffer) a body it will refuse.
//! Each test announces a body and never sends it: only an answer given from the head alone comes
//! back before the (long) request timeout.

use std::time::Duration;

use crate::helpers::*;

/// Far longer than the tests wait: an answer that needed the body would come as a 408 after this.
const REQUEST_TIMEOUT: &str = "60s";
const PROMPTLY: Duration = Duration::from_secs(5);

async fn app() -> TestApp {
    spawn_app_with(|s| s.with_env("CLERK_SYNC__GATEWAY__REQUEST_TIMEOUT", REQUEST_TIMEOUT)).await
}

async fn answer_without_body(app: &TestApp, headers: &[(&str, String)], length: usize) -> RawResponse {
    let mut request = app.raw_request(headers, Framing::Length(length)).await;
    request.response(PROMPTLY).await.expect("an answer before the body is sent")
}

#[tokio::test]
async fn a_request_without_svix_headers_is_refused_before_its_body_arrives() {
    let app = app().await;
    // The request: over the (new) limit, so refused as too large.
    let answer = answer_without_body(&app, &[], 1_000_000).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    // Within the limit: refused for its missing headers.
    let answer = answer_without_body(&app, &[], 100_000).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("missing_header"), "{answer:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_stale_or_future_timestamp_is_refused_before_its_body_arrives() {
    let app = app().await;
    for skew in [-3_600, 3_600] {
        let mut headers = forged_headers();
        headers[1].1 = (now() + skew).to_string();
        let answer = answer_without_body(&app, &headers, 1_000).await;
        assert_eq!(answer.status, 401, "{answer:?}");
        assert!(answer.body.contains("timestamp_out_of_tolerance"), "{answer:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_signature_header_that_can_never_match_is_refused_before_its_body_arrives() {
    let app = app().await;
    // Not `v1,<base64>` at all: malformed, as verification would say.
    let mut headers = forged_headers();
    headers[2].1 = "garbage".to_owned();
    let answer = answer_without_body(&app, &headers, 1_000).await;
    assert_eq!((answer.status, answer.body.contains("malformed_header")), (400, true), "{answer:?}");
    // Well formed, but no `v1` entry has the shape of an HMAC-SHA256: no body could match it.
    for signature in [
        "v1,AAAA",
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1O!=",
    ] {
        let mut headers = forged_headers();
        headers[2].1 = signature.to_owned();
        let answer = answer_without_body(&app, &headers, 1_000).await;
        assert_eq!((answer.status, answer.body.contains("invalid_signature")), (401, true), "{signature}: {answer:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_announced_oversize_body_is_refused_at_once_even_without_svix_headers() {
    let app = spawn_app_with(|s| {
        s.with_env("CLERK_SYNC__GATEWAY__REQUEST_TIMEOUT", REQUEST_TIMEOUT)
            .with_env("CLERK_SYNC__GATEWAY__MAX_BODY_SIZE", "4096")
    })
    .await;
    for headers in [vec![], forged_headers()] {
        let answer = answer_without_body(&app, &headers, 4097).await;
        assert_eq!(answer.status, 413, "{answer:?}");
        assert!(answer.body.contains("payload_too_large"), "{answer:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_refused_request_leaves_the_gateway_serving_valid_ones() {
    let app = app().await;
    let _ = answer_without_body(&app, &[], 100_000).await;
    let (_, response) = app.post_signed(&user_event("user.created", "user_after")).await;
    assert_eq!(response.status(), 202);
    app.stop().await;
}

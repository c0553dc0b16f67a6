//! The process-wide budget of body bytes held in memory: past it a request gets 503 with
//! `Retry-After`, the largest held body gives way to a smaller request, and every byte is given
//! back when its request ends. Budgets here are tiny so a few connections fill them.

use std::time::Duration;

use clerk_sync_core::samples;

use crate::helpers::*;

const BUDGET: usize = 64 * 1024;
/// Leaves less room than any event: the next one cannot fit beside it.
const HOLDER: usize = BUDGET - 100;

async fn app_with_budget() -> TestApp {
    spawn_app_with(|s| {
        s.with_env("CLERK_SYNC__GATEWAY__MAX_BUFFERED_BYTES", BUDGET.to_string())
            .with_env("CLERK_SYNC__GATEWAY__MAX_BODY_SIZE", BUDGET.to_string())
            .with_env("CLERK_SYNC__GATEWAY__REQUEST_TIMEOUT", "60s")
    })
    .await
}

async fn wait_for_buffered(app: &TestApp, what: &str, check: impl Fn(u64) -> bool) {
    clerk_sync_testkit::wait_until(Duration::from_secs(10), what, || async { check(app.buffered_body_bytes().await) })
        .await;
}

fn assert_overloaded(answer: &RawResponse) {
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains("overloaded"), "{answer:?}");
    let retry_after: u64 = answer.header("retry-after").and_then(|v| v.parse().ok()).expect("a Retry-After");
    assert!(retry_after >= 1, "{answer:?}");
}

#[tokio::test]
async fn a_body_that_does_not_fit_the_byte_budget_gets_503_with_retry_after() {
    let app = app_with_budget().await;
    let mut holder = app.raw_request(&forged_headers(), Framing::Length(60_000)).await;
    holder.send(b"{\"type\":").await.unwrap();
    wait_for_buffered(&app, "the first body holds its announced length", |b| b == 60_000).await;

    let mut refused = app.raw_request(&forged_headers(), Framing::Length(60_000)).await;
    let answer = refused.response(Duration::from_secs(5)).await.expect("an answer before the body");
    assert_overloaded(&answer);

    drop(holder);
    wait_for_buffered(&app, "a closed connection gives its bytes back", |b| b == 0).await;
    let (_, response) = app.post_signed(&user_event("user.created", "user_after")).await;
    assert_eq!(response.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn a_small_valid_request_sheds_the_largest_held_body_and_is_accepted() {
    let app = app_with_budget().await;
    let mut holder = app.raw_request(&forged_headers(), Framing::Length(HOLDER)).await;
    holder.send(b"{\"type\":").await.unwrap();
    wait_for_buffered(&app, "the forged body holds its announced length", |b| b == HOLDER as u64).await;

    let (_, response) = app.post_signed(&user_event("user.created", "user_small")).await;
    assert_eq!(response.status(), 202, "the valid request gets the room");
    let shed = holder.response(Duration::from_secs(5)).await.expect("the shed request is answered");
    assert_overloaded(&shed);
    wait_for_buffered(&app, "everything is given back", |b| b == 0).await;
    app.stop().await;
}

#[tokio::test]
async fn a_chunked_body_counts_against_the_budget_as_its_buffer_grows() {
    let app = app_with_budget().await;
    let piece = vec![b' '; 25_000];
    let mut first = app.raw_request(&forged_headers(), Framing::Chunked).await;
    first.send_chunk(&piece).await.unwrap();
    wait_for_buffered(&app, "the first chunked body is counted", |b| b >= 25_000).await;
    let mut second = app.raw_request(&forged_headers(), Framing::Chunked).await;
    second.send_chunk(&piece).await.unwrap();
    wait_for_buffered(&app, "both chunked bodies are counted", |b| b >= 50_000).await;

    // The first one grows past what is left, and it is the largest: it is the one refused.
    let _ = first.send_chunk(&piece).await;
    let answer = first.response(Duration::from_secs(5)).await.expect("the one that no longer fits is answered");
    assert_overloaded(&answer);

    // The other one kept its bytes and is read to the end (and then found forged).
    second.send_chunk(b"{}").await.unwrap();
    second.send(b"0\r\n\r\n").await.unwrap();
    let answer = second.response(Duration::from_secs(5)).await.expect("the survivor is answered");
    assert_eq!(answer.status, 401, "{answer:?}");
    wait_for_buffered(&app, "everything is given back", |b| b == 0).await;
    app.stop().await;
}

/// Clerk caps each kind of metadata at 8 KB; a `<` serialised by an HTML-escaping encoder
/// (Go's default) is six bytes. These are the largest events measured with every kind full of them.
fn largest_clerk_events() -> Vec<Vec<u8>> {
    let full = serde_json::json!({ "k": "<".repeat(8 * 1024 - 8) });
    let mut user = samples::user("user_2large000000000000000", "Large", "large@example.com", 1_716_883_200_000);
    for kind in ["public_metadata", "private_metadata", "unsafe_metadata"] {
        user[kind] = full.clone();
    }
    let mut membership = samples::membership("orgmem_large", "org_large", "user_large", "org:admin", 1_716_883_200_000);
    for kind in ["public_metadata", "private_metadata"] {
        membership[kind] = full.clone();
        membership["organization"][kind] = full.clone();
    }
    [
        samples::envelope("user.updated", user, 1_716_883_200_000),
        samples::envelope("organizationMembership.updated", membership, 1_716_883_200_000),
    ]
    .iter()
    .map(|event| event.to_string().replace('<', "\\u003c").into_bytes())
    .collect()
}

#[tokio::test]
async fn the_largest_realistic_clerk_events_fit_the_default_limits() {
    let app = spawn_app().await;
    for body in largest_clerk_events() {
        assert!(body.len() > 100_000, "the events really are large ({} bytes)", body.len());
        let (_, response) = app.post_signed(&body).await;
        assert_eq!(response.status(), 202, "a {} byte event is accepted", body.len());
    }
    app.stop().await;
}

#[tokio::test]
async fn past_max_connections_a_client_waits_until_a_connection_closes() {
    // Two workers, one connection each.
    let app = spawn_app_with(|s| s.with_env("CLERK_SYNC__GATEWAY__MAX_CONNECTIONS", "2")).await;
    let held = [
        app.raw_request(&forged_headers(), Framing::Chunked).await,
        app.raw_request(&forged_headers(), Framing::Chunked).await,
    ];
    clerk_sync_testkit::wait_until(Duration::from_secs(10), "both connections are being served", || async {
        app.metrics().await.contains("clerk_sync_gateway_in_flight_requests 2")
    })
    .await;
    let body = user_event("user.created", "user_waiting");
    let id = new_id();
    let status = {
        let late = app.post_signed_as(&id, SECRET, now(), &body);
        tokio::pin!(late);
        assert!(tokio::time::timeout(Duration::from_millis(500), &mut late).await.is_err(), "not served past the cap");
        drop(held);
        late.await.status()
    };
    assert_eq!(status, 202, "served once a connection closes");
    app.stop().await;
}

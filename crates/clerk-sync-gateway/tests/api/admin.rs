//! The admin listener: liveness, readiness and metrics, on their own port.

use crate::helpers::*;

#[tokio::test]
async fn health_readiness_and_metrics_are_served_on_the_admin_port() {
    let app = spawn_app().await;
    let health = app.client.get(format!("{}/healthz", app.admin_address)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(format!("{}/readyz", app.admin_address)).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let (_, ok) = app.post_signed(&user_event("user.created", "user_1")).await;
    assert_eq!(ok.status(), 202);
    let (_, bad) = app.post_signed(b"").await;
    assert_eq!(bad.status(), 400);

    let metrics = app.metrics().await;
    for expected in [
        r#"clerk_sync_gateway_requests_total{outcome="queued",status="202"} 1"#,
        r#"clerk_sync_gateway_requests_total{outcome="rejected",status="400"} 1"#,
        r#"clerk_sync_gateway_publish_confirm_seconds_count{result="ok"} 1"#,
        "clerk_sync_gateway_amqp_connected 1",
        "clerk_sync_gateway_in_flight_requests 0",
        "clerk_sync_gateway_body_bytes_count 1",
    ] {
        assert!(metrics.contains(expected), "missing {expected} in\n{metrics}");
    }
    app.stop().await;
}

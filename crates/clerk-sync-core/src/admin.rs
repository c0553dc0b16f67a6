//! The admin listener shared by the gateway and the worker: `/healthz` (the process is alive),
//! `/readyz` (its dependencies are usable) and `/metrics`. It binds a separate port from any public
//! listener, so probes and scraping never share a port with the internet.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus::Registry;

/// Returns `Err(reason)` while the process should not receive traffic.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What `/readyz` adds to its answer, ready or not: e.g. `amqp_node`, the broker node
/// (`host:port`) the process is connected to, so an operator sees how a fleet spreads over a
/// cluster. Values are names and addresses, never URLs (they may hold passwords).
pub type ReadinessDetails = Arc<dyn Fn() -> serde_json::Map<String, serde_json::Value> + Send + Sync>;

struct AdminState {
    registry: Registry,
    ready: ReadinessCheck,
    details: Option<ReadinessDetails>,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    let mut body = state.details.as_ref().map(|details| details()).unwrap_or_default();
    match (state.ready)() {
        Ok(()) => {
            body.insert("status".into(), "ready".into());
            HttpResponse::Ok().json(body)
        }
        Err(reason) => {
            body.insert("status".into(), "unready".into());
            body.insert("reason".into(), reason.into());
            HttpResponse::ServiceUnavailable().json(body)
        }
    }
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::encode(&state.registry))
}

/// Starts serving on `listener` (already bound, so port 0 works in tests). One worker thread:
/// scrapes and probes are rare and cheap. Signals are left to the owning process.
pub fn serve(listener: TcpListener, registry: Registry, ready: ReadinessCheck) -> std::io::Result<Server> {
    serve_with_details(listener, registry, ready, None)
}

/// As [`serve`], with `details` merged into every `/readyz` answer.
pub fn serve_with_details(
    listener: TcpListener,
    registry: Registry,
    ready: ReadinessCheck,
    details: Option<ReadinessDetails>,
) -> std::io::Result<Server> {
    let state = web::Data::new(AdminState { registry, ready, details });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    Ok(server)
}

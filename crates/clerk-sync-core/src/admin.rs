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

struct AdminState {
    registry: Registry,
    ready: ReadinessCheck,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    match (state.ready)() {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(reason) => {
            HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "unready", "reason": reason}))
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
    let state = web::Data::new(AdminState { registry, ready });
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

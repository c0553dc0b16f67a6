//! Building and running the gateway: the public listener, the admin listener and the publisher,
//! shared by `main` and the tests (`Application::build`, `port`, `run_until_stopped`).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use clerk_sync_core::admin;
use clerk_sync_core::amqp::{Publisher, PublisherOptions};
use clerk_sync_core::settings::Settings;
use clerk_sync_core::signing::Verifier;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::budget::BodyBudget;
use crate::metrics::GatewayMetrics;
use crate::routes::{self, AppState};

/// The path Clerk's dashboard is pointed at.
pub const WEBHOOK_PATH: &str = "/webhooks/clerk";

pub struct Application {
    port: u16,
    admin_port: u16,
    server: Server,
    admin: Server,
    publisher: Publisher,
    draining: Arc<AtomicBool>,
    shutdown: CancellationToken,
}

impl Application {
    /// Binds both listeners and starts connecting to RabbitMQ in the background: the gateway
    /// starts (and answers 503) even while the broker is down.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let gw = &settings.gateway;
        let registry = Registry::new();
        let metrics = GatewayMetrics::register(&registry).context("registering metrics")?;
        let verifier = Verifier::new(&settings.webhook.signing_secrets).context("loading the signing secrets")?;

        let mut options = PublisherOptions::from_settings(settings, "clerk-sync-gateway");
        options.connected_gauge = Some(metrics.amqp_connected.clone());
        let publisher = Publisher::start(options);

        let listener = TcpListener::bind(gw.listen).with_context(|| format!("binding gateway.listen {}", gw.listen))?;
        let admin_listener = TcpListener::bind(gw.admin_listen)
            .with_context(|| format!("binding gateway.admin_listen {}", gw.admin_listen))?;
        let port = listener.local_addr()?.port();
        let admin_port = admin_listener.local_addr()?.port();

        let budget = BodyBudget::new(gw.max_buffered_bytes, metrics.buffered_body_bytes.clone());
        let state = web::Data::new(AppState {
            verifier,
            publisher: publisher.clone(),
            metrics,
            max_body_size: gw.max_body_size,
            budget,
            request_timeout: gw.request_timeout,
            retry_after_secs: gw.retry_after.as_secs().max(1),
        });
        let workers = match gw.http_workers {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .service(
                    web::resource(WEBHOOK_PATH)
                        .route(web::post().to(routes::receive))
                        .default_service(web::to(routes::method_not_allowed)),
                )
                .default_service(web::to(routes::not_found))
        })
        .workers(workers)
        // actix counts per worker; the setting is for the process (the budget of memory it bounds).
        .max_connections(gw.max_connections.div_ceil(workers))
        .backlog(4096)
        // Answers are small and go out as soon as the broker confirms: with Nagle's algorithm a
        // response could wait for the client's delayed ACK of the previous one (tens of ms).
        .tcp_nodelay(true)
        // Slow clients: headers must arrive within the request timeout; bodies are bounded by
        // the same deadline in the handler.
        .client_request_timeout(gw.request_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .shutdown_timeout(gw.shutdown_timeout.as_secs().max(1))
        .disable_signals()
        .listen(listener)?
        .run();

        let draining = Arc::new(AtomicBool::new(false));
        let ready: admin::ReadinessCheck = {
            let publisher = publisher.clone();
            let draining = draining.clone();
            Arc::new(move || {
                if draining.load(Ordering::SeqCst) {
                    Err("shutting down".to_owned())
                } else if publisher.is_connected() {
                    Ok(())
                } else {
                    Err("not connected to RabbitMQ".to_owned())
                }
            })
        };
        let details: admin::ReadinessDetails = {
            let publisher = publisher.clone();
            Arc::new(move || {
                let mut details = serde_json::Map::new();
                details.insert("amqp_node".into(), publisher.node().into());
                details
            })
        };
        let admin = admin::serve_with_details(admin_listener, registry, ready, Some(details))?;
        Ok(Self { port, admin_port, server, admin, publisher, draining, shutdown: CancellationToken::new() })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Cancelling this token shuts the gateway down as SIGTERM would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, SIGINT or the shutdown token; then stops accepting, lets in-flight
    /// requests finish (their confirms included), and closes the AMQP connection cleanly.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let server_handle = self.server.handle();
        let admin_handle = self.admin.handle();
        let mut server = tokio::spawn(self.server);
        let admin = tokio::spawn(self.admin);
        tracing::info!(port = self.port, admin_port = self.admin_port, "gateway listening");

        let early_exit = tokio::select! {
            () = clerk_sync_core::shutdown::signal() => None,
            () = self.shutdown.cancelled() => None,
            r = &mut server => Some(r),
        };
        self.draining.store(true, Ordering::SeqCst);
        if early_exit.is_none() {
            tracing::info!("shutting down: finishing in-flight requests");
            server_handle.stop(true).await;
            let _ = server.await;
        }
        self.publisher.close().await;
        admin_handle.stop(true).await;
        let _ = admin.await;
        tracing::info!("gateway stopped");
        match early_exit {
            Some(Ok(Err(e))) => Err(e).context("the HTTP server failed"),
            Some(Err(e)) => Err(e).context("the HTTP server task panicked"),
            _ => Ok(()),
        }
    }
}

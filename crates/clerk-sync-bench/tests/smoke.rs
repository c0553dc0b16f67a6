//! Smoke test of the load generator (part of `make test`): an in-process gateway on port 0 with a
//! fresh prefix, driven for about a second at low concurrency, closed-loop then open-loop. Every
//! request must be accepted. Needs RabbitMQ, like the gateway's own tests.

use std::sync::Arc;
use std::time::Duration;

use clerk_sync_bench::corpus::Corpus;
use clerk_sync_bench::env::new_secret;
use clerk_sync_bench::http1::Target;
use clerk_sync_bench::loadgen::{self, LoadSpec};
use clerk_sync_core::amqp::Topology;
use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_gateway::Application;
use clerk_sync_testkit::{BrokerProbe, amqp_url, unique_prefix, wait_until};
use secrecy::ExposeSecret;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_drives_a_gateway_without_errors() {
    clerk_sync_core::telemetry::init_for_tests();
    let secret = new_secret();
    let prefix = unique_prefix("bench");
    let sources = Sources::default()
        .with_env("CLERK_WEBHOOK_SIGNING_SECRET", secret.expose_secret())
        .with_env("AMQP_URL", amqp_url())
        .with_env("CLERK_SYNC__AMQP__PREFIX", &prefix)
        .with_env("CLERK_SYNC__GATEWAY__LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__GATEWAY__ADMIN_LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__GATEWAY__HTTP_WORKERS", "1");
    let settings = Settings::load(&sources, &[]).expect("valid configuration");
    let app = Application::build(&settings).await.expect("gateway builds");
    let (port, admin_port) = (app.port(), app.admin_port());
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();
    wait_until(Duration::from_secs(20), "the gateway is ready", || async move {
        clerk_sync_bench::http1::get(admin, "/readyz").await.is_ok_and(|r| r.status == 200)
    })
    .await;

    let target = Target::parse(&format!("http://127.0.0.1:{port}/webhooks/clerk")).await.unwrap();
    let corpus = Arc::new(Corpus::realistic(64, 32, 9));
    for (id, rate) in [("c", None), ("o", Some(200.0))] {
        let spec = LoadSpec {
            target: target.clone(),
            secret: secret.clone(),
            concurrency: 4,
            rate,
            duration: Duration::from_millis(700),
            warmup: Duration::from_millis(200),
            corpus: corpus.clone(),
            id_prefix: format!("{id}{}", &prefix[prefix.len() - 8..]),
        };
        let report = loadgen::run(spec).await.expect("the load generator runs");
        assert_eq!(report.errors, 0, "{}", report.line());
        assert!(report.accepted > 0 && report.accepted == report.requests, "{}", report.line());
        assert!(report.latency.p99_ms > 0.0 && report.latency.p99_ms < 5_000.0, "{}", report.line());
    }

    shutdown.cancel();
    let _ = task.await;
    let topology = Topology::new(prefix, settings.amqp.delivery_limit);
    BrokerProbe::connect().await.delete_topology(&topology, &settings.worker.retry_delays).await;
}

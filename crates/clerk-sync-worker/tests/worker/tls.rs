//! Transport security as configured through the URLs: `sslmode` for Postgres, `amqps://` for
//! RabbitMQ. The local Postgres serves TLS with a self-signed certificate, which is enough to prove
//! that TLS is used when asked for and that certificate verification is real.

use std::time::Duration;

use clerk_sync_core::amqp::{Nodes, Publisher, PublisherOptions, Topology};
use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_store::db;

fn database_settings(url: &str) -> clerk_sync_core::settings::DatabaseSettings {
    Settings::load(&Sources::default().with_env("DATABASE_URL", url), &[]).unwrap().database
}

/// Whether the local server has TLS on (Debian's package does; the postgres Docker image does not).
async fn server_has_tls() -> bool {
    let plain = db::pool(&database_settings("postgres://postgres@127.0.0.1:5432/postgres"), "tls-test").unwrap();
    let on: String = sqlx::query_scalar("SHOW ssl").fetch_one(&plain).await.unwrap();
    if on != "on" {
        eprintln!("skipped: this Postgres has ssl = off, nothing to verify against");
    }
    on == "on"
}

#[tokio::test]
async fn sslmode_require_makes_the_worker_pool_use_tls() {
    if !server_has_tls().await {
        return;
    }
    let url = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=require";
    let pool = db::pool(&database_settings(url), "tls-test").unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("the local Postgres serves TLS (Debian enables it by default)");
    assert!(ssl, "the connection is encrypted");
}

#[tokio::test]
async fn sslmode_verify_full_refuses_a_certificate_it_cannot_verify() {
    if !server_has_tls().await {
        return;
    }
    let url = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=verify-full";
    let pool = db::pool(&database_settings(url), "tls-test").unwrap();
    let result = sqlx::query("SELECT 1").execute(&pool).await;
    assert!(result.is_err(), "a self-signed certificate does not pass verify-full");
}

#[tokio::test]
async fn an_amqps_url_never_falls_back_to_plaintext() {
    let publisher = Publisher::start(PublisherOptions {
        nodes: std::sync::Arc::new(
            Nodes::parse("amqps://guest:guest@127.0.0.1:5672/%2f", Duration::from_secs(5), Duration::from_secs(3))
                .unwrap(),
        ),
        connection_name: "tls-test".to_owned(),
        topology: Topology::new(clerk_sync_testkit::unique_prefix("tls"), 20),
        retry_delays: Vec::new(),
        channels: 1,
        confirm_timeout: Duration::from_secs(1),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        connected_gauge: None,
    });
    // 5672 speaks plain AMQP: a TLS client must fail the handshake rather than connect in clear.
    assert!(!publisher.wait_connected(Duration::from_secs(3)).await);
    publisher.close().await;
}

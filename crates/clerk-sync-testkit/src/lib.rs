//! Test helpers shared by every clerk-sync crate's integration tests: unique names so tests run in
//! parallel against one broker, polling instead of sleeps, a TCP proxy that can cut or stall a
//! connection, a way to look at (and clean up) what is in RabbitMQ, and Svix-signed requests.

mod broker;
#[cfg(feature = "postgres")]
mod database;
#[cfg(feature = "http")]
mod http;
mod proxy;

pub use broker::{BrokerProbe, amqp_addr, amqp_url};
#[cfg(feature = "postgres")]
pub use database::{TestDatabase, admin_url};
#[cfg(feature = "http")]
pub use http::signed_post;
pub use proxy::TcpProxy;

use std::future::Future;
use std::time::Duration;

/// A prefix no other test uses: `t-<name>-<8 hex>`.
pub fn unique_prefix(name: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t-{name}-{}", &id[..8])
}

/// Polls `check` every 20 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` every 20 ms until it returns `Some`; panics with `what` after `timeout`.
pub async fn wait_until_value<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! One database and one exchange/queue prefix per test, workers started in-process, and helpers to
//! publish events the way the gateway does and to wait for their effects.

use std::time::Duration;

use clerk_sync_core::amqp::{self, Topology, declare_topology, headers};
use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_store::db;
use clerk_sync_testkit::{BrokerProbe, TestDatabase, amqp_url, unique_prefix, wait_until};
use clerk_sync_worker::Application;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const RETRY_DELAYS: &str = "200ms,400ms";

pub struct TestEnv {
    pub db: TestDatabase,
    pub pool: PgPool,
    pub prefix: String,
    pub topology: Topology,
    pub probe: BrokerProbe,
}

pub struct RunningWorker {
    pub admin_port: u16,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn retry_delays() -> Vec<Duration> {
    RETRY_DELAYS.split(',').map(humantime_ms).collect()
}

fn humantime_ms(d: &str) -> Duration {
    Duration::from_millis(d.trim_end_matches("ms").parse().unwrap())
}

/// A migrated database and a declared topology with a fresh prefix.
pub async fn setup(label: &str) -> TestEnv {
    clerk_sync_core::telemetry::init_for_tests();
    let db = TestDatabase::create(label).await;
    let pool = db.connect().await;
    db::migrate(&pool).await.expect("migrations apply");
    let prefix = unique_prefix(label);
    let topology = Topology::new(prefix.clone(), 20);
    let probe = BrokerProbe::connect().await;
    declare_topology(probe.channel(), &topology, &retry_delays()).await.expect("topology");
    TestEnv { db, pool, prefix, topology, probe }
}

impl TestEnv {
    pub fn sources(&self) -> Sources {
        Sources::default()
            .with_env("AMQP_URL", amqp_url())
            .with_env("DATABASE_URL", &self.db.url)
            .with_env("CLERK_SYNC__AMQP__PREFIX", &self.prefix)
            .with_env("CLERK_SYNC__AMQP__RECONNECT_MIN_BACKOFF", "50ms")
            .with_env("CLERK_SYNC__AMQP__RECONNECT_MAX_BACKOFF", "500ms")
            .with_env("CLERK_SYNC__WORKER__ADMIN_LISTEN", "127.0.0.1:0")
            .with_env("CLERK_SYNC__WORKER__PREFETCH", "64")
            .with_env("CLERK_SYNC__WORKER__BATCH_SIZE", "32")
            .with_env("CLERK_SYNC__WORKER__BATCH_LINGER", "2ms")
            .with_env("CLERK_SYNC__WORKER__MAX_ATTEMPTS", "3")
            .with_env("CLERK_SYNC__WORKER__RETRY_DELAYS", RETRY_DELAYS)
            .with_env("CLERK_SYNC__WORKER__SHUTDOWN_TIMEOUT", "10s")
            .with_env("CLERK_SYNC__DATABASE__ACQUIRE_TIMEOUT", "1s")
    }

    pub async fn start_worker(&self) -> RunningWorker {
        self.start_worker_with(|s| s).await
    }

    pub async fn start_worker_with(&self, customize: impl FnOnce(Sources) -> Sources) -> RunningWorker {
        let settings = Settings::load(&customize(self.sources()), &[]).expect("valid test configuration");
        let app = Application::build(&settings).await.expect("worker builds");
        let admin_port = app.admin_port();
        let shutdown = app.shutdown_token();
        let task = tokio::spawn(app.run_until_stopped());
        RunningWorker { admin_port, shutdown, task }
    }

    /// Publishes an event as the gateway would: routing key = type, message id = svix-id.
    pub async fn publish(&self, svix_id: &str, body: &[u8]) {
        let routing_key = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .filter(|t| clerk_sync_core::envelope::is_valid_type(t))
            .unwrap_or_else(|| "unparseable".to_owned());
        let mut table = FieldTable::default();
        amqp::put_i64(&mut table, headers::SVIX_TIMESTAMP, chrono::Utc::now().timestamp());
        amqp::put_i64(&mut table, headers::RECEIVED_AT, amqp::now_ms());
        let properties = BasicProperties::default()
            .with_message_id(svix_id.into())
            .with_content_type("application/json".into())
            .with_headers(table);
        self.probe.publish(&self.topology.exchange(), &routing_key, body, properties).await;
    }

    pub async fn publish_event(&self, svix_id: &str, event: &Value) {
        self.publish(svix_id, event.to_string().as_bytes()).await;
    }

    pub async fn processed(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM clerk.webhook_events WHERE outcome IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn wait_processed(&self, n: i64, timeout: Duration) {
        wait_until(timeout, &format!("{n} events are processed"), || async { self.processed().await >= n }).await;
        assert_eq!(self.processed().await, n, "no more than {n} events recorded");
    }

    pub async fn outcome(&self, svix_id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT outcome FROM clerk.webhook_events WHERE svix_id = $1")
            .bind(svix_id)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
            .flatten()
    }

    /// A whole table as JSON rows ordered by id, without `synced_at` (which differs by design).
    pub async fn table(&self, name: &str) -> Vec<Value> {
        let sql = format!("SELECT to_jsonb(t) - 'synced_at' FROM clerk.{name} t ORDER BY id");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await.unwrap()
    }

    pub async fn row(&self, table: &str, id: &str) -> Option<Value> {
        let sql = format!("SELECT to_jsonb(t) FROM clerk.{table} t WHERE id = $1");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await.unwrap()
    }

    pub async fn dead_letters(&self, settle: Duration) -> Vec<lapin::message::BasicGetMessage> {
        self.probe.drain(&self.topology.dead_queue(), settle).await
    }

    pub async fn metrics(&self, worker: &RunningWorker) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", worker.admin_port)).await.unwrap().text().await.unwrap()
    }

    pub async fn cleanup(self) {
        self.probe.delete_topology(&self.topology, &retry_delays()).await;
        self.pool.close().await;
        self.db.drop_now().await;
    }
}

impl RunningWorker {
    /// A graceful stop, as on SIGTERM.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the worker stops in time")
            .expect("no panic")
            .expect("a clean stop");
    }
}

/// A worker as a separate OS process (the real binary), so it can be killed with SIGKILL.
pub struct WorkerProcess {
    pub child: std::process::Child,
}

impl TestEnv {
    pub fn spawn_worker_process(&self) -> WorkerProcess {
        let sources = self.sources().with_env("CLERK_SYNC__LOG__LEVEL", "warn");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync-worker"))
            .current_dir(std::env::temp_dir())
            .env_clear()
            .envs(&sources.env)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn the worker binary");
        WorkerProcess { child }
    }
}

impl WorkerProcess {
    /// SIGKILL: no shutdown, no acks, no clean close.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn svix_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

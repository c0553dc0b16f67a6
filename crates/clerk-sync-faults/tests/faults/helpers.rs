//! A stack of real processes (gateways and workers from `target/debug`), a Svix-like client that
//! retries until it gets a 2xx, and the checks every scenario ends with.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clerk_sync_core::amqp::{Topology, declare_topology};
use clerk_sync_core::samples::{envelope, user};
use clerk_sync_testkit::{BrokerProbe, TestDatabase, amqp_url, signed_post, unique_prefix, wait_until};
use secrecy::SecretString;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const T: i64 = 1_716_883_200_000;

fn bin(name: &str) -> PathBuf {
    // target/debug/deps/faults-<hash> -> target/debug/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|p| p.parent()).unwrap().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` first", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Stack {
    pub db: TestDatabase,
    pub pool: sqlx::PgPool,
    pub prefix: String,
    pub topology: Topology,
    pub children: Vec<Child>,
    /// What the gateways and workers get as `AMQP_URL` (the cluster suite: all three nodes).
    pub amqp: String,
}

impl Drop for Stack {
    /// A failed scenario must not leave processes behind (they would hold the test's output open).
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Gateway {
    pub child: Option<Child>,
    pub url: String,
    /// The admin listener (`/readyz`, `/metrics`), e.g. `http://127.0.0.1:9091`.
    #[allow(dead_code, reason = "the cluster suite asks /readyz which node the gateway is on")]
    pub admin: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Stack {
    pub async fn new(label: &str) -> Self {
        let db = TestDatabase::create(label).await;
        let pool = db.connect().await;
        let status = Command::new(bin("clerk-sync-worker"))
            .arg("migrate")
            .env_clear()
            .env("DATABASE_URL", &db.url)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "migrations apply");
        let prefix = unique_prefix(label);
        let topology = Topology::new(prefix.clone(), 20);
        let probe = BrokerProbe::connect().await;
        declare_topology(probe.channel(), &topology, &retry_delays()).await.unwrap();
        Self { db, pool, prefix, topology, children: Vec::new(), amqp: amqp_url() }
    }

    fn env(&self, cmd: &mut Command, database_url: &str) {
        cmd.current_dir(std::env::temp_dir())
            .env_clear()
            .env("AMQP_URL", &self.amqp)
            .env("DATABASE_URL", database_url)
            .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
            .env("CLERK_SYNC__AMQP__PREFIX", &self.prefix)
            .env("CLERK_SYNC__AMQP__RECONNECT_MIN_BACKOFF", "100ms")
            .env("CLERK_SYNC__AMQP__RECONNECT_MAX_BACKOFF", "1s")
            .env("CLERK_SYNC__AMQP__CONFIRM_TIMEOUT", "2s")
            .env("CLERK_SYNC__WORKER__RETRY_DELAYS", "1s,10s,1m,10m")
            .env("CLERK_SYNC__WORKER__ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("CLERK_SYNC__DATABASE__ACQUIRE_TIMEOUT", "1s")
            .env("CLERK_SYNC__LOG__LEVEL", "error")
            .stdout(Stdio::null());
    }

    pub fn spawn_worker(&mut self) -> u32 {
        self.spawn_worker_with(&[])
    }

    /// A worker with some settings overridden (`CLERK_SYNC__...` variables).
    pub fn spawn_worker_with(&mut self, vars: &[(&str, &str)]) -> u32 {
        let mut cmd = Command::new(bin("clerk-sync-worker"));
        self.env(&mut cmd, &self.db.url.clone());
        cmd.envs(vars.iter().copied());
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    pub async fn spawn_gateway(&self) -> Gateway {
        self.spawn_gateway_via(&self.amqp.clone()).await
    }

    /// A gateway reaching RabbitMQ at `amqp` (e.g. through a proxy).
    pub async fn spawn_gateway_via(&self, amqp: &str) -> Gateway {
        let port = free_port();
        let admin = free_port();
        let mut cmd = Command::new(bin("clerk-sync-gateway"));
        self.env(&mut cmd, &self.db.url);
        cmd.env("AMQP_URL", amqp);
        cmd.env("CLERK_SYNC__GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
            .env("CLERK_SYNC__GATEWAY__ADMIN_LISTEN", format!("127.0.0.1:{admin}"));
        let child = cmd.spawn().unwrap();
        let ready = format!("http://127.0.0.1:{admin}/readyz");
        wait_until(Duration::from_secs(20), "the gateway is ready", || {
            let ready = ready.clone();
            async move { reqwest::get(ready).await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        Gateway {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}/webhooks/clerk"),
            admin: format!("http://127.0.0.1:{admin}"),
        }
    }

    pub async fn processed(&self) -> i64 {
        // Probes sent while a fault is active may legitimately arrive later (a 503 does not mean
        // "never delivered"; Svix would retry the same id): they are not part of the history.
        sqlx::query_scalar(
            "SELECT count(*) FROM clerk.webhook_events WHERE outcome IS NOT NULL AND svix_id NOT LIKE 'msg_probe_%'",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap_or(-1)
    }

    /// Waits until `n` distinct events are committed, then checks the final state and the queues.
    pub async fn verify(&self, history: &History, timeout: Duration) -> Verified {
        let n = history.events.len() as i64;
        wait_until(timeout, &format!("{n} events are committed"), || async { self.processed().await >= n }).await;
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT id, first_name FROM clerk.users ORDER BY id").fetch_all(&self.pool).await.unwrap();
        assert_eq!(rows.len(), history.users, "one row per user");
        for (id, first_name) in &rows {
            assert_eq!(first_name.as_deref(), Some(history.latest(id).as_str()), "{id} ends at its newest version");
        }
        let recorded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM clerk.webhook_events WHERE svix_id NOT LIKE 'msg_probe_%'")
                .fetch_one(&self.pool)
                .await
                .unwrap();
        let probe = BrokerProbe::connect().await;
        let dead = probe.ready_count(&self.topology.dead_queue()).await;
        assert_eq!(recorded, n, "every accepted event recorded exactly once");
        assert_eq!(dead, 0, "nothing dead-lettered");
        Verified { committed: recorded, dead_letters: dead }
    }

    pub async fn cleanup(mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        BrokerProbe::connect().await.delete_topology(&self.topology, &retry_delays()).await;
        self.pool.close().await;
        let db = TestDatabase { name: self.db.name.clone(), url: self.db.url.clone() };
        db.drop_now().await;
    }
}

pub fn retry_delays() -> Vec<Duration> {
    [1, 10, 60, 600].into_iter().map(Duration::from_secs).collect()
}

pub struct Verified {
    pub committed: i64,
    pub dead_letters: u32,
}

/// `users` users with `updates` versions each, as signed-ready events in history order.
pub struct History {
    pub users: usize,
    pub events: Vec<(String, Vec<u8>)>,
    updates: usize,
}

impl History {
    pub fn new(users: usize, updates: usize) -> Self {
        let mut events = Vec::new();
        for k in 0..updates {
            for u in 0..users {
                let id = format!("user_{u:04}");
                let ts = T + i64::try_from(k).unwrap();
                let body = envelope("user.updated", user(&id, &format!("v{k}"), "f@example.com", ts), ts);
                events.push((format!("msg_{}", uuid::Uuid::new_v4().simple()), body.to_string().into_bytes()));
            }
        }
        Self { users, events, updates }
    }

    pub fn latest(&self, _id: &str) -> String {
        format!("v{}", self.updates - 1)
    }
}

/// What the Svix-like client saw.
#[derive(Default)]
pub struct ClientStats {
    pub accepted: AtomicU64,
    pub not_2xx: AtomicU64,
    pub unreachable: AtomicU64,
}

/// Delivers every event like Svix: retry anything but a 2xx (here after 100 ms, not minutes) until
/// accepted; at most `concurrency` in flight; events go to the gateways round-robin.
pub async fn deliver(
    history: &History,
    gateways: &[String],
    concurrency: usize,
    deadline: Duration,
) -> Arc<ClientStats> {
    let stats = Arc::new(ClientStats::default());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let secret = SecretString::from(SECRET.to_owned());
    let until = Instant::now() + deadline;
    let jobs = history.events.iter().enumerate().map(|(i, (id, body))| {
        let (client, secret, stats) = (client.clone(), secret.clone(), stats.clone());
        let mut target = i;
        async move {
            loop {
                assert!(Instant::now() < until, "event {id} was never accepted");
                let url = &gateways[target % gateways.len()];
                target += 1;
                let ts = chrono::Utc::now().timestamp();
                let sent = signed_post(&client, url, &secret, id, ts, body).send().await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        stats.accepted.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) => stats.not_2xx.fetch_add(1, Ordering::Relaxed),
                    Err(_) => stats.unreachable.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    futures_util::stream::iter(jobs).for_each_concurrent(concurrency, |job| job).await;
    stats
}

/// One line per scenario, for the suite's summary.
pub fn report(scenario: &str, in_flight: usize, injected: &str, stats: &ClientStats, verified: &Verified) {
    println!(
        "FAULT | {scenario} | in flight: {in_flight} | injected: {injected} | client saw: {} accepted, {} non-2xx, {} unreachable | verified: {} committed exactly once, {} dead letters, lost: 0",
        stats.accepted.load(Ordering::Relaxed),
        stats.not_2xx.load(Ordering::Relaxed),
        stats.unreachable.load(Ordering::Relaxed),
        verified.committed,
        verified.dead_letters,
    );
}

pub fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    assert!(status.success(), "{cmd} {args:?} failed");
}

pub fn postgres_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .unwrap()
}

pub fn signal(child: &Child, sig: &str) {
    run("kill", &[&format!("-{sig}"), &child.id().to_string()]);
}

use futures_util::StreamExt;

//! Running the binary with a test's configuration, and seeding the dead-letter queue the way the
//! worker fills it.

use std::process::{Command, Output};
use std::time::Duration;

use clerk_sync_core::amqp::{self, Topology, declare_topology, headers};
use clerk_sync_testkit::{BrokerProbe, amqp_url, unique_prefix};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub struct Env {
    pub prefix: String,
    pub topology: Topology,
    pub probe: BrokerProbe,
    pub vars: Vec<(String, String)>,
}

pub async fn env(label: &str) -> Env {
    let prefix = unique_prefix(label);
    let topology = Topology::new(prefix.clone(), 20);
    let probe = BrokerProbe::connect().await;
    declare_topology(probe.channel(), &topology, &[]).await.unwrap();
    let vars = vec![
        ("AMQP_URL".to_owned(), amqp_url()),
        ("CLERK_SYNC__AMQP__PREFIX".to_owned(), prefix.clone()),
        ("CLERK_WEBHOOK_SIGNING_SECRET".to_owned(), SECRET.to_owned()),
        ("CLERK_SYNC__LOG__LEVEL".to_owned(), "warn".to_owned()),
    ];
    Env { prefix, topology, probe, vars }
}

impl Env {
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.vars.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clerk-sync"));
        cmd.current_dir(std::env::temp_dir()).env_clear().envs(self.vars.iter().map(|(k, v)| (k, v))).args(args);
        cmd
    }

    /// Runs the CLI to completion (stdin is not a terminal).
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        tokio::task::spawn_blocking(move || cmd.stdin(std::process::Stdio::null()).output().unwrap()).await.unwrap()
    }

    /// Runs with some variables overridden.
    pub async fn run_with(&self, vars: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.envs(vars.iter().copied());
        tokio::task::spawn_blocking(move || cmd.stdin(std::process::Stdio::null()).output().unwrap()).await.unwrap()
    }

    /// Runs with `--json` and parses stdout; panics with stderr if it failed.
    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.run(&full).await;
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// A dead letter as the worker writes one.
    pub async fn dead_letter(&self, svix_id: &str, event_type: &str, kind: &str, first_failed_at_ms: i64) {
        let body = clerk_sync_core::samples::sample(event_type, 1_716_883_200_000).unwrap().to_string();
        let properties = dead_letter_properties(svix_id, event_type, kind, first_failed_at_ms);
        self.probe.publish(&self.topology.dead_exchange(), event_type, body.as_bytes(), properties).await;
    }

    /// `n` dead letters `<id_prefix><i:05>` (types alternating user.updated / organization.created),
    /// published with a window of outstanding confirms so that thousands take a second, not minutes.
    pub async fn dead_letters(&self, id_prefix: &str, n: usize) -> Vec<String> {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let ids: Vec<String> = (0..n).map(|i| format!("{id_prefix}{i:05}")).collect();
        let bodies =
            [TYPES[0], TYPES[1]].map(|t| clerk_sync_core::samples::sample(t, 1_716_883_200_000).unwrap().to_string());
        let exchange = self.topology.dead_exchange();
        let mut confirms = futures_util::stream::FuturesOrdered::new();
        for (i, id) in ids.iter().enumerate() {
            let event_type = TYPES[i % 2];
            let properties = dead_letter_properties(id, event_type, "database_error", amqp::now_ms());
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    event_type.into(),
                    BasicPublishOptions { mandatory: true, immediate: false },
                    bodies[i % 2].as_bytes(),
                    properties.with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirms.push_back(confirm);
            if confirms.len() >= 512 {
                let confirmed = confirms.next().await.unwrap().unwrap();
                assert!(matches!(confirmed, Confirmation::Ack(None)), "{confirmed:?}");
            }
        }
        while let Some(confirmed) = confirms.next().await {
            assert!(matches!(confirmed.unwrap(), Confirmation::Ack(None)));
        }
        let _ = connection.close(200, "seeded".into()).await;
        ids
    }

    /// Takes (and acks) everything ready in `queue`, in queue order, with a consumer (the probe's
    /// `basic_get` manages a few hundred a second): each message's svix-id and how often RabbitMQ
    /// had delivered it before (`x-delivery-count`; 0 for a message nobody ever took).
    pub async fn drain(&self, queue: &str) -> Vec<(String, i64)> {
        let n = self.probe.ready_count(queue).await as usize;
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel.basic_qos(1_000, BasicQosOptions::default()).await.unwrap();
        let mut consumer = channel
            .basic_consume(queue.into(), "drain".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let d = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().unwrap().unwrap();
            let p = &d.properties;
            let count = amqp::get_i64(p.headers().as_ref(), "x-delivery-count").unwrap_or(0);
            out.push((p.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default(), count));
            if out.len() % 100 == 0 || out.len() == n {
                d.acker.ack(BasicAckOptions { multiple: true }).await.unwrap();
            }
        }
        let _ = connection.close(200, "drained".into()).await;
        out
    }

    /// Consumers of the dead-letter queue right now.
    pub async fn dead_queue_consumers(&self) -> u32 {
        let channel = self.probe.channel();
        let opts = QueueDeclareOptions { passive: true, ..Default::default() };
        let q = channel.queue_declare(self.topology.dead_queue().as_str().into(), opts, FieldTable::default()).await;
        q.unwrap().consumer_count()
    }

    pub async fn drain_dead_queue(&self) -> Vec<(String, i64)> {
        self.drain(&self.topology.dead_queue()).await
    }

    /// The svix-ids in the main queue, in order (taken and acked).
    pub async fn drain_main_queue(&self) -> Vec<String> {
        self.drain(&self.topology.queue()).await.into_iter().map(|(id, _)| id).collect()
    }

    /// Deletes the queues, including the retry queues the CLI and the gateway declare with the
    /// default delays (the test itself declared none).
    pub async fn cleanup(self) {
        let defaults = clerk_sync_core::settings::Settings::load(
            &clerk_sync_core::settings::Sources { file: None, env: Default::default() },
            &[],
        )
        .unwrap();
        self.probe.delete_topology(&self.topology, &defaults.worker.retry_delays).await;
    }
}

/// The two event types [`Env::dead_letters`] alternates between.
pub const TYPES: [&str; 2] = ["user.updated", "organization.created"];

/// The properties the worker gives a dead letter.
fn dead_letter_properties(svix_id: &str, event_type: &str, kind: &str, first_failed_at_ms: i64) -> BasicProperties {
    let mut table = FieldTable::default();
    amqp::put_i64(&mut table, headers::SVIX_TIMESTAMP, 1_716_883_200);
    amqp::put_str(&mut table, headers::ERROR, &format!("{kind}: something was wrong"));
    amqp::put_str(&mut table, headers::ERROR_KIND, kind);
    amqp::put_i64(&mut table, headers::ATTEMPTS, 3);
    amqp::put_i64(&mut table, headers::FIRST_FAILED_AT, first_failed_at_ms);
    amqp::put_str(&mut table, headers::ORIGINAL_ROUTING_KEY, event_type);
    BasicProperties::default().with_message_id(svix_id.into()).with_headers(table)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Serves `handler` for every GET on a free loopback port with `data` as its app data: a local
/// fake of Clerk's Backend API. Returns its base URL and the handle that stops it.
pub async fn serve_fake<T, F, Args>(data: actix_web::web::Data<T>, handler: F) -> (String, actix_web::dev::ServerHandle)
where
    T: Send + Sync + 'static,
    F: actix_web::Handler<Args> + Send,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().app_data(data.clone()).default_service(actix_web::web::get().to(handler.clone()))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://{addr}"), handle)
}

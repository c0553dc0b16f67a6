//! Running the binary with a test's configuration, and seeding the dead-letter queue the way the
//! worker fills it.

use std::process::{Command, Output};

use clerk_sync_core::amqp::{self, Topology, declare_topology, headers};
use clerk_sync_testkit::{BrokerProbe, amqp_url, unique_prefix};
use lapin::BasicProperties;
use lapin::types::FieldTable;

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
        let mut table = FieldTable::default();
        amqp::put_i64(&mut table, headers::SVIX_TIMESTAMP, 1_716_883_200);
        amqp::put_str(&mut table, headers::ERROR, &format!("{kind}: something was wrong"));
        amqp::put_str(&mut table, headers::ERROR_KIND, kind);
        amqp::put_i64(&mut table, headers::ATTEMPTS, 3);
        amqp::put_i64(&mut table, headers::FIRST_FAILED_AT, first_failed_at_ms);
        amqp::put_str(&mut table, headers::ORIGINAL_ROUTING_KEY, event_type);
        let properties = BasicProperties::default().with_message_id(svix_id.into()).with_headers(table);
        self.probe.publish(&self.topology.dead_exchange(), event_type, body.as_bytes(), properties).await;
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

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

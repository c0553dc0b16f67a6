//! Layered configuration shared by every clerk-sync binary.
//!
//! Owns the typed [`Settings`], where each value comes from (embedded `default.toml`, an optional
//! file, `CLERK_SYNC__SECTION__KEY` variables, then the conventional names), and validation that
//! reports every problem at once. Parsing of individual values lives in `fields.rs`, the redacted
//! rendering for `--check-config` in `render.rs`.

pub mod cli;
mod fields;
mod render;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use fields::Fields;
pub use render::redact_url;

/// The documented defaults, compiled in so a binary runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Prefix of the structured environment variables (`CLERK_SYNC__GATEWAY__LISTEN`).
pub const ENV_PREFIX: &str = "CLERK_SYNC";
/// Environment variable naming an optional configuration file.
pub const CONFIG_FILE_ENV: &str = "CLERK_SYNC_CONFIG";

/// Conventional variable names honoured directly, with the key each one sets. The structured form
/// (`CLERK_SYNC__WEBHOOK__SIGNING_SECRET`) wins when both are set, because it is the more specific.
pub const CONVENTIONAL_ENV: &[(&str, &str)] = &[
    ("CLERK_WEBHOOK_SIGNING_SECRET", "webhook.signing_secret"),
    ("AMQP_URL", "amqp.url"),
    ("DATABASE_URL", "database.url"),
    ("CLERK_SECRET_KEY", "clerk.secret_key"),
];

#[derive(Debug, Clone)]
pub struct Settings {
    pub webhook: WebhookSettings,
    pub amqp: AmqpSettings,
    pub gateway: GatewaySettings,
    pub worker: WorkerSettings,
    pub database: DatabaseSettings,
    pub clerk: ClerkSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Every configured `whsec_...` secret; a request passes if any of them verifies it.
    pub signing_secrets: Vec<SecretString>,
}

#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// One node URL or several, comma-separated (the nodes of one cluster); see `amqp::Nodes`.
    pub url: SecretString,
    /// Given to every node URL that sets no `?heartbeat=` (zero: the broker's value).
    pub heartbeat: Duration,
    /// Longest the TCP and AMQP handshake with one node may take before the next node is tried.
    pub connect_timeout: Duration,
    pub prefix: String,
    pub confirm_timeout: Duration,
    pub publisher_channels: usize,
    pub reconnect_min_backoff: Duration,
    pub reconnect_max_backoff: Duration,
    pub delivery_limit: u32,
    /// Replicas of each quorum queue when it is created (`x-quorum-initial-group-size`).
    pub quorum_initial_group_size: u32,
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_size: usize,
    /// Bytes of request bodies held in memory at once, across every connection.
    pub max_buffered_bytes: usize,
    pub request_timeout: Duration,
    pub retry_after: Duration,
    pub http_workers: usize,
    /// Connections open at once, shared equally by the HTTP workers.
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub admin_listen: SocketAddr,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_linger: Duration,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub retry_delays: Vec<Duration>,
    pub event_retention: Duration,
    /// Whether every distinct event's body is kept in `clerk.event_history` for `event_retention`.
    pub keep_history: bool,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ClerkSettings {
    pub api_url: String,
    pub secret_key: SecretString,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What a binary cannot run without, beyond the values every binary needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// The gateway verifies, `clerk-sync send` signs: both need at least one secret.
    SigningSecret,
    /// `clerk-sync backfill` calls Clerk's Backend API.
    ClerkSecretKey,
}

/// Where configuration comes from. Tests build one by hand so they never touch the process
/// environment (which is shared by every test in the binary).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: HashMap<String, String>,
}

impl Sources {
    /// The real process: `.env` in the working directory (never overriding the environment), the
    /// environment, and the file from `--config` or else `CLERK_SYNC_CONFIG`.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        // A missing .env is the normal case in production.
        let _ = dotenvy::dotenv();
        let env: HashMap<String, String> = std::env::vars().collect();
        let file = file.or_else(|| env.get(CONFIG_FILE_ENV).filter(|p| !p.is_empty()).map(PathBuf::from));
        Self { file, env }
    }

    pub fn with_env<K: Into<String>, V: Into<String>>(mut self, key: K, value: V) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
}

/// One thing wrong with the configuration, named by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found, reported together so an operator fixes them in one go.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl Settings {
    /// Loads every layer and validates the result, reporting all problems at once.
    pub fn load(sources: &Sources, requirements: &[Requirement]) -> Result<Self, ConfigError> {
        let map = merged(sources)?;
        let mut f = Fields::new(map);
        let settings = Settings {
            webhook: WebhookSettings { signing_secrets: f.signing_secrets("webhook", "signing_secret") },
            amqp: AmqpSettings {
                url: f.amqp_urls("amqp", "url"),
                heartbeat: f.duration("amqp", "heartbeat"),
                connect_timeout: f.duration("amqp", "connect_timeout"),
                prefix: f.name("amqp", "prefix"),
                confirm_timeout: f.duration("amqp", "confirm_timeout"),
                publisher_channels: f.positive("amqp", "publisher_channels"),
                reconnect_min_backoff: f.duration("amqp", "reconnect_min_backoff"),
                reconnect_max_backoff: f.duration("amqp", "reconnect_max_backoff"),
                delivery_limit: f.positive("amqp", "delivery_limit"),
                quorum_initial_group_size: f.positive("amqp", "quorum_initial_group_size"),
            },
            gateway: GatewaySettings {
                listen: f.addr("gateway", "listen"),
                admin_listen: f.addr("gateway", "admin_listen"),
                max_body_size: f.positive("gateway", "max_body_size"),
                max_buffered_bytes: f.positive("gateway", "max_buffered_bytes"),
                request_timeout: f.duration("gateway", "request_timeout"),
                retry_after: f.duration("gateway", "retry_after"),
                http_workers: f.parse("gateway", "http_workers"),
                max_connections: f.positive("gateway", "max_connections"),
                shutdown_timeout: f.duration("gateway", "shutdown_timeout"),
            },
            worker: WorkerSettings {
                admin_listen: f.addr("worker", "admin_listen"),
                prefetch: f.positive("worker", "prefetch"),
                batch_size: f.positive("worker", "batch_size"),
                batch_linger: f.duration("worker", "batch_linger"),
                concurrency: f.positive("worker", "concurrency"),
                max_attempts: f.positive("worker", "max_attempts"),
                retry_delays: f.durations("worker", "retry_delays"),
                event_retention: f.duration("worker", "event_retention"),
                keep_history: f.parse("worker", "keep_history"),
                shutdown_timeout: f.duration("worker", "shutdown_timeout"),
            },
            database: DatabaseSettings {
                url: f.secret_url("database", "url", &["postgres", "postgresql"]),
                max_connections: f.positive("database", "max_connections"),
                acquire_timeout: f.duration("database", "acquire_timeout"),
            },
            clerk: ClerkSettings {
                api_url: f.http_url("clerk", "api_url"),
                secret_key: SecretString::from(f.string("clerk", "secret_key")),
            },
            log: LogSettings { format: f.log_format("log", "format"), level: f.string("log", "level") },
        };
        let mut problems = f.finish();
        settings.cross_check(requirements, &mut problems);
        if problems.is_empty() { Ok(settings) } else { Err(ConfigError { problems }) }
    }

    fn cross_check(&self, requirements: &[Requirement], problems: &mut Vec<Problem>) {
        let mut problem = |key: &str, message: &str| {
            problems.push(Problem { key: fields::describe_key(key), message: message.to_owned() })
        };
        if requirements.contains(&Requirement::SigningSecret) && self.webhook.signing_secrets.is_empty() {
            problem(
                "webhook.signing_secret",
                "required: set CLERK_WEBHOOK_SIGNING_SECRET to the endpoint's whsec_... secret",
            );
        }
        if requirements.contains(&Requirement::ClerkSecretKey) && self.clerk.secret_key.expose_secret().is_empty() {
            problem("clerk.secret_key", "required: set CLERK_SECRET_KEY to the instance's secret key (sk_...)");
        }
        if self.amqp.reconnect_min_backoff > self.amqp.reconnect_max_backoff {
            problem("amqp.reconnect_min_backoff", "must not exceed amqp.reconnect_max_backoff");
        }
        if self.gateway.listen == self.gateway.admin_listen && self.gateway.listen.port() != 0 {
            problem(
                "gateway.admin_listen",
                "must differ from gateway.listen: admin endpoints stay off the public port",
            );
        }
        if self.gateway.max_buffered_bytes < self.gateway.max_body_size {
            problem(
                "gateway.max_buffered_bytes",
                "must be at least gateway.max_body_size, or a body of the largest accepted size never fits",
            );
        }
        if self.worker.batch_size > usize::from(self.worker.prefetch) {
            problem("worker.batch_size", "must not exceed worker.prefetch, or a batch never fills");
        }
    }

    /// The effective configuration as TOML, with secrets and URL passwords redacted.
    pub fn render_redacted(&self) -> String {
        render::render(self)
    }

    /// The AMQP URL, for connecting. Kept behind a method so call sites read as deliberate.
    pub fn amqp_url(&self) -> &str {
        self.amqp.url.expose_secret()
    }
}

/// Merges the layers into section -> key -> value, applying the conventional names.
fn merged(sources: &Sources) -> Result<fields::RawMap, ConfigError> {
    use config::{Config, Environment, File, FileFormat};
    let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
    if let Some(path) = &sources.file {
        builder = builder.add_source(File::from(path.clone()).format(FileFormat::Toml).required(true));
    }
    let structured: HashMap<String, String> = sources
        .env
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(Some(structured.clone().into_iter().collect())),
    );
    for (name, key) in CONVENTIONAL_ENV {
        let structured_name = fields::env_name(key);
        if let (Some(value), false) = (sources.env.get(*name), structured.contains_key(&structured_name)) {
            builder = builder.set_override(*key, value.clone()).map_err(|e| single("configuration", e.to_string()))?;
        }
    }
    let config = builder.build().map_err(|e| {
        let key = sources.file.as_ref().map_or("configuration".to_owned(), |p| p.display().to_string());
        single(&key, e.to_string())
    })?;
    config
        .try_deserialize::<fields::RawMap>()
        .map_err(|e| single("configuration", format!("every top-level entry must be a [section]: {e}")))
}

fn single(key: &str, message: String) -> ConfigError {
    ConfigError { problems: vec![Problem { key: key.to_owned(), message }] }
}

#[cfg(test)]
mod tests;

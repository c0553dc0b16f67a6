//! One bench run's private world: a fresh signing secret, a bench-only exchange/queue prefix, a
//! freshly created and migrated Postgres database, and their removal at the end.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clerk_sync_core::amqp::{Topology, declare_topology};
use clerk_sync_core::settings::{Settings, Sources};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection};

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_ADMIN_DB_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DB_PREFIX: &str = "clerk_bench_";

pub struct BenchEnv {
    /// 8 hex digits naming everything this run creates.
    pub run_id: String,
    /// `bench-<run_id>`: never the production `clerk` prefix.
    pub prefix: String,
    pub secret: SecretString,
    pub amqp_url: String,
    pub db_name: String,
    pub db_url: String,
    admin_db_url: String,
    /// The built-in defaults, for the topology arguments every process must agree on.
    pub defaults: Settings,
}

/// A `whsec_` secret of 24 random bytes, as Clerk's dashboard issues them.
pub fn new_secret() -> SecretString {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// `admin_url` with its database replaced by `name`, query (`?host=/var/run/postgresql`) kept.
pub fn database_url(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let Some((server, _)) = base.rsplit_once('/').filter(|(server, _)| server.contains("://")) else {
        anyhow::bail!("BENCH_DATABASE_ADMIN_URL must look like postgres://user@host:port/database");
    };
    Ok(match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    })
}

fn admin_url() -> String {
    std::env::var("BENCH_DATABASE_ADMIN_URL").unwrap_or_else(|_| DEFAULT_ADMIN_DB_URL.to_owned())
}

/// A port free right now on 127.0.0.1 (the child process binds it a moment later).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl BenchEnv {
    /// The names and settings of run `run_id`, creating nothing.
    pub fn new(run_id: &str) -> anyhow::Result<Self> {
        let amqp_url = std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
        let admin_db_url = admin_url();
        let db_name = format!("{DB_PREFIX}{run_id}");
        let db_url = database_url(&admin_db_url, &db_name)?;
        // The services inherit `CLERK_SYNC__*` knobs from our environment; read them the same way.
        let knobs = std::env::vars().filter(|(k, _)| k.starts_with("CLERK_SYNC__")).collect();
        let defaults = Settings::load(&Sources { file: None, env: knobs }, &[]).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            prefix: format!("bench-{run_id}"),
            run_id: run_id.to_owned(),
            secret: new_secret(),
            amqp_url,
            db_name,
            db_url,
            admin_db_url,
            defaults,
        })
    }

    /// A new run: creates and migrates its database (the topology is declared by whoever
    /// connects first).
    pub async fn create() -> anyhow::Result<Self> {
        let env = Self::new(&uuid::Uuid::new_v4().simple().to_string()[..8])?;
        let mut admin = PgConnection::connect(&env.admin_db_url)
            .await
            .with_context(|| format!("connecting to Postgres at {}", env.admin_db_url))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{}\"", env.db_name))).execute(&mut admin).await?;
        let _ = admin.close().await;
        let pool = env.pool(2).await?;
        clerk_sync_store::db::migrate(&pool).await.context("migrating the bench database")?;
        pool.close().await;
        Ok(env)
    }

    /// Runs whose database is still there but unused: left behind by an interrupted bench.
    pub async fn abandoned() -> anyhow::Result<Vec<String>> {
        let mut admin = PgConnection::connect(&admin_url()).await?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database d WHERE datname LIKE 'clerk\\_bench\\_%'
             AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
        )
        .fetch_all(&mut admin)
        .await?;
        let _ = admin.close().await;
        Ok(names.into_iter().filter_map(|n| n.strip_prefix(DB_PREFIX).map(str::to_owned)).collect())
    }

    pub fn topology(&self) -> Topology {
        Topology::new(self.prefix.clone(), self.defaults.amqp.delivery_limit)
    }

    pub fn retry_delays(&self) -> &[Duration] {
        &self.defaults.worker.retry_delays
    }

    pub async fn pool(&self, connections: u32) -> anyhow::Result<PgPool> {
        Ok(PgPoolOptions::new().max_connections(connections).connect(&self.db_url).await?)
    }

    /// How the database ceiling connects: exactly as the worker does, through `DATABASE_URL`
    /// (TCP, and TLS when the server offers it), so the ratio compares the work and not the
    /// transport. (It used the Unix socket while sqlx 0.9.0 lacked TCP_NODELAY; see vendor/README.md.)
    pub fn ceiling_connect_options(&self) -> anyhow::Result<PgConnectOptions> {
        Ok(self.db_url.parse()?)
    }

    pub async fn amqp(&self) -> anyhow::Result<Connection> {
        let props = ConnectionProperties::default().with_connection_name("clerk-sync-bench".into());
        Connection::connect(&self.amqp_url, props).await.with_context(|| "connecting to RabbitMQ")
    }

    /// Declares the topology exactly as the gateway and the worker do.
    pub async fn declare(&self, channel: &Channel) -> anyhow::Result<()> {
        declare_topology(channel, &self.topology(), self.retry_delays()).await?;
        Ok(())
    }

    pub async fn purge(&self, channel: &Channel) -> anyhow::Result<u32> {
        Ok(channel.queue_purge(self.topology().queue().into(), QueuePurgeOptions::default()).await?)
    }

    /// Empties the tables a run writes, so the next run starts from the same state.
    pub async fn truncate(&self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.db_url).await?;
        sqlx::query(
            "TRUNCATE clerk.users, clerk.organizations, clerk.organization_memberships, clerk.sessions,
             clerk.organization_invitations, clerk.roles, clerk.permissions, clerk.organization_domains,
             clerk.waitlist_entries, clerk.subscriptions, clerk.subscription_items, clerk.payment_attempts,
             clerk.webhook_events",
        )
        .execute(&mut conn)
        .await?;
        // Fresh statistics and no dead tuples, as in the first run.
        sqlx::query("VACUUM ANALYZE").execute(&mut conn).await?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Deletes the queues and exchanges and drops the database; errors are reported, not fatal.
    pub async fn cleanup(&self) {
        match self.amqp().await {
            Ok(conn) => {
                if let Ok(ch) = conn.create_channel().await {
                    let topology = self.topology();
                    for queue in topology.queues(self.retry_delays()) {
                        let _ = ch.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
                    }
                    for exchange in [topology.exchange(), topology.dead_exchange()] {
                        let _ = ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
                    }
                }
                let _ = conn.close(200, "bye".into()).await;
            }
            Err(e) => eprintln!("warning: could not delete the bench queues ({}.*): {e:#}", self.prefix),
        }
        match PgConnection::connect(&self.admin_db_url).await {
            Ok(mut admin) => {
                let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db_name);
                if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await {
                    eprintln!("warning: could not drop {}: {e}", self.db_name);
                }
            }
            Err(e) => eprintln!("warning: could not drop {}: {e}", self.db_name),
        }
    }

    /// The environment both services get (they also inherit `CLERK_SYNC__*` knobs from ours).
    pub fn service_env(&self) -> Vec<(String, String)> {
        vec![
            ("CLERK_WEBHOOK_SIGNING_SECRET".into(), self.secret.expose_secret().to_owned()),
            ("AMQP_URL".into(), self.amqp_url.clone()),
            ("DATABASE_URL".into(), self.db_url.clone()),
            ("CLERK_SYNC__AMQP__PREFIX".into(), self.prefix.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_database_url_keeps_the_server_and_the_query() {
        assert_eq!(database_url(DEFAULT_ADMIN_DB_URL, "b").unwrap(), "postgres://postgres@127.0.0.1:5432/b");
        let socket = "postgres://postgres@localhost/postgres?host=/var/run/postgresql";
        assert_eq!(database_url(socket, "b").unwrap(), "postgres://postgres@localhost/b?host=/var/run/postgresql");
        assert!(database_url("nonsense", "b").is_err());
    }
}

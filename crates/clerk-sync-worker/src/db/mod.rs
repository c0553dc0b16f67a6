//! Postgres: the pool, migrations (kept in schema `clerk`, bookkeeping table included, so they never
//! mix with the application's own sqlx migrations), the schema version check, and the
//! classification of database errors into transient (wait and retry) and permanent.

mod apply;
mod rows;

pub use apply::{Incoming, Outcome, apply_batch};

use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use clerk_sync_core::settings::DatabaseSettings;

/// Where sqlx records applied migrations.
pub const MIGRATIONS_TABLE: &str = "clerk._sqlx_migrations";

/// The embedded migrations, recorded in schema `clerk`.
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../../migrations");
    migrator.create_schema("clerk");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// The newest schema version this build needs.
pub fn required_version() -> i64 {
    migrator().iter().map(|m| m.version).max().unwrap_or(0)
}

/// A lazily connecting pool: the worker starts, and waits, while the database is down.
pub fn pool(settings: &DatabaseSettings, application_name: &str) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options.application_name(application_name)))
}

/// Applies pending migrations (under sqlx's advisory lock, so several processes may race).
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    migrator().run(pool).await
}

/// Versions embedded in this build that the database has not applied.
pub async fn pending(pool: &PgPool) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM clerk._sqlx_migrations WHERE success").fetch_all(pool).await {
            Ok(v) => v,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e),
        };
    Ok(migrator()
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database schema is older than this worker needs (missing migration(s) {0:?}); run `clerk-sync-worker migrate` (or `clerk-sync migrate`) first"
    )]
    Outdated(Vec<i64>),
    #[error("cannot read the schema version: {0}")]
    Database(#[from] sqlx::Error),
}

/// Refuses to run against a schema older than this build.
pub async fn check_schema(pool: &PgPool) -> Result<(), SchemaError> {
    let missing: Vec<i64> = pending(pool).await?.into_iter().map(|(v, _)| v).collect();
    if missing.is_empty() { Ok(()) } else { Err(SchemaError::Outdated(missing)) }
}

/// How a database failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database is unreachable, overloaded or asked us to retry: wait, retry, dead-letter nothing.
    Transient,
    /// The data itself is refused (bad value, constraint): retrying cannot help.
    Permanent,
    /// Anything else: retry through the retry queues, dead-letter after the attempt limit.
    Retryable,
}

/// Classifies by SQLSTATE: class 08 connection, 40001 serialization, 40P01 deadlock, 57P0x
/// shutdown, 53 resources, 55P03 lock timeout are transient; 22 data and 23 integrity are permanent.
pub fn classify(error: &sqlx::Error) -> ErrorClass {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorClass::Transient,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.as_ref() {
                c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => ErrorClass::Transient,
                "40001" | "40P01" | "55P03" => ErrorClass::Transient,
                c if c.starts_with("22") || c.starts_with("23") => ErrorClass::Permanent,
                _ => ErrorClass::Retryable,
            }
        }
        _ => ErrorClass::Retryable,
    }
}

/// Milliseconds since the epoch to a timestamp, exactly.
pub fn ms(value: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(value)
}

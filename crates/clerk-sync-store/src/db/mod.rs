//! Postgres: the pool, migrations (the workspace's `migrations/`, kept in schema `clerk`,
//! bookkeeping table included, so they never mix with the application's own sqlx migrations), the
//! schema version check, and the modules of the apply path: `plan` (a batch reduced to one row per
//! object), `resources` (the rows sent to SQL, one struct per resource), `outcome` (what became of
//! each message, decided once) and `apply` (the transaction's statements). `classify` sorts
//! database errors into outages, permanent refusals and retryable failures.

mod apply;
pub mod billing_rows;
mod classify;
pub mod more_rows;
pub mod outcome;
pub mod plan;
pub mod resources;
pub mod setup;

pub use apply::{apply_batch, reproject_batch};
pub use classify::{Condition, ErrorClass, classify, classify_code};
pub use outcome::Outcome;

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
    #[error("cannot read the schema version: {}", setup::explain(.0))]
    Database(#[from] sqlx::Error),
}

/// Refuses to run against a schema older than this build.
pub async fn check_schema(pool: &PgPool) -> Result<(), SchemaError> {
    let missing: Vec<i64> = pending(pool).await?.into_iter().map(|(v, _)| v).collect();
    if missing.is_empty() { Ok(()) } else { Err(SchemaError::Outdated(missing)) }
}

/// Milliseconds since the epoch to a timestamp, exactly; `None` outside what is stored (see
/// [`crate::event::datetime_ms`]).
pub fn ms(value: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    crate::event::datetime_ms(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_outside_years_1_to_9999_are_absent() {
        assert!(ms(253_402_300_799_999).is_some() && ms(-62_135_596_800_000).is_some());
        assert_eq!(ms(253_402_300_800_000), None);
        assert_eq!(ms(-62_135_596_800_001), None);
        assert_eq!(ms(9_400_000_000_000_000), None);
        assert_eq!(ms(1_716_883_200_123).unwrap().timestamp_subsec_millis(), 123);
    }
}

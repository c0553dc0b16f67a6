//! Postgres: the pool, migrations (kept in schema `clerk`, bookkeeping table included, so they never
//! mix with the application's own sqlx migrations), the schema version check, and the
//! classification of database errors into transient (wait and retry) and permanent.

mod apply;
mod rows;
pub mod setup;

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
    #[error("cannot read the schema version: {}", setup::explain(.0))]
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
    /// The database as a whole cannot take writes now (unreachable, read-only, refusing us, our
    /// schema missing): pause, retry, dead-letter nothing.
    Outage(Condition),
    /// The data itself is refused (bad value, constraint): retrying cannot help.
    Permanent,
    /// Anything else: retry through the retry queues, dead-letter after the attempt limit.
    Retryable,
}

/// Why the database cannot take writes; a label of `clerk_sync_worker_database_pauses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// No connection: refused, reset, timed out, the server shutting down.
    Unreachable,
    /// Connected to a read-only server (a standby after a failover) or session (SQLSTATE class 25).
    ReadOnly,
    /// The server refuses our credentials (class 28).
    Authentication,
    /// The database named in the URL does not exist (3D000).
    MissingDatabase,
    /// Our role lost a privilege (42501).
    Permission,
    /// `statement_timeout` cancelled the statement (57014).
    StatementTimeout,
    /// The server's disk or files failed (class 58).
    Io,
    /// Out of connections, memory or disk (class 53).
    Resources,
    /// Our tables or functions are missing: migrations not applied (42P01, 42883, 3F000).
    SchemaMissing,
    /// A serialization failure, deadlock or lock timeout: this transaction only, retried at once.
    Conflict,
}

impl Condition {
    pub const ALL: [Self; 10] = [
        Self::Unreachable,
        Self::ReadOnly,
        Self::Authentication,
        Self::MissingDatabase,
        Self::Permission,
        Self::StatementTimeout,
        Self::Io,
        Self::Resources,
        Self::SchemaMissing,
        Self::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::ReadOnly => "read_only",
            Self::Authentication => "authentication",
            Self::MissingDatabase => "missing_database",
            Self::Permission => "permission",
            Self::StatementTimeout => "statement_timeout",
            Self::Io => "io",
            Self::Resources => "resources",
            Self::SchemaMissing => "schema_missing",
            Self::Conflict => "conflict",
        }
    }

    /// Whether the health probe (a read-only check of the session and our schema) can tell that
    /// this condition is over. A statement timeout or a conflict only ends when a write succeeds.
    pub fn probe_can_clear(self) -> bool {
        !matches!(self, Self::StatementTimeout | Self::Io | Self::Resources | Self::Conflict)
    }
}

/// Classifies a failure: by SQLSTATE for errors the server sent, as an outage for every failure
/// to reach it.
pub fn classify(error: &sqlx::Error) -> ErrorClass {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorClass::Outage(Condition::Unreachable),
        sqlx::Error::Database(db) => classify_code(&db.code().unwrap_or_default()),
        _ => ErrorClass::Retryable,
    }
}

/// Classifies a SQLSTATE. Every statement the worker runs touches only schema `clerk`, so an
/// undefined table or function there means migrations are missing, not that a message is bad.
pub fn classify_code(code: &str) -> ErrorClass {
    let outage = ErrorClass::Outage;
    match code {
        c if c.starts_with("08") || c.starts_with("57P") => outage(Condition::Unreachable),
        c if c.starts_with("25") => outage(Condition::ReadOnly),
        c if c.starts_with("28") => outage(Condition::Authentication),
        "3D000" => outage(Condition::MissingDatabase),
        "42501" => outage(Condition::Permission),
        "57014" => outage(Condition::StatementTimeout),
        c if c.starts_with("58") => outage(Condition::Io),
        c if c.starts_with("53") => outage(Condition::Resources),
        "42P01" | "42883" | "3F000" => outage(Condition::SchemaMissing),
        "40001" | "40P01" | "55P03" => outage(Condition::Conflict),
        c if c.starts_with("22") || c.starts_with("23") => ErrorClass::Permanent,
        _ => ErrorClass::Retryable,
    }
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
    fn whole_database_conditions_are_outages_and_bad_data_is_permanent() {
        let cases = [
            ("25006", ErrorClass::Outage(Condition::ReadOnly)),
            ("28P01", ErrorClass::Outage(Condition::Authentication)),
            ("28000", ErrorClass::Outage(Condition::Authentication)),
            ("3D000", ErrorClass::Outage(Condition::MissingDatabase)),
            ("42501", ErrorClass::Outage(Condition::Permission)),
            ("57014", ErrorClass::Outage(Condition::StatementTimeout)),
            ("58030", ErrorClass::Outage(Condition::Io)),
            ("42P01", ErrorClass::Outage(Condition::SchemaMissing)),
            ("42883", ErrorClass::Outage(Condition::SchemaMissing)),
            ("08006", ErrorClass::Outage(Condition::Unreachable)),
            ("57P01", ErrorClass::Outage(Condition::Unreachable)),
            ("53300", ErrorClass::Outage(Condition::Resources)),
            ("40P01", ErrorClass::Outage(Condition::Conflict)),
            ("22P02", ErrorClass::Permanent),
            ("23505", ErrorClass::Permanent),
            ("XX000", ErrorClass::Retryable),
        ];
        for (code, class) in cases {
            assert_eq!(classify_code(code), class, "{code}");
        }
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorClass::Outage(Condition::Unreachable));
    }

    #[test]
    fn timestamps_outside_years_1_to_9999_are_absent() {
        assert!(ms(253_402_300_799_999).is_some() && ms(-62_135_596_800_000).is_some());
        assert_eq!(ms(253_402_300_800_000), None);
        assert_eq!(ms(-62_135_596_800_001), None);
        assert_eq!(ms(9_400_000_000_000_000), None);
        assert_eq!(ms(1_716_883_200_123).unwrap().timestamp_subsec_millis(), 123);
    }
}

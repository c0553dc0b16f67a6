//! Getting a database ready for `migrate`: naming where a URL points (never its password),
//! creating the database when the server does not have it yet, and saying in one sentence what
//! went wrong when that is not possible.

use std::fmt;

use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use clerk_sync_core::settings::DatabaseSettings;

/// Where a connection goes, for messages: host, port, database and role, never the password.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
}

impl Target {
    pub fn of(options: &PgConnectOptions) -> Self {
        let host = match options.get_socket() {
            Some(dir) => dir.display().to_string(),
            None => options.get_host().to_owned(),
        };
        let user = options.get_username().to_owned();
        let database = options.get_database().map_or_else(|| user.clone(), str::to_owned);
        Self { host, port: options.get_port(), database, user }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database \"{}\" on PostgreSQL at {}:{} (role \"{}\")",
            self.database, self.host, self.port, self.user
        )
    }
}

/// A database failure as one clause: the server's message without the source line it adds, or
/// what happened to the connection.
pub fn explain(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(e) => e.to_string(),
        sqlx::Error::PoolTimedOut => "no connection could be opened in time".to_owned(),
        sqlx::Error::Configuration(e) => format!("invalid database URL: {e}"),
        other => other.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid database.url: {0}")]
    Url(String),
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: Target, reason: String },
    #[error(
        "database \"{}\" does not exist and role \"{}\" may not create databases; ask an administrator to run `CREATE DATABASE \"{}\" OWNER \"{}\";` on {}:{}, then run migrate again",
        .0.database, .0.user, .0.database, .0.user, .0.host, .0.port
    )]
    MayNotCreate(Target),
    #[error("cannot create {target}: {reason}")]
    Create { target: Target, reason: String },
    #[error("cannot migrate {target}: {reason}")]
    Migrate { target: Target, reason: String },
}

/// The options `database.url` describes.
pub fn options(settings: &DatabaseSettings) -> Result<PgConnectOptions, SetupError> {
    settings.url.expose_secret().parse().map_err(|e: sqlx::Error| SetupError::Url(explain(&e)))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn is_code(error: &sqlx::Error, code: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

/// Whether the database exists, connecting to it once.
pub async fn exists(options: &PgConnectOptions) -> Result<bool, SetupError> {
    match PgConnection::connect_with(options).await {
        Ok(conn) => {
            let _ = conn.close().await;
            Ok(true)
        }
        Err(e) if is_code(&e, "3D000") => Ok(false),
        Err(e) => Err(SetupError::Connect { target: Target::of(options), reason: explain(&e) }),
    }
}

/// Creates the database `options` names if the server does not have it, connecting to the
/// server's maintenance database (`postgres`, else `template1`). Returns whether it created it.
pub async fn ensure_database(options: &PgConnectOptions) -> Result<bool, SetupError> {
    if exists(options).await? {
        return Ok(false);
    }
    let target = Target::of(options);
    let mut last = None;
    for maintenance in ["postgres", "template1"] {
        let admin = options.clone().database(maintenance);
        let mut conn = match PgConnection::connect_with(&admin).await {
            Ok(conn) => conn,
            Err(e) if is_code(&e, "3D000") => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(SetupError::Connect { target: Target::of(&admin), reason: explain(&e) }),
        };
        let sql = format!("CREATE DATABASE {}", quote_ident(&target.database));
        let created = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
        let _ = conn.close().await;
        return match created {
            Ok(_) => Ok(true),
            // Another migrate created it meanwhile.
            Err(e) if is_code(&e, "42P04") => Ok(false),
            Err(e) if is_code(&e, "42501") => Err(SetupError::MayNotCreate(target)),
            Err(e) => Err(SetupError::Create { target, reason: explain(&e) }),
        };
    }
    let reason = last.as_ref().map_or_else(String::new, explain);
    Err(SetupError::Create { target, reason: format!("no maintenance database to connect to ({reason})") })
}

/// What `migrate` did or, with `check`, would do.
#[derive(Debug)]
pub struct MigrateReport {
    pub target: Target,
    /// The database did not exist: created, or (with `check`) to be created.
    pub database_missing: bool,
    /// Migrations applied, or (with `check`) pending.
    pub migrations: Vec<(i64, String)>,
}

/// `migrate` for the worker and the CLI: creates the database if needed, then applies pending
/// migrations. With `check` it changes nothing and reports what it would do.
pub async fn migrate(settings: &DatabaseSettings, check: bool) -> Result<MigrateReport, SetupError> {
    let options = options(settings)?;
    let target = Target::of(&options);
    let all = || super::migrator().iter().map(|m| (m.version, m.description.to_string())).collect::<Vec<_>>();
    let database_missing = if check { !exists(&options).await? } else { ensure_database(&options).await? };
    if check && database_missing {
        return Ok(MigrateReport { target, database_missing, migrations: all() });
    }
    let fail = |reason: String| SetupError::Migrate { target: target.clone(), reason };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options.application_name("clerk-sync-migrate"))
        .await
        .map_err(|e| SetupError::Connect { target: target.clone(), reason: explain(&e) })?;
    let pending = super::pending(&pool).await.map_err(|e| fail(explain(&e)))?;
    if !check && !pending.is_empty() {
        super::migrate(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => fail(explain(&e)),
            other => fail(other.to_string()),
        })?;
    }
    pool.close().await;
    Ok(MigrateReport { target, database_missing, migrations: pending })
}

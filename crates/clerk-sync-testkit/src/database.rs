//! A fresh Postgres database per test, dropped afterwards, so tests never see each other's rows.

use sqlx::{Connection, PgConnection};

/// The server tests create databases on: `DATABASE_URL`'s server, or the local default.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create(label: &str) -> Self {
        let name = crate::unique_prefix(label).replace('-', "_");
        let mut admin = PgConnection::connect(&admin_url()).await.expect("tests need Postgres at 127.0.0.1:5432");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let _ = admin.close().await;
        let base = admin_url();
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => format!("{base}/{name}"),
        };
        Self { name, url }
    }

    /// The same database reached through another host:port (a [`crate::TcpProxy`]).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }

    pub async fn connect(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&self.url).await.expect("connect test database")
    }

    /// What a failover onto a standby looks like to a client: every new session of this database
    /// is read-only (SQLSTATE 25006 on the first write), and the sessions open now are ended (they
    /// would keep their setting). `false` undoes it, ending the read-only sessions the same way.
    pub async fn set_read_only(&self, on: bool) {
        let mut admin = PgConnection::connect(&admin_url()).await.expect("connect as admin");
        let sql = if on {
            format!("ALTER DATABASE \"{}\" SET default_transaction_read_only = on", self.name)
        } else {
            format!("ALTER DATABASE \"{}\" RESET default_transaction_read_only", self.name)
        };
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.expect("alter database");
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&self.name)
            .execute(&mut admin)
            .await
            .expect("end the open sessions");
        let _ = admin.close().await;
    }

    pub async fn drop_now(self) {
        if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
        }
    }
}

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

    pub async fn drop_now(self) {
        if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
        }
    }
}

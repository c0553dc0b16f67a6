//! `clerk-sync-worker migrate` on a server where the database does not exist yet (a fresh
//! machine's first `make run`), and what a fatal error looks like.

use clerk_sync_testkit::admin_url;
use sqlx::{Connection, PgConnection};

fn worker(database_url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync-worker"))
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("CLERK_SYNC__LOG__LEVEL", "warn")
        .args(args)
        .output()
        .expect("run the worker binary")
}

#[tokio::test]
async fn the_worker_migrate_command_creates_a_missing_database_and_says_so() {
    let name = clerk_sync_testkit::unique_prefix("wk-newdb").replace('-', "_");
    let server = admin_url().rsplit_once('/').map(|(s, _)| s.to_owned()).unwrap();
    let url = format!("{server}/{name}");
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || worker(&url, &["migrate"])
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("created database \"{name}\"")), "{stdout}");
    let mut conn = PgConnection::connect(&url).await.expect("the database exists now");
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'clerk'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(tables >= 4, "and is migrated");
    let _ = conn.close().await;
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_worker_that_cannot_reach_postgres_at_migrate_says_where_in_one_line() {
    let out = tokio::task::spawn_blocking(|| worker("postgres://clerk:s3cret@127.0.0.1:1/clerk_sync", &["migrate"]))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("127.0.0.1:1") && stderr.contains("clerk_sync"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

//! `clerk-sync reconcile` of 100,000 users and 10,000 organizations with 1% drift, against a local
//! fake of Clerk's Backend API (plain HTTP/1.1 with keep-alive, pages rendered on request from the
//! object's index, so the bench holds no copy of Clerk): the `--fix` run's time, the requests it
//! made and the CLI's peak RSS (`VmHWM`, target 128 MiB), then a report run that must find none.
//!
//! Drift, one object in 100, a third each: missing (no row), stale (Clerk's `updated_at` newer)
//! and gone (a row Clerk answers 404 for). The rows are inserted with one SQL statement each (reconcile reads only
//! ids, versions and tombstones); the repairs go through the worker's apply path as in production.
//! The run uses `--rate 1000` so that the figure is the reconcile's own cost; at the default
//! `--rate 5` a run takes at least requests / 5 seconds.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clerk_sync_core::samples;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::{Bench, targets};
use crate::procs;
use crate::report::Row;

const USERS: usize = 100_000;
const ORGS: usize = 10_000;
/// One object in this many is drifted, in turn missing, stale, gone.
const EVERY: usize = 100;
const T: i64 = 1_716_883_200_000;

/// One index in [`EVERY`] is drifted, in turn missing (0) or stale (1); for each third one (2)
/// a row Clerk no longer has (`<kind>_gone_<n>`) is gone.
fn drift(i: usize) -> Option<usize> {
    i.is_multiple_of(EVERY).then_some((i / EVERY) % 3)
}

/// Clerk's object at an index; the stale ones one second newer than their rows.
fn clerk_object(kind: &str, i: usize) -> Value {
    let updated_at = if drift(i) == Some(1) { T + 1_000 } else { T };
    match kind {
        "users" => samples::user(&format!("user_{i:06}"), "Bench", &format!("u{i}@example.com"), updated_at),
        _ => samples::organization(&format!("org_{i:06}"), &format!("Org {i}"), updated_at),
    }
}

fn page(kind: &str, total: usize, limit: usize, offset: usize) -> Vec<Value> {
    (offset.min(total)..(offset + limit).min(total)).map(|i| clerk_object(kind, i)).collect()
}

fn answer(target: &str) -> (u16, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse::<usize>().ok()).unwrap_or(0)
    };
    let (limit, offset) = (param("limit").clamp(1, 500), param("offset"));
    let index = |id: &str, prefix: &str| id.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
    match path.trim_start_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["v1", "users"] => (200, json!(page("users", USERS, limit, offset)).to_string()),
        ["v1", "organizations"] => {
            (200, json!({"data": page("organizations", ORGS, limit, offset), "total_count": ORGS}).to_string())
        }
        ["v1", "users", id] => match index(id, "user_").filter(|i| *i < USERS) {
            Some(i) => (200, clerk_object("users", i).to_string()),
            None => (404, r#"{"errors":[{"code":"resource_not_found"}]}"#.to_owned()),
        },
        ["v1", "organizations", id] => match index(id, "org_").filter(|i| *i < ORGS) {
            Some(i) => (200, clerk_object("organizations", i).to_string()),
            None => (404, r#"{"errors":[{"code":"resource_not_found"}]}"#.to_owned()),
        },
        _ => (404, "{}".to_owned()),
    }
}

/// Serves one keep-alive connection: GET requests without bodies, one at a time.
async fn serve(mut stream: tokio::net::TcpStream, requests: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(len) = req.parse(&buf)? else { continue };
        let (status, body) = answer(req.path.unwrap_or("/"));
        buf.drain(..len);
        requests.fetch_add(1, Ordering::Relaxed);
        let reason = if status == 200 { "OK" } else { "Not Found" };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
    }
}

async fn seed(b: &Bench) -> anyhow::Result<()> {
    let pool = b.env.pool(2).await?;
    // Every index but the missing ones at version T, and the gone rows; synced an hour ago.
    let (users, orgs) = (
        "INSERT INTO clerk.users (id, first_name, primary_email_address, updated_at, synced_at, raw)
         SELECT id, 'Bench', 'b@example.com', to_timestamp($3 / 1000.0), now() - interval '1 hour', '{}'::jsonb
         FROM (SELECT 'user_' || lpad(i::text, 6, '0') AS id FROM generate_series(0, $1 - 1) AS i
               WHERE NOT (i % $2 = 0 AND (i / $2) % 3 = 0)
               UNION ALL SELECT 'user_gone_' || i FROM generate_series(0, $1 - 1) AS i WHERE i % $2 = 0 AND (i / $2) % 3 = 2) AS ids",
        "INSERT INTO clerk.organizations (id, name, slug, updated_at, synced_at, raw)
         SELECT id, 'Bench', id, to_timestamp($3 / 1000.0), now() - interval '1 hour', '{}'::jsonb
         FROM (SELECT 'org_' || lpad(i::text, 6, '0') AS id FROM generate_series(0, $1 - 1) AS i
               WHERE NOT (i % $2 = 0 AND (i / $2) % 3 = 0)
               UNION ALL SELECT 'org_gone_' || i FROM generate_series(0, $1 - 1) AS i WHERE i % $2 = 0 AND (i / $2) % 3 = 2) AS ids",
    );
    for (sql, total) in [(users, USERS), (orgs, ORGS)] {
        sqlx::query(sql).bind(total as i64).bind(EVERY as i64).bind(T).execute(&pool).await?;
    }
    pool.close().await;
    Ok(())
}

struct Run {
    seconds: f64,
    peak_kib: u64,
    report: Value,
    code: Option<i32>,
}

/// Longest one reconcile run may take before the bench stops it (it takes seconds).
const CLI_TIMEOUT: Duration = Duration::from_secs(600);

async fn run_cli(b: &Bench, api_url: &str, fix: bool) -> anyhow::Result<Run> {
    let exe = b.paths.binary("clerk-sync");
    anyhow::ensure!(exe.is_file(), "{} is missing: run `cargo build --release -p clerk-sync-cli`", exe.display());
    let logs = b.paths.out_dir().join("logs");
    std::fs::create_dir_all(&logs)?;
    let name = if fix { "reconcile-fix" } else { "reconcile-report" };
    let out_path = logs.join(format!("{name}.json"));
    let mut cmd = Command::new(&exe);
    cmd.current_dir(&logs).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("DATABASE_URL", &b.env.db_url)
        .env("CLERK_SECRET_KEY", "sk_test_bench")
        .env("CLERK_SYNC__CLERK__API_URL", api_url);
    cmd.env("CLERK_SYNC__LOG__LEVEL", "error").args([
        "--json",
        "reconcile",
        "--users",
        "--organizations",
        "--rate",
        "1000",
    ]);
    if fix {
        cmd.arg("--fix");
    }
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(logs.join(format!("{name}.log")))?);
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
    let (status, peak_kib) = procs::wait_sampling_peak(&mut child, CLI_TIMEOUT).await?;
    let report = serde_json::from_slice(&std::fs::read(&out_path)?).unwrap_or_default();
    Ok(Run { seconds: started.elapsed().as_secs_f64(), peak_kib, report, code: status.and_then(|s| s.code()) })
}

pub async fn reconcile(b: &mut Bench) -> anyhow::Result<()> {
    let started = Instant::now();
    seed(b).await?;
    eprintln!("reconcile: {USERS} users and {ORGS} organizations seeded in {:.1} s", started.elapsed().as_secs_f64());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let api_url = format!("http://{}", listener.local_addr()?);
    let requests = Arc::new(AtomicU64::new(0));
    let served = requests.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, served.clone()));
        }
    });
    let fix = run_cli(b, &api_url, true).await;
    let fix_requests = requests.swap(0, Ordering::Relaxed);
    let check = run_cli(b, &api_url, false).await;
    server.abort();
    let (fix, check) = (fix?, check?);
    let drifted = (USERS + ORGS) / EVERY;
    let count = |r: &Value, gap: &str| -> u64 {
        ["users", "organizations"].iter().map(|k| r[k][gap].as_u64().unwrap_or(0)).sum()
    };
    let found: u64 = ["missing", "stale", "gone"].iter().map(|g| count(&fix.report, g)).sum();
    let left: u64 = ["missing", "stale", "gone"].iter().map(|g| count(&check.report, g)).sum();
    let mib = fix.peak_kib as f64 / 1024.0;
    eprintln!(
        "reconcile --fix: {found} of {drifted} gaps in {:.2} s, {fix_requests} requests, CLI peak RSS {mib:.1} MiB \
         (exit {:?}); report after: {left} gaps in {:.2} s (exit {:?})",
        fix.seconds, fix.code, check.seconds, check.code
    );
    let errors =
        u64::from(fix.code != Some(0)) + u64::from(check.code != Some(0)) + left + (drifted as u64).abs_diff(found);
    b.rows.push(
        Row::new("reconcile --fix, 100k users + 10k orgs, 1% drift", fix.seconds, "s").require_no_errors(errors).note(
            format!(
                "{found} gaps found and repaired ({drifted} planted), {fix_requests} requests at --rate 1000 \
                 (at the default --rate 5: >= {:.0} s); the report run after found {left} in {:.1} s",
                fix_requests as f64 / 5.0,
                check.seconds
            ),
        ),
    );
    b.rows.push(
        Row::new("reconcile requests to Clerk", fix_requests as f64, "req")
            .note("pages of 500 plus one lookup per gone candidate"),
    );
    b.rows.push(
        Row::new("CLI peak RSS reconciling 100k users + 10k orgs", mib, "MiB")
            .goal(&targets::RECONCILE_CLI_RSS_MIB)
            .note("VmHWM of the clerk-sync process during --fix, read from /proc every 5 ms"),
    );
    b.details.insert(
        "reconcile".into(),
        json!({"users": USERS, "organizations": ORGS, "planted": drifted, "found": found, "fix_seconds": fix.seconds,
               "requests": fix_requests, "cli_peak_rss_kib": fix.peak_kib, "report_after_seconds": check.seconds,
               "left_after": left, "fix_report": fix.report}),
    );
    Ok(())
}

//! `clerk-sync changes tail`: the change feed (`clerk.changes`, docs/change-feed.md) as lines, or
//! one JSON object per line with `--json`. Without `--from` it starts with the last `--lines`
//! changes, like `tail`; with `--follow` it then waits for more, woken by `LISTEN clerk_changes`
//! (with a one-second poll in case a notification is lost with a connection). It reads the cursor,
//! so every change after the starting position is printed once, in position order.

use std::time::Duration;

use clap::{Args, Subcommand};
use clerk_sync_core::settings::Settings;
use clerk_sync_store::db;
use clerk_sync_store::feed::{self, Change};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::output::Output;

#[derive(Subcommand)]
pub enum ChangesCommand {
    /// Print changes in position order: the last few, every one after --from, and with --follow
    /// the new ones as they commit.
    Tail(TailArgs),
}

#[derive(Args)]
pub struct TailArgs {
    /// Only this resource: user, organization or membership.
    #[arg(long, value_parser = ["user", "organization", "membership"])]
    pub resource: Option<String>,
    /// Keep printing new changes until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print every change after this position (0: all retained) instead of the last --lines.
    #[arg(long, value_name = "POSITION")]
    pub from: Option<i64>,
    /// Without --from: how many of the latest changes to start with.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub lines: i64,
}

/// Rows read per query.
const PAGE: i64 = 1_000;
/// The poll behind LISTEN: a notification can be lost when the connection drops.
const POLL: Duration = Duration::from_secs(1);

pub async fn run(settings: &Settings, command: ChangesCommand, out: Output) -> anyhow::Result<()> {
    match command {
        ChangesCommand::Tail(args) => tail(settings, &args, out).await,
    }
}

async fn tail(settings: &Settings, args: &TailArgs, out: Output) -> anyhow::Result<()> {
    let pool = db::pool(&settings.database, "clerk-sync-cli").map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
    // Listen before the first read, so nothing committed in between goes unnoticed.
    let mut listener = if args.follow {
        let mut l = PgListener::connect_with(&pool).await?;
        l.listen(feed::CHANNEL).await?;
        Some(l)
    } else {
        None
    };
    let resource = args.resource.as_deref();
    let mut position = match args.from {
        Some(p) => p,
        None => start(&pool, resource, args.lines).await?,
    };
    loop {
        loop {
            let page = feed::after(&pool, position, resource, PAGE).await?;
            for change in &page {
                print(change, out);
            }
            match page.last() {
                Some(last) if page.len() == usize::try_from(PAGE).unwrap_or(usize::MAX) => position = last.position,
                Some(last) => {
                    position = last.position;
                    break;
                }
                None => break,
            }
        }
        let Some(listener) = listener.as_mut() else { return Ok(()) };
        tokio::select! {
            () = clerk_sync_core::shutdown::signal() => return Ok(()),
            // A notification or the poll: either way, read after the position again.
            n = tokio::time::timeout(POLL, listener.recv()) => { if let Ok(n) = n { n?; } }
        }
    }
}

/// The position after which the last `lines` changes (of `resource`) come.
async fn start(pool: &PgPool, resource: Option<&str>, lines: i64) -> anyhow::Result<i64> {
    let p: Option<i64> = sqlx::query_scalar(
        "SELECT min(position) - 1 FROM (SELECT position FROM clerk.changes
         WHERE position IS NOT NULL AND ($1::text IS NULL OR resource = $1)
         ORDER BY position DESC LIMIT $2) AS t",
    )
    .bind(resource)
    .bind(lines.max(0))
    .fetch_one(pool)
    .await?;
    match p {
        Some(p) => Ok(p),
        None => Ok(feed::last_position(pool).await?),
    }
}

fn print(change: &Change, out: Output) {
    if out.json {
        println!("{}", serde_json::to_string(change).unwrap_or_default());
        return;
    }
    let version = change.version.map_or_else(|| "-".to_owned(), |v| v.to_rfc3339());
    println!(
        "{:>8}  {}  {:<22} {:<34} version {}  [{}]  {}",
        change.position,
        change.committed_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        change.routing_key(),
        change.object_id,
        version,
        change.changed.join(","),
        change.svix_id.as_deref().unwrap_or("-"),
    );
}

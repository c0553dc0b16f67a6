//! `clerk-sync events`: the event history (`clerk.event_history`, kept by the worker) searched by
//! selectors (`list`), one event in full (`show`), and replays through the queue (`replay`); and
//! `clerk-sync reproject` (`reproject`), which rebuilds the synced tables from it.

pub mod replay;
pub mod reproject;

use chrono::{DateTime, Utc};
use clerk_sync_core::settings::Settings;
use clerk_sync_store::db;
use clerk_sync_store::history::query::{self, Filter, Stored};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::cli::{EventSelectors, EventsCommand};
use crate::output::{self, Output};

pub async fn run(settings: &Settings, command: EventsCommand, out: Output) -> anyhow::Result<()> {
    let pool = connect(settings, "clerk-sync-events").await?;
    match command {
        EventsCommand::List(args) => list(&pool, &args.selectors, args.limit, out).await,
        EventsCommand::Show { svix_id } => show(&pool, &svix_id, out).await,
        EventsCommand::Replay(args) => replay::replay(settings, &pool, &args, out).await,
    }
}

pub(crate) async fn connect(settings: &Settings, name: &str) -> anyhow::Result<PgPool> {
    let pool = db::pool(&settings.database, name)?;
    db::check_schema(&pool).await?;
    Ok(pool)
}

/// `2h` (that long ago) or an RFC 3339 instant.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(ago) = humantime::parse_duration(s) {
        let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
        return Ok(Utc::now() - ago);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{s:?} is neither a duration ago (2h, 3d) nor an RFC 3339 time"))
}

pub(crate) fn filter(s: &EventSelectors) -> Filter {
    Filter {
        user_id: s.user_id.clone(),
        organization_id: s.organization_id.clone(),
        event_type: s.event_type.clone(),
        since: s.since,
        until: s.until,
        outcome: s.outcome.clone(),
    }
}

fn summary(e: &Stored) -> Value {
    json!({
        "svix_id": e.svix_id, "type": e.event_type, "received_at": e.received_at, "occurred_at": e.occurred_at,
        "object_id": e.object_id, "user_id": e.user_id, "organization_id": e.organization_id,
        "outcome": e.outcome, "replay_of": e.replay_of, "scrubbed_at": e.scrubbed_at,
    })
}

async fn list(pool: &PgPool, selectors: &EventSelectors, limit: i64, out: Output) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let events = query::list(&mut conn, &filter(selectors), limit.max(1)).await?;
    if out.json {
        output::print_json(&Value::Array(events.iter().map(summary).collect()));
        return Ok(());
    }
    println!("{:<24} {:<34} {:<32} {:<8} OBJECT", "RECEIVED", "SVIX-ID", "TYPE", "OUTCOME");
    for e in &events {
        println!(
            "{:<24} {:<34} {:<32} {:<8} {}",
            e.received_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            output::truncate(&e.svix_id, 34),
            output::truncate(&e.event_type, 32),
            e.outcome,
            e.object_id.as_deref().unwrap_or("-"),
        );
    }
    eprintln!("{} event(s)", events.len());
    Ok(())
}

async fn show(pool: &PgPool, svix_id: &str, out: Output) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let Some(event) = query::show(&mut conn, svix_id).await? else {
        anyhow::bail!("no stored event has svix-id {svix_id:?} (it may be older than worker.event_retention)");
    };
    let body = event
        .body()
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap_or_else(|_| json!(String::from_utf8_lossy(&b))));
    if out.json {
        let mut v = summary(&event);
        v["body"] = body.unwrap_or(Value::Null);
        output::print_json(&v);
        return Ok(());
    }
    for (k, v) in summary(&event).as_object().into_iter().flatten() {
        if !v.is_null() {
            println!("{k:<16} {}", v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        }
    }
    match body {
        Some(b) => println!("\n{}", serde_json::to_string_pretty(&b).unwrap_or_default()),
        None => println!("\n(no body stored)"),
    }
    Ok(())
}

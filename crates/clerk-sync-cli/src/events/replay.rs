//! `clerk-sync events replay`: the selected stored events published through the queue again,
//! confirmed, oldest first. Each is a new message (its own svix-id, `replay-<run>-<original>`, so
//! deduplication lets it through) that names its original (`x-replay-of`), so the worker ranks it
//! as the original's version, not a newer one: the ordering guard decides exactly as it would
//! have, and replaying what is already applied changes nothing. The report counts what the workers
//! made of the replays: applied, stale, ignored (and pending, if they had not finished in --wait).

use std::time::Duration;

use clerk_sync_core::amqp::{self, OutgoingMessage, Publisher, PublisherOptions, headers};
use clerk_sync_core::settings::Settings;
use clerk_sync_store::history::query;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde_json::json;
use sqlx::PgPool;

use crate::cli::EventsReplayArgs;
use crate::output::{self, Output};

const PAGE: i64 = 500;

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    selected: u64,
    published: u64,
    /// Events whose body is not stored (turned off, or dropped).
    skipped_without_body: u64,
    applied: u64,
    stale: u64,
    ignored: u64,
    /// Published but not yet processed when --wait ran out.
    pending: u64,
}

pub async fn replay(settings: &Settings, pool: &PgPool, args: &EventsReplayArgs, out: Output) -> anyhow::Result<()> {
    let mut filter = super::filter(&args.selectors);
    // The workers store this run's replays in the history as they process them, stamped after
    // this instant: without the bound a later page of a window reaching now would select them
    // too, and the run would replay its own replays (and then wait for outcomes that never come).
    let started = chrono::Utc::now();
    filter.until = Some(filter.until.map_or(started, |until| until.min(started)));
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut conn = pool.acquire().await?;
    let mut report = Report::default();
    if args.dry_run || !args.yes {
        let (count, by_type) = count(&mut conn, &filter, limit).await?;
        if args.dry_run {
            let v = json!({"dry_run": true, "selected": count, "by_type": by_type});
            if out.json {
                output::print_json(&v);
            } else {
                println!("would replay {count} event(s)");
                for (t, n) in by_type.as_object().into_iter().flatten() {
                    println!("  {t:<40} {n}");
                }
            }
            return Ok(());
        }
        if !output::confirm(&format!("Replay {count} stored event(s) through the queue?"))? {
            anyhow::bail!("not confirmed; nothing replayed");
        }
    }
    let publisher = Publisher::start(PublisherOptions::from_settings(settings, "clerk-sync-events-replay"));
    if !publisher.wait_connected(Duration::from_secs(15)).await {
        anyhow::bail!("cannot reach RabbitMQ at amqp.url to publish the replays");
    }
    let run = format!("{:x}", chrono::Utc::now().timestamp_millis());
    let exchange = publisher.topology().exchange();
    let mut ids = Vec::new();
    let mut after = None;
    'pages: loop {
        let page = query::page(&mut conn, &filter, after.clone(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.received_at, last.svix_id.clone()));
        for event in &page {
            if report.selected >= limit {
                break 'pages;
            }
            report.selected += 1;
            let Some(body) = event.body() else {
                report.skipped_without_body += 1;
                continue;
            };
            let original = event.replay_of.as_deref().unwrap_or(&event.svix_id);
            let id = format!("replay-{run}-{original}");
            let mut table = FieldTable::default();
            amqp::put_str(&mut table, headers::REPLAY_OF, original);
            amqp::put_i64(&mut table, headers::RECEIVED_AT, amqp::now_ms());
            if let Some(at) = event.occurred_at {
                amqp::put_i64(&mut table, headers::SVIX_TIMESTAMP, at.timestamp());
            }
            let properties = BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_app_id("clerk-sync-events-replay".into())
                .with_headers(table);
            let msg = OutgoingMessage { exchange: &exchange, routing_key: &event.event_type, body: &body, properties };
            publisher.publish(msg).await.map_err(|e| anyhow::anyhow!("publishing the replay of {original}: {e}"))?;
            report.published += 1;
            ids.push(id);
        }
    }
    publisher.close().await;
    wait_for_outcomes(pool, &ids, args.wait, &mut report).await?;
    if out.json {
        output::print_json(&serde_json::to_value(&report)?);
    } else {
        println!(
            "replayed {} of {} selected: {} applied, {} stale, {} ignored, {} pending, {} without a stored body",
            report.published,
            report.selected,
            report.applied,
            report.stale,
            report.ignored,
            report.pending,
            report.skipped_without_body
        );
    }
    Ok(())
}

async fn count(
    conn: &mut sqlx::PgConnection,
    filter: &query::Filter,
    limit: u64,
) -> anyhow::Result<(u64, serde_json::Value)> {
    let (mut count, mut by_type) = (0u64, serde_json::Map::new());
    let mut after = None;
    while count < limit {
        let page = query::page(conn, filter, after.clone(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.received_at, last.svix_id.clone()));
        for e in page.iter().take(usize::try_from(limit - count).unwrap_or(usize::MAX)) {
            count += 1;
            let n = by_type.entry(e.event_type.clone()).or_insert(json!(0));
            *n = json!(n.as_u64().unwrap_or(0) + 1);
        }
    }
    Ok((count, serde_json::Value::Object(by_type)))
}

/// Polls `clerk.webhook_events` until every replay has an outcome or `wait` runs out.
async fn wait_for_outcomes(pool: &PgPool, ids: &[String], wait: Duration, report: &mut Report) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT outcome, count(*) FROM clerk.webhook_events WHERE svix_id = ANY ($1) GROUP BY outcome",
        )
        .bind(ids)
        .fetch_all(pool)
        .await?;
        let get = |o: &str| rows.iter().find(|(k, _)| k == o).map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0));
        (report.applied, report.stale, report.ignored) = (get("applied"), get("stale"), get("ignored"));
        let done = report.applied + report.stale + report.ignored;
        report.pending = report.published.saturating_sub(done);
        if report.pending == 0 || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

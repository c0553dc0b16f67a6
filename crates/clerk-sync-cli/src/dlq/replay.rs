//! Replaying and purging dead letters.
//!
//! A replayed message is published to the events exchange with its original routing key and
//! properties, its retry bookkeeping removed, and only once RabbitMQ has confirmed that copy is the
//! dead letter acknowledged (removed). A crash in between leaves the dead letter in place and,
//! at worst, a duplicate in the main queue, which the worker recognises by its svix-id.

use std::time::Duration;

use clerk_sync_core::amqp::{OutgoingMessage, Publisher, PublisherOptions, headers};
use clerk_sync_core::settings::Settings;
use comfy_table::Table;
use lapin::types::FieldTable;
use serde_json::json;

use super::{Browser, DeadLetter};
use crate::cli::{PurgeArgs, ReplayArgs};
use crate::output::{self, Output};

/// Headers that describe a failure; a replay starts the message's life over without them.
const FAILURE_HEADERS: &[&str] = &[
    headers::ERROR,
    headers::ERROR_KIND,
    headers::ATTEMPTS,
    headers::FIRST_FAILED_AT,
    headers::ORIGINAL_ROUTING_KEY,
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
    "x-last-death-exchange",
    "x-delivery-count",
];

fn cleaned(table: Option<&FieldTable>) -> FieldTable {
    let mut out = FieldTable::default();
    if let Some(t) = table {
        for (k, v) in t.inner() {
            if !FAILURE_HEADERS.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

fn selected<'a>(
    letters: &'a [DeadLetter],
    ids: &[String],
    event_type: Option<&String>,
    error_kind: Option<&String>,
    older_than: Option<Duration>,
) -> Vec<&'a DeadLetter> {
    let cutoff =
        older_than.map(|d| chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
    letters
        .iter()
        .filter(|d| ids.is_empty() || ids.contains(&d.svix_id))
        .filter(|d| event_type.is_none_or(|t| &d.event_type == t))
        .filter(|d| error_kind.is_none_or(|k| &d.error_kind == k))
        .filter(|d| cutoff.is_none_or(|c| d.first_failed_at.is_some_and(|t| t < c)))
        .collect()
}

fn print_selection(letters: &[&DeadLetter], verb: &str, out: Output) {
    if out.json {
        return;
    }
    let mut table = Table::new();
    table.set_header(vec!["svix-id", "type", "error kind", "routing key"]);
    for d in letters {
        table.add_row(vec![
            d.svix_id.clone(),
            d.event_type.clone(),
            d.error_kind.clone(),
            d.original_routing_key.clone(),
        ]);
    }
    println!("{table}");
    println!("{} dead letter(s) {verb}", letters.len());
}

fn summary(out: Output, action: &str, done: usize, skipped: usize, failed: usize, dry_run: bool) {
    if out.json {
        output::print_json(
            &json!({ "action": action, "dry_run": dry_run, action: done, "skipped": skipped, "failed": failed }),
        );
    } else {
        println!("{action}: {done}, skipped: {skipped}, failed: {failed}{}", if dry_run { " (dry run)" } else { "" });
    }
}

pub async fn replay(settings: &Settings, args: &ReplayArgs, out: Output) -> anyhow::Result<()> {
    let topology = clerk_sync_core::amqp::Topology::new(settings.amqp.prefix.clone(), settings.amqp.delivery_limit);
    let browser = Browser::open(settings.amqp_url(), &topology).await?;
    let s = &args.selection;
    let mut chosen = selected(browser.letters(), &s.ids, s.event_type.as_ref(), s.error_kind.as_ref(), None);
    chosen.truncate(args.limit.unwrap_or(usize::MAX));
    let skipped = browser.letters().len() - chosen.len();
    print_selection(&chosen, if args.dry_run { "would be replayed" } else { "selected" }, out);
    if args.dry_run || chosen.is_empty() {
        summary(out, "moved", if args.dry_run { chosen.len() } else { 0 }, skipped, 0, args.dry_run);
        browser.close().await;
        return Ok(());
    }
    let bulk = s.ids.is_empty() || chosen.len() > s.ids.len();
    if bulk
        && !args.yes
        && !output::confirm(&format!("Replay {} dead letter(s) to {}?", chosen.len(), topology.exchange()))?
    {
        browser.close().await;
        anyhow::bail!("nothing replayed");
    }

    let publisher = Publisher::start(PublisherOptions::from_settings(settings, "clerk-sync-cli"));
    if !publisher.wait_connected(Duration::from_secs(10)).await {
        browser.close().await;
        anyhow::bail!("cannot connect to RabbitMQ to publish");
    }
    let progress = output::progress(chosen.len() as u64, "replaying", out);
    let (mut moved, mut failed) = (0, 0);
    for d in &chosen {
        let properties = d.delivery.properties.clone().with_headers(cleaned(d.delivery.properties.headers().as_ref()));
        let published = publisher
            .publish(OutgoingMessage {
                exchange: &topology.exchange(),
                routing_key: &d.original_routing_key,
                body: &d.body,
                properties,
            })
            .await;
        let result = match published {
            Ok(()) => d.ack().await.map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) => moved += 1,
            Err(e) => {
                failed += 1;
                progress.println(format!("failed to replay {}: {e}", d.svix_id));
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    publisher.close().await;
    browser.close().await;
    summary(out, "moved", moved, skipped, failed, false);
    anyhow::ensure!(
        failed == 0,
        "{failed} dead letter(s) could not be replayed; they are still in the dead-letter queue"
    );
    Ok(())
}

pub async fn purge(settings: &Settings, args: &PurgeArgs, out: Output) -> anyhow::Result<()> {
    let topology = clerk_sync_core::amqp::Topology::new(settings.amqp.prefix.clone(), settings.amqp.delivery_limit);
    let browser = Browser::open(settings.amqp_url(), &topology).await?;
    let s = &args.selection;
    let chosen = selected(browser.letters(), &s.ids, s.event_type.as_ref(), None, s.older_than);
    let skipped = browser.letters().len() - chosen.len();
    print_selection(&chosen, "selected", out);
    if chosen.is_empty() {
        summary(out, "purged", 0, skipped, 0, false);
        browser.close().await;
        return Ok(());
    }
    if !args.yes && !output::confirm(&format!("Delete {} dead letter(s) for good?", chosen.len()))? {
        browser.close().await;
        anyhow::bail!("nothing purged");
    }
    let (mut purged, mut failed) = (0, 0);
    for d in &chosen {
        match d.ack().await {
            Ok(()) => purged += 1,
            Err(_) => failed += 1,
        }
    }
    browser.close().await;
    summary(out, "purged", purged, skipped, failed, false);
    anyhow::ensure!(failed == 0, "{failed} dead letter(s) could not be purged");
    Ok(())
}

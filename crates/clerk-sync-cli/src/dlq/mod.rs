//! The dead-letter queue, read without losing or reordering anything.
//!
//! RabbitMQ has no "peek": the CLI takes every ready message without acknowledging it (so it stays
//! owned by the queue), looks, and then acknowledges only what an operator asked to move or delete.
//! Everything else goes back when the channel closes, ahead of newer messages, in its original
//! order. While one operator holds messages, another does not see them, so no message can be
//! replayed or purged twice by two operators at once.

mod browse;
mod replay;

pub use browse::{Browser, DeadLetter};
pub use replay::{purge, replay};

use std::collections::BTreeMap;

use clerk_sync_core::amqp::Topology;
use comfy_table::Table;
use serde_json::json;

use crate::cli::{Filters, ListArgs};
use crate::output::{self, Output};

fn matches(d: &DeadLetter, f: &Filters) -> bool {
    f.event_type.as_ref().is_none_or(|t| &d.event_type == t) && f.error_kind.as_ref().is_none_or(|k| &d.error_kind == k)
}

pub async fn stats(amqp_url: &str, topology: &Topology, out: Output) -> anyhow::Result<()> {
    let browser = Browser::open(amqp_url, topology).await?;
    let letters = browser.letters();
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for d in letters {
        *by_type.entry(&d.event_type).or_default() += 1;
        *by_kind.entry(&d.error_kind).or_default() += 1;
    }
    let oldest = letters.iter().filter_map(|d| d.first_failed_at).min();
    let newest = letters.iter().filter_map(|d| d.first_failed_at).max();
    if out.json {
        output::print_json(&json!({
            "queue": topology.dead_queue(),
            "count": letters.len(),
            "oldest_first_failed_at": oldest,
            "newest_first_failed_at": newest,
            "by_type": by_type,
            "by_error_kind": by_kind,
        }));
    } else {
        println!("{} dead letter(s) in {}", letters.len(), topology.dead_queue());
        if let (Some(o), Some(n)) = (oldest, newest) {
            println!("oldest first failed {o}, newest {n}");
        }
        for (title, map) in [("event type", &by_type), ("error kind", &by_kind)] {
            let mut table = Table::new();
            table.set_header(vec![title, "count"]);
            for (k, v) in map {
                table.add_row(vec![(*k).to_owned(), v.to_string()]);
            }
            println!("{table}");
        }
    }
    browser.close().await;
    Ok(())
}

pub async fn list(amqp_url: &str, topology: &Topology, args: &ListArgs, out: Output) -> anyhow::Result<()> {
    let browser = Browser::open(amqp_url, topology).await?;
    let cutoff =
        args.since.map(|s| chrono::Utc::now() - chrono::Duration::from_std(s).unwrap_or(chrono::Duration::MAX));
    let selected: Vec<&DeadLetter> = browser
        .letters()
        .iter()
        .filter(|d| matches(d, &args.filters))
        .filter(|d| cutoff.is_none_or(|c| d.first_failed_at.is_some_and(|t| t >= c)))
        .take(args.limit)
        .collect();
    if out.json {
        output::print_json(&serde_json::Value::Array(selected.iter().map(|d| d.summary()).collect()));
    } else {
        let mut table = Table::new();
        table.set_header(vec!["svix-id", "type", "error kind", "error", "attempts", "first failed at"]);
        for d in &selected {
            table.add_row(vec![
                d.svix_id.clone(),
                d.event_type.clone(),
                d.error_kind.clone(),
                output::truncate(&d.error, 60),
                d.attempts.to_string(),
                d.first_failed_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            ]);
        }
        println!("{table}");
        println!("{} shown of {} dead letter(s)", selected.len(), browser.letters().len());
    }
    browser.close().await;
    Ok(())
}

pub async fn show(amqp_url: &str, topology: &Topology, svix_id: &str, out: Output) -> anyhow::Result<()> {
    let browser = Browser::open(amqp_url, topology).await?;
    let found = browser.letters().iter().find(|d| d.svix_id == svix_id);
    let result = match found {
        None => Err(anyhow::anyhow!("no dead letter with svix-id {svix_id} in {}", topology.dead_queue())),
        Some(d) if out.json => {
            output::print_json(&d.detail());
            Ok(())
        }
        Some(d) => {
            println!("svix-id:          {}", d.svix_id);
            println!("event type:       {}", d.event_type);
            println!("error kind:       {}", d.error_kind);
            println!("error:            {}", d.error);
            println!("attempts:         {}", d.attempts);
            println!("first failed at:  {}", d.first_failed_at.map(|t| t.to_rfc3339()).unwrap_or_default());
            println!("routing key:      {}", d.original_routing_key);
            println!("headers:");
            for (k, v) in &d.headers {
                println!("  {k}: {v}");
            }
            println!("body ({} bytes):", d.body.len());
            println!("{}", d.pretty_body());
            Ok(())
        }
    };
    browser.close().await;
    result
}

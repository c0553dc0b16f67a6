//! `dlq stats`, `list` and `show`, and the look a dry run takes: letters are held, never
//! acknowledged, and only what is printed is kept in memory.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clerk_sync_core::amqp::{Nodes, Topology};
use comfy_table::Table;
use lapin::message::Delivery;
use serde_json::json;

use super::cursor::{Cursor, Want};
use super::letter::{DeadLetter, Detail};
use super::{Selector, ago};
use crate::cli::ListArgs;
use crate::output::{self, Output};

/// How many letters `stats` breaks down by type and error kind (the total comes from the queue's
/// counter): enough to see what failed, quick on a queue of millions.
pub const STATS_SCAN: usize = 10_000;
/// Prefetch while looking: bodies held in memory at once.
const LOOK_PREFETCH: u16 = 1_000;
/// Rows a dry run prints; the count covers them all.
pub const TABLE_ROWS: usize = 20;

async fn open(nodes: &Nodes, topology: &Topology) -> anyhow::Result<Cursor> {
    let cursor = Cursor::open(nodes, topology, LOOK_PREFETCH).await?;
    cursor.stop_on_ctrl_c();
    Ok(cursor)
}

/// The next letter, held: it goes back in place when the cursor finishes.
async fn look(cursor: &mut Cursor, want: Want) -> anyhow::Result<Option<Delivery>> {
    let delivery = cursor.next(want).await?;
    if let Some(d) = &delivery {
        cursor.hold(d.delivery_tag);
    }
    Ok(delivery)
}

/// Hands everything back; an interrupted look prints nothing.
async fn close(cursor: Cursor) -> anyhow::Result<()> {
    let interrupted = cursor.interrupted();
    cursor.finish().await?;
    anyhow::ensure!(!interrupted, "interrupted; every dead letter is still in the queue, in order");
    Ok(())
}

#[derive(Default)]
struct Breakdown {
    by_type: BTreeMap<String, usize>,
    by_kind: BTreeMap<String, usize>,
    oldest: Option<DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
    scanned: usize,
}

impl Breakdown {
    fn add(&mut self, d: DeadLetter) {
        *self.by_type.entry(d.event_type).or_default() += 1;
        *self.by_kind.entry(d.error_kind).or_default() += 1;
        if let Some(t) = d.first_failed_at {
            self.oldest = Some(self.oldest.map_or(t, |o| o.min(t)));
            self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        }
        self.scanned += 1;
    }
}

pub async fn stats(nodes: &Nodes, topology: &Topology, out: Output) -> anyhow::Result<()> {
    let mut cursor = open(nodes, topology).await?;
    let count = cursor.initial();
    let progress = output::progress((count as usize).min(STATS_SCAN) as u64, "counting", out);
    let mut b = Breakdown::default();
    while b.scanned < STATS_SCAN {
        let Some(d) = look(&mut cursor, Want::Exactly(STATS_SCAN - b.scanned)).await? else { break };
        b.add(DeadLetter::parse(&d));
        progress.inc(1);
    }
    progress.finish_and_clear();
    close(cursor).await?;
    let complete = b.scanned >= count as usize;
    if out.json {
        output::print_json(&json!({
            "queue": topology.dead_queue(),
            "count": count,
            "scanned": b.scanned,
            "complete": complete,
            "oldest_first_failed_at": b.oldest,
            "newest_first_failed_at": b.newest,
            "by_type": b.by_type,
            "by_error_kind": b.by_kind,
        }));
        return Ok(());
    }
    println!("{count} dead letter(s) in {}", topology.dead_queue());
    if !complete {
        println!("below: the first {} (the oldest failures); `dlq list --type ...` looks further", b.scanned);
    }
    if let (Some(o), Some(n)) = (b.oldest, b.newest) {
        println!("oldest first failed {o}, newest {n}");
    }
    for (title, map) in [("event type", &b.by_type), ("error kind", &b.by_kind)] {
        let mut table = Table::new();
        table.set_header(vec![title, "count"]);
        for (k, v) in map {
            table.add_row(vec![k.clone(), v.to_string()]);
        }
        println!("{table}");
    }
    Ok(())
}

pub async fn list(nodes: &Nodes, topology: &Topology, args: &ListArgs, out: Output) -> anyhow::Result<()> {
    let mut selector = Selector {
        event_type: args.filters.event_type.clone(),
        error_kind: args.filters.error_kind.clone(),
        failed_since: args.since.map(ago),
        limit: Some(args.limit),
        ..Selector::default()
    };
    let mut cursor = open(nodes, topology).await?;
    let total = cursor.initial();
    let progress = output::progress(u64::from(total), "looking", out);
    let mut shown = Vec::new();
    while !selector.done() {
        let Some(d) = look(&mut cursor, selector.want()).await? else { break };
        let letter = DeadLetter::parse(&d);
        if selector.take(&letter) {
            shown.push(letter);
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    close(cursor).await?;
    if out.json {
        output::print_json(&serde_json::Value::Array(shown.iter().map(DeadLetter::summary).collect()));
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header(vec!["svix-id", "type", "error kind", "error", "attempts", "first failed at"]);
    for d in &shown {
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
    println!("{} shown of {total} dead letter(s)", shown.len());
    Ok(())
}

pub async fn show(nodes: &Nodes, topology: &Topology, svix_id: &str, out: Output) -> anyhow::Result<()> {
    let mut selector = Selector::default().ids(&[svix_id.to_owned()]);
    let mut cursor = open(nodes, topology).await?;
    let progress = output::progress(u64::from(cursor.initial()), "looking", out);
    let mut found = None;
    while !selector.done() {
        let Some(d) = look(&mut cursor, selector.want()).await? else { break };
        if selector.take(&DeadLetter::parse(&d)) {
            found = Some(Detail::new(d));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    close(cursor).await?;
    let Some(d) = found else {
        anyhow::bail!("no dead letter with svix-id {svix_id} in {}", topology.dead_queue());
    };
    if out.json {
        output::print_json(&d.json());
        return Ok(());
    }
    let l = &d.letter;
    println!("svix-id:          {}", l.svix_id);
    println!("event type:       {}", l.event_type);
    println!("error kind:       {}", l.error_kind);
    println!("error:            {}", l.error);
    println!("attempts:         {}", l.attempts);
    println!("first failed at:  {}", l.first_failed_at.map(|t| t.to_rfc3339()).unwrap_or_default());
    println!("routing key:      {}", l.original_routing_key);
    println!("headers:");
    for (k, v) in &d.headers {
        println!("  {k}: {v}");
    }
    println!("body ({} bytes):", d.body.len());
    println!("{}", d.pretty_body());
    Ok(())
}

/// What a dry run found: the first [`TABLE_ROWS`] selected letters, how many were selected and how
/// many were looked at and left.
pub struct Preview {
    pub rows: Vec<DeadLetter>,
    pub selected: usize,
    pub skipped: usize,
}

/// Looks through the queue as a replay or purge with `selector` would, changing nothing. With no
/// filter the count is the queue's own and only the printed rows are taken.
pub async fn preview(
    nodes: &Nodes,
    topology: &Topology,
    mut selector: Selector,
    out: Output,
) -> anyhow::Result<Preview> {
    let mut cursor = open(nodes, topology).await?;
    let everything = selector.is_everything().then(|| selector.expected(cursor.initial()) as usize);
    let progress = output::progress(selector.expected(cursor.initial()), "looking", out);
    let (mut rows, mut selected, mut skipped) = (Vec::new(), 0, 0);
    while !selector.done() && everything.is_none_or(|n| rows.len() < n.min(TABLE_ROWS)) {
        let want = if everything.is_some() { Want::Exactly(TABLE_ROWS - rows.len()) } else { selector.want() };
        let Some(d) = look(&mut cursor, want).await? else { break };
        let letter = DeadLetter::parse(&d);
        if selector.take(&letter) {
            selected += 1;
            if rows.len() < TABLE_ROWS {
                rows.push(letter);
            }
        } else {
            skipped += 1;
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    close(cursor).await?;
    Ok(Preview { rows, selected: everything.unwrap_or(selected), skipped })
}

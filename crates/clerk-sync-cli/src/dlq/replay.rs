//! Replaying and purging dead letters, streamed.
//!
//! A replayed letter is published to the events exchange with its original routing key and
//! properties, its retry bookkeeping removed, on one confirm channel (so the main queue receives
//! the letters in their dead-letter order), with up to `--window` copies awaiting RabbitMQ's confirm
//! at once; each dead letter is acknowledged (removed) only once its copy is confirmed, in
//! contiguous runs of one frame when possible. A crash in between leaves the dead letter in place
//! and, at worst, a duplicate in the main queue, which the worker recognises by its svix-id.
//! Letters a filter leaves are held and handed back in order at the end. The first failed publish
//! stops the run: what was confirmed is acknowledged, the rest stays.

use std::time::Duration;

use clerk_sync_core::amqp::{Nodes, Topology, headers};
use clerk_sync_core::settings::Settings;
use comfy_table::Table;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation};
use serde_json::json;

use super::cursor::Cursor;
use super::inspect::{self, Preview};
use super::letter::DeadLetter;
use super::{Selector, ago};
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
/// Acknowledgements collected before one is sent (a contiguous run is one frame).
const ACK_BATCH: usize = 256;
/// A purge publishes nothing; its prefetch is what it holds in memory at once.
const PURGE_PREFETCH: u16 = 2_000;

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

fn print_preview(p: &Preview, verb: &str, out: Output) {
    if out.json {
        return;
    }
    let mut table = Table::new();
    table.set_header(vec!["svix-id", "type", "error kind", "routing key"]);
    for d in &p.rows {
        table.add_row(vec![
            d.svix_id.clone(),
            d.event_type.clone(),
            d.error_kind.clone(),
            d.original_routing_key.clone(),
        ]);
    }
    println!("{table}");
    if p.selected > p.rows.len() {
        println!("... and {} more", p.selected - p.rows.len());
    }
    println!("{} dead letter(s) {verb}", p.selected);
}

/// What a run did, printed as one line or one JSON object.
#[derive(Default)]
struct Tally {
    done: usize,
    skipped: usize,
    failed: usize,
    first_error: Option<String>,
    remaining: Option<u32>,
    interrupted: bool,
}

impl Tally {
    fn print(&self, out: Output, action: &str, dry_run: bool) {
        if out.json {
            output::print_json(&json!({
                "action": action, "dry_run": dry_run, action: self.done, "skipped": self.skipped,
                "failed": self.failed, "remaining": self.remaining, "interrupted": self.interrupted,
            }));
            return;
        }
        let left = self.remaining.map(|r| format!("; {r} left in the dead-letter queue")).unwrap_or_default();
        let dry = if dry_run { " (dry run)" } else { "" };
        println!("{action}: {}, skipped: {}, failed: {}{left}{dry}", self.done, self.skipped, self.failed);
    }

    fn result(&self, what: &str) -> anyhow::Result<()> {
        if let Some(e) = &self.first_error {
            anyhow::bail!("{} dead letter(s) could not be {what} ({e}); they are still in the queue", self.failed);
        }
        anyhow::ensure!(!self.interrupted, "interrupted after {} {what}; the rest are still in the queue", self.done);
        Ok(())
    }
}

/// Asks before a bulk change (refuses without a terminal unless `yes`); gives the cursor back.
async fn confirmed(cursor: Cursor, yes: bool, question: &str) -> anyhow::Result<Option<Cursor>> {
    let answer = if yes { Ok(true) } else { output::confirm(question) };
    if matches!(answer, Ok(true)) {
        return Ok(Some(cursor));
    }
    cursor.finish().await?;
    answer.map(|_| None)
}

fn describe(selector: &Selector, ready: u32, older_than: Option<Duration>) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &selector.event_type {
        parts.push(format!("of type {t}"));
    }
    if let Some(k) = &selector.error_kind {
        parts.push(format!("with error kind {k}"));
    }
    if let Some(u) = &selector.user_id {
        parts.push(format!("about user {u}"));
    }
    if let Some(d) = older_than {
        parts.push(format!("that first failed over {} ago", humantime::format_duration(d)));
    }
    match (selector.limit, parts.is_empty()) {
        (None, true) => format!("all {ready} dead letter(s)"),
        (Some(l), true) => format!("up to {l} of the {ready} dead letter(s)"),
        (None, false) => format!("the dead letters {} (of {ready})", parts.join(", ")),
        (Some(l), false) => format!("up to {l} dead letters {} (of {ready})", parts.join(", ")),
    }
}

type Confirmed = BoxFuture<'static, (u64, String, Result<(), String>)>;

async fn publish(channel: &Channel, exchange: &str, d: &Delivery, letter: &DeadLetter) -> lapin::Result<Confirmed> {
    let properties = d.properties.clone().with_headers(cleaned(d.properties.headers().as_ref()));
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    let routing_key = letter.original_routing_key.as_str();
    let confirm = channel.basic_publish(exchange.into(), routing_key.into(), options, &d.data, properties).await?;
    let (tag, id) = (d.delivery_tag, letter.svix_id.clone());
    Ok(async move {
        let outcome = match confirm.await {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(_))) => Err("no queue is bound for its routing key".to_owned()),
            Ok(Confirmation::Nack(_)) => Err("RabbitMQ refused it (nack)".to_owned()),
            Ok(Confirmation::NotRequested) => Err("the channel is not in confirm mode".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        (tag, id, outcome)
    }
    .boxed())
}

fn settle(
    cursor: &mut Cursor,
    tally: &mut Tally,
    acks: &mut Vec<u64>,
    (tag, id, outcome): (u64, String, Result<(), String>),
) {
    match outcome {
        Ok(()) => {
            acks.push(tag);
            tally.done += 1;
        }
        Err(e) => {
            cursor.hold(tag);
            tally.failed += 1;
            tally.first_error.get_or_insert_with(|| format!("{id}: {e}"));
        }
    }
}

pub async fn replay(settings: &Settings, args: &ReplayArgs, out: Output) -> anyhow::Result<()> {
    let topology = Topology::new(settings.amqp.prefix.clone(), settings.amqp.delivery_limit);
    let s = &args.selection;
    let selector = Selector {
        event_type: s.event_type.clone(),
        error_kind: s.error_kind.clone(),
        limit: args.limit,
        ..Selector::default()
    }
    .ids(&s.ids);
    if args.dry_run {
        let preview = inspect::preview(&Nodes::from_settings(&settings.amqp), &topology, selector, out).await?;
        print_preview(&preview, "would be replayed", out);
        Tally { done: preview.selected, skipped: preview.skipped, ..Tally::default() }.print(out, "moved", true);
        return Ok(());
    }
    let window = usize::try_from(args.window).unwrap_or(1).max(1);
    let prefetch = u16::try_from(window.saturating_mul(2)).unwrap_or(u16::MAX);
    let cursor = Cursor::open(&Nodes::from_settings(&settings.amqp), &topology, prefetch).await?;
    let question = format!("Replay {} to {}?", describe(&selector, cursor.initial(), None), topology.exchange());
    // A replay by id is what the operator just looked up: no question.
    let Some(cursor) = confirmed(cursor, args.yes || selector.by_id, &question).await? else {
        anyhow::bail!("nothing replayed");
    };
    let target = Target { exchange: topology.exchange(), window, confirm_timeout: settings.amqp.confirm_timeout };
    let (tally, run) = stream(cursor, selector, Some(target), out).await;
    tally.print(out, "moved", false);
    run?;
    tally.result("replayed")
}

pub async fn purge(settings: &Settings, args: &PurgeArgs, out: Output) -> anyhow::Result<()> {
    let topology = Topology::new(settings.amqp.prefix.clone(), settings.amqp.delivery_limit);
    let s = &args.selection;
    let selector = Selector {
        event_type: s.event_type.clone(),
        failed_before: s.older_than.map(ago),
        user_id: s.user_id.clone(),
        ..Selector::default()
    }
    .ids(&s.ids);
    let cursor = Cursor::open(&Nodes::from_settings(&settings.amqp), &topology, PURGE_PREFETCH).await?;
    let question = format!("Delete {} for good?", describe(&selector, cursor.initial(), s.older_than));
    let Some(cursor) = confirmed(cursor, args.yes, &question).await? else {
        anyhow::bail!("nothing purged");
    };
    let (tally, run) = stream(cursor, selector, None, out).await;
    tally.print(out, "purged", false);
    run?;
    tally.result("purged")
}

/// Where replayed letters go, and how many may await their confirm at once.
struct Target {
    exchange: String,
    window: usize,
    confirm_timeout: Duration,
}

/// One pass through the queue: each selected letter is republished to `target` and acknowledged
/// once confirmed or, with no target, acknowledged at once (purged); the others are held.
async fn stream(
    mut cursor: Cursor,
    mut selector: Selector,
    target: Option<Target>,
    out: Output,
) -> (Tally, anyhow::Result<()>) {
    cursor.stop_on_ctrl_c();
    let verb = if target.is_some() { "replaying" } else { "purging" };
    let progress = output::progress(selector.expected(cursor.initial()), verb, out);
    let mut tally = Tally::default();
    let run = pass(&mut cursor, &mut selector, target.as_ref(), &mut tally, &progress).await;
    progress.finish_and_clear();
    tally.interrupted = cursor.interrupted();
    // After an error the letters in flight are unsettled too; if the channel still works they go
    // back in order with the held ones, otherwise the broker takes them back with the connection.
    match cursor.finish().await {
        Ok(remaining) => tally.remaining = Some(remaining),
        Err(e) if run.is_ok() => return (tally, Err(e)),
        Err(_) => {}
    }
    (tally, run)
}

async fn pass(
    cursor: &mut Cursor,
    selector: &mut Selector,
    target: Option<&Target>,
    tally: &mut Tally,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let confirms = match target {
        Some(_) => Some(cursor.confirm_channel().await?),
        None => None,
    };
    let window = target.map_or(1, |t| t.window);
    // Taken and not yet acknowledged is what a kill leaves duplicated: keep it near the window.
    let ack_batch = target.map_or(ACK_BATCH, |t| t.window.min(ACK_BATCH));
    let mut inflight: FuturesOrdered<Confirmed> = FuturesOrdered::new();
    let mut acks: Vec<u64> = Vec::new();
    // A purge has nothing in flight; the value only matters for replays.
    let confirm_timeout = target.map_or(Duration::from_secs(5), |t| t.confirm_timeout);
    loop {
        while let Some(Some(done)) = inflight.next().now_or_never() {
            settle(cursor, tally, &mut acks, done);
        }
        if acks.len() >= ack_batch || (target.is_some() && inflight.is_empty() && !acks.is_empty()) {
            cursor.ack(&acks).await?;
            acks.clear();
        }
        if tally.failed > 0 || selector.done() {
            break;
        }
        if inflight.len() >= window {
            match tokio::time::timeout(confirm_timeout, inflight.next()).await {
                Ok(Some(done)) => settle(cursor, tally, &mut acks, done),
                Ok(None) => {}
                Err(_) => anyhow::bail!("RabbitMQ confirmed nothing for {confirm_timeout:?}"),
            }
            continue;
        }
        let Some(d) = cursor.next(selector.want()).await? else { break };
        progress.inc(1);
        let mut letter = DeadLetter::parse(&d);
        if selector.by_user() {
            letter = letter.with_user(&d.data);
        }
        if !selector.take(&letter) {
            cursor.hold(d.delivery_tag);
            tally.skipped += 1;
            continue;
        }
        match (target, &confirms) {
            (Some(t), Some(channel)) => match publish(channel, &t.exchange, &d, &letter).await {
                Ok(confirm) => inflight.push_back(confirm),
                Err(e) => settle(cursor, tally, &mut acks, (d.delivery_tag, letter.svix_id, Err(e.to_string()))),
            },
            _ => settle(cursor, tally, &mut acks, (d.delivery_tag, letter.svix_id, Ok(()))),
        }
    }
    // Everything in flight is settled before the rest goes back.
    while !inflight.is_empty() {
        match tokio::time::timeout(confirm_timeout, inflight.next()).await {
            Ok(Some(done)) => settle(cursor, tally, &mut acks, done),
            Ok(None) => {}
            Err(_) => anyhow::bail!("RabbitMQ confirmed nothing for {confirm_timeout:?}"),
        }
    }
    cursor.ack(&acks).await?;
    if let Some(channel) = confirms {
        let _ = channel.close(200, "done".into()).await;
    }
    Ok(())
}

//! The dead-letter commands on a big queue: 100,000 dead letters shaped as the worker writes them
//! (the gateway's properties and realistic bodies, plus the failure headers), published straight to
//! the dead-letter exchange with pipelined confirms; then `clerk-sync dlq replay --all --yes`, the
//! release binary, as a child process: messages per second from its start to its exit, and its peak
//! resident memory (`VmHWM` of that process, sampled from `/proc` while it runs).
//!
//! `CLERK_SYNC_BENCH_CLI=/path/to/clerk-sync` measures another build of the CLI (an older commit,
//! say), and `CLERK_SYNC_BENCH_DLQ_LETTERS=1000000` another queue size, for a look by hand.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use clerk_sync_core::amqp::{self, headers};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Confirmation, Connection};
use serde_json::json;
use tokio::time::Instant;

use super::{Bench, targets};
use crate::broker;
use crate::procs::{self, Paths};
use crate::report::Row;

/// Dead letters in the queue the replay empties (the figure).
const LETTERS: usize = 100_000;
/// Unconfirmed publishes while filling the dead-letter queue.
const FILL_WINDOW: usize = 2_048;
/// Longest the replay may take; a slower one is stopped (safe at any point) and judged on what it
/// moved by then (the CLI before streaming would have needed about half an hour).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(600);
fn letters() -> usize {
    std::env::var("CLERK_SYNC_BENCH_DLQ_LETTERS").ok().and_then(|v| v.parse().ok()).unwrap_or(LETTERS)
}

fn cli_binary(paths: &Paths) -> PathBuf {
    std::env::var_os("CLERK_SYNC_BENCH_CLI").map_or_else(|| paths.binary("clerk-sync"), PathBuf::from)
}

/// Publishes `n` dead letters, in order, with up to [`FILL_WINDOW`] awaiting their confirm.
async fn fill(b: &mut Bench, conn: &Connection, n: usize) -> anyhow::Result<Duration> {
    let corpus = b.corpus();
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = b.env.topology().dead_exchange();
    let run_id = b.env.run_id.clone();
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    let started = Instant::now();
    let (mut confirms, mut failed, mut body) = (FuturesOrdered::new(), 0usize, Vec::new());
    for seq in 0..n as u64 {
        let template = corpus.get(seq);
        let now_ms = chrono::Utc::now().timestamp_millis();
        body.clear();
        template.render_into(now_ms, &mut body);
        let id = format!("msg_d{run_id}{seq:010}");
        let gateway = broker::properties(&id, template.event_type, now_ms / 1000, now_ms);
        let mut table = gateway.headers().clone().unwrap_or_default();
        amqp::put_str(&mut table, headers::ERROR, "database_rejected: a row violated a constraint");
        amqp::put_str(&mut table, headers::ERROR_KIND, "database_rejected");
        amqp::put_i64(&mut table, headers::ATTEMPTS, 3);
        amqp::put_i64(&mut table, headers::FIRST_FAILED_AT, now_ms);
        amqp::put_str(&mut table, headers::ORIGINAL_ROUTING_KEY, template.event_type);
        let props = gateway.with_headers(table);
        let routing_key = template.event_type;
        confirms.push_back(
            channel.basic_publish(exchange.as_str().into(), routing_key.into(), options, &body, props).await?,
        );
        if confirms.len() >= FILL_WINDOW {
            failed += usize::from(!matches!(confirms.next().await, Some(Ok(Confirmation::Ack(None)))));
        }
    }
    while let Some(confirmed) = confirms.next().await {
        failed += usize::from(!matches!(confirmed, Ok(Confirmation::Ack(None))));
    }
    let elapsed = started.elapsed();
    let _ = channel.close(200, "filled".into()).await;
    anyhow::ensure!(failed == 0, "{failed} of {n} dead letters were not confirmed");
    Ok(elapsed)
}

async fn ready(b: &Bench, queue: String) -> anyhow::Result<u32> {
    let opts = QueueDeclareOptions { passive: true, ..Default::default() };
    Ok(b.channel.queue_declare(queue.into(), opts, FieldTable::default()).await?.message_count())
}

struct Replay {
    seconds: f64,
    peak_kib: u64,
    /// From the CLI's summary; `None` if it was stopped at [`REPLAY_TIMEOUT`].
    moved: Option<u64>,
}

/// Runs the replay with only the bench's variables (no `.env`: the working directory is the logs
/// directory), sampling its peak RSS until it exits.
async fn replay(b: &Bench) -> anyhow::Result<Replay> {
    let exe = cli_binary(&b.paths);
    anyhow::ensure!(exe.is_file(), "{} is missing: run `cargo build --release -p clerk-sync-cli`", exe.display());
    let logs = b.paths.out_dir().join("logs");
    std::fs::create_dir_all(&logs)?;
    let (out_path, log) = (logs.join("dlq-replay.json"), std::fs::File::create(logs.join("dlq-replay.log"))?);
    let mut cmd = Command::new(&exe);
    cmd.current_dir(&logs).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    // The same topology arguments as the bench's (`CLERK_SYNC__*` knobs pass through, as to the services).
    cmd.envs(std::env::vars().filter(|(k, _)| k.starts_with("CLERK_SYNC__")));
    cmd.env("AMQP_URL", &b.env.amqp_url).env("CLERK_SYNC__AMQP__PREFIX", &b.env.prefix);
    cmd.env("CLERK_SYNC__LOG__LEVEL", "warn").args(["--json", "dlq", "replay", "--all", "--yes"]);
    cmd.stdin(Stdio::null()).stdout(std::fs::File::create(&out_path)?).stderr(log);
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
    let (status, peak_kib) = procs::wait_sampling_peak(&mut child, REPLAY_TIMEOUT).await?;
    let seconds = started.elapsed().as_secs_f64();
    let Some(status) = status else {
        return Ok(Replay { seconds, peak_kib, moved: None });
    };
    anyhow::ensure!(status.success(), "the replay failed ({status}); see target/bench/logs/dlq-replay.log");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_path)?).unwrap_or_default();
    Ok(Replay { seconds, peak_kib, moved: Some(summary["moved"].as_u64().unwrap_or(0)) })
}

pub async fn dlq(b: &mut Bench) -> anyhow::Result<()> {
    let letters = letters();
    let topology = b.env.topology();
    b.purge().await?;
    let conn = b.env.amqp().await?;
    let filled = fill(b, &conn, letters).await;
    let _ = conn.close(200, "bye".into()).await;
    let filled = filled?;
    let depth = ready(b, topology.dead_queue()).await?;
    eprintln!("dead-letter queue filled with {letters} letters in {:.1} s; depth {depth}", filled.as_secs_f64());
    anyhow::ensure!(depth as usize == letters, "the dead-letter queue holds {depth} letters, expected {letters}");

    let r = replay(b).await?;
    let (main, left) = (b.queue_depth().await?, ready(b, topology.dead_queue()).await?);
    // A replay stopped at the timeout is judged on what reached the main queue by then.
    let moved = r.moved.unwrap_or(u64::from(main));
    let rate = moved as f64 / r.seconds;
    let mib = r.peak_kib as f64 / 1024.0;
    eprintln!(
        "dlq replay: {moved} of {letters} moved in {:.2} s = {rate:.0} msg/s; CLI peak RSS {mib:.1} MiB; main queue \
         {main}, dead letters left {left}{}",
        r.seconds,
        if r.moved.is_none() { " (stopped at the timeout)" } else { "" }
    );
    let incomplete = (letters as u64).saturating_sub(u64::from(main).min(moved)) + u64::from(left);
    let note = match r.moved {
        Some(_) => format!(
            "{letters} dead letters (mean body {:.0} B) replayed by `clerk-sync dlq replay --all --yes` in {:.1} s, \
             start to exit; {main} in the main queue after",
            b.corpus().mean_len(),
            r.seconds
        ),
        None => format!("stopped after {:.0} s with {moved} of {letters} moved", r.seconds),
    };
    b.rows.push(
        Row::new(format!("dlq replay of {}k dead letters", letters / 1000), rate, "msg/s")
            .goal(&targets::DLQ_REPLAY_PER_S)
            .require_no_errors(incomplete)
            .note(note),
    );
    b.rows.push(
        Row::new(format!("CLI peak RSS replaying {}k dead letters", letters / 1000), mib, "MiB")
            .goal(&targets::DLQ_CLI_RSS_MIB)
            .note("VmHWM of the clerk-sync process, read from /proc every 5 ms while it ran"),
    );
    b.details.insert(
        "dlq".into(),
        json!({"letters": letters, "fill_seconds": filled.as_secs_f64(), "replay_seconds": r.seconds,
               "moved": moved, "timed_out": r.moved.is_none(), "msgs_per_s": rate, "cli_peak_rss_kib": r.peak_kib,
               "main_queue_after": main, "dead_letters_left": left,
               "cli": cli_binary(&b.paths).display().to_string()}),
    );
    b.purge().await?;
    Ok(())
}

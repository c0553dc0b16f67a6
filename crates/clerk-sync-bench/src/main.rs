//! `clerk-sync-bench`: the command line. `all` is what `make bench` runs; the other subcommands run
//! one phase each (their figures are printed without the ceilings another phase would measure),
//! `soak` is the memory soak (`make bench-soak`, its own `soak.json`), and `loadgen` drives any
//! running gateway.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use clerk_sync_bench::corpus::Corpus;
use clerk_sync_bench::env::BenchEnv;
use clerk_sync_bench::http1::Target;
use clerk_sync_bench::loadgen::{self, LoadSpec};
use clerk_sync_bench::phases::{self, Bench, Options, Phase, SoakOptions, Suite};
use clerk_sync_bench::procs::{self, Paths};
use clerk_sync_bench::report;
use secrecy::SecretString;
use serde_json::json;

#[derive(Parser)]
#[command(version, about = "Benchmarks clerk-sync against the local RabbitMQ and Postgres.")]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Flags {
    /// Use the service binaries already in target/release instead of running `cargo build --release`.
    #[arg(long, global = true)]
    no_build: bool,
    /// Directory for results.json (default: <target>/bench).
    #[arg(long, global = true, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Exit non-zero when a target is missed, not only when a phase fails.
    #[arg(long, global = true)]
    strict: bool,
    /// Keep the bench queues and database afterwards, for inspection (delete them by hand).
    #[arg(long, global = true)]
    keep: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Everything, in order, in one table (about four minutes on 2 cores).
    All(Knobs),
    /// Broker ceiling: plain lapin publishes with confirms at each concurrency.
    Broker(Knobs),
    /// The gateway closed-loop at each concurrency (after the broker ceiling there) and open-loop at each rate.
    Gateway(Knobs),
    /// Database ceiling: plain batched upserts of the worker workload's rows.
    Database(Knobs),
    /// The database ceiling, then the worker from a pre-filled queue with 1 then 2 processes.
    Worker(Knobs),
    /// Gateway and worker together at a fixed rate: lag from svix timestamp to commit.
    E2e(Knobs),
    /// `clerk-sync dlq replay` of 100,000 dead letters: messages per second and the CLI's peak RSS.
    Dlq(Knobs),
    /// `clerk-sync reconcile --fix` of 100,000 users and 10,000 organizations with 1% drift: time, requests, peak RSS.
    Reconcile(Knobs),
    /// The change feed: worker throughput with the feed on vs off, and commit-to-notification latency at 2,000/s.
    Feed(Knobs),
    /// The event history (not in `all`: about 4 minutes): `events list --user` on 5,000,000 stored
    /// events, `reproject` of 1,000,000.
    History(Knobs),
    /// The gateway and one worker against a three-node RabbitMQ 4.0 cluster beside a single 4.0
    /// node, with CPU per message (not in `all`: `make bench-cluster` starts the nodes first).
    Cluster(Knobs),
    /// Verification plus parsing, and building a batch, timed in-process.
    Micro(Knobs),
    /// Memory soak: gateway and worker at half capacity for minutes, RSS sampled; writes soak.json.
    Soak(SoakArgs),
    /// Drive a running gateway with signed realistic events.
    Loadgen(LoadgenArgs),
    /// Delete what interrupted runs left behind: unused clerk_bench_* databases and their queues.
    Cleanup,
    /// Print the targets the table judges figures against, with where each was asked for.
    Targets,
}

impl Command {
    /// The measuring commands: which suite, with which knobs; `None` for the others.
    fn suite(self) -> Option<(Suite, Knobs)> {
        Some(match self {
            Command::All(k) => (Suite::All, k),
            Command::Broker(k) => (Suite::Broker, k),
            Command::Gateway(k) => (Suite::Gateway, k),
            Command::Database(k) => (Suite::Database, k),
            Command::Worker(k) => (Suite::Worker, k),
            Command::E2e(k) => (Suite::E2e, k),
            Command::Dlq(k) => (Suite::Dlq, k),
            Command::Reconcile(k) => (Suite::Reconcile, k),
            Command::Feed(k) => (Suite::Feed, k),
            Command::History(k) => (Suite::History, k),
            Command::Cluster(k) => (Suite::Cluster, k),
            Command::Micro(k) => (Suite::Micro, k),
            Command::Soak(_) | Command::Loadgen(_) | Command::Cleanup | Command::Targets => return None,
        })
    }
}

#[derive(Args, Clone)]
struct Knobs {
    /// Measured seconds per gateway and broker point.
    #[arg(long, default_value_t = 7.0)]
    secs: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Closed-loop connections (gateway) and publishers (broker), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 256])]
    concurrency: Vec<usize>,
    /// Open-loop rates in requests per second, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000.0, 5_000.0])]
    rates: Vec<f64>,
    #[arg(long, default_value_t = 64)]
    open_connections: usize,
    /// Messages pre-filled for the worker (and written by the database ceiling).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Worker processes per run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    workers: Vec<usize>,
    #[arg(long, default_value_t = 2_000.0)]
    e2e_rate: f64,
    #[arg(long, default_value_t = 12.0)]
    e2e_secs: f64,
    /// `gateway` and `worker`: skip the broker / database ceiling they otherwise measure first.
    #[arg(long)]
    no_ceiling: bool,
    /// Broker-then-gateway pairs at 64 connections (the target's concurrency); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Channel counts the broker ceiling tries at each concurrency (the best is the ceiling).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8, 16])]
    ceiling_channels: Vec<usize>,
    /// Tuning: also run one gateway per publisher channel count at 64 connections, each round
    /// after the same ceiling (e.g. 1,2,4,8).
    #[arg(long, value_delimiter = ',')]
    gateway_channels: Vec<usize>,
}

impl From<Knobs> for Options {
    fn from(k: Knobs) -> Self {
        Options {
            secs: k.secs,
            warmup_secs: k.warmup_secs,
            concurrency: k.concurrency,
            rates: k.rates,
            open_connections: k.open_connections,
            events: k.events,
            workers: k.workers,
            e2e_rate: k.e2e_rate,
            e2e_secs: k.e2e_secs,
            ceilings: !k.no_ceiling,
            rounds: k.rounds.max(1),
            ceiling_channels: k.ceiling_channels.into_iter().map(|n| n.max(1)).collect(),
            gateway_channels: k.gateway_channels.into_iter().map(|n| n.max(1)).collect(),
        }
    }
}

#[derive(Args)]
struct SoakArgs {
    /// Length of the sustained load.
    #[arg(long, default_value_t = 4.0)]
    minutes: f64,
    /// Events per second; default: half the capacity a 10 s closed-loop run measures first.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds between samples (each is one open-loop window of the load generator).
    #[arg(long, default_value_t = 5.0)]
    sample_secs: f64,
    /// Connections the open-loop load spreads its requests over.
    #[arg(long, default_value_t = 64)]
    connections: usize,
}

impl From<SoakArgs> for SoakOptions {
    fn from(a: SoakArgs) -> Self {
        SoakOptions { minutes: a.minutes, rate: a.rate, sample_secs: a.sample_secs, connections: a.connections }
    }
}

#[derive(Args)]
struct LoadgenArgs {
    /// The gateway's webhook URL, e.g. http://127.0.0.1:8080/webhooks/clerk.
    #[arg(long)]
    url: String,
    /// The gateway's signing secret (whsec_...).
    #[arg(long, env = "CLERK_WEBHOOK_SIGNING_SECRET", hide_env_values = true)]
    secret: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per second (open loop); closed loop when absent.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Print the report as JSON instead of one line.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { flags, command } = Cli::parse();
    let cli = &flags;
    let result = match command {
        Command::Loadgen(args) => loadgen_command(args).await,
        Command::Cleanup => cleanup_command().await,
        Command::Soak(a) => soak(a.into(), cli).await,
        Command::Targets => {
            print!("{}", phases::targets::table());
            Ok(true)
        }
        measuring => match measuring.suite() {
            Some((suite, knobs)) => bench(suite, knobs.into(), cli).await,
            None => unreachable!("the other commands are matched above"),
        },
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn loadgen_command(args: LoadgenArgs) -> anyhow::Result<bool> {
    let spec = LoadSpec {
        target: Target::parse(&args.url).await?,
        secret: SecretString::from(args.secret),
        concurrency: args.concurrency,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        corpus: Arc::new(Corpus::realistic(4_096, 20_000, 1)),
        id_prefix: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
    };
    let r = loadgen::run(spec).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{}", r.line());
    }
    Ok(r.errors == 0)
}

async fn cleanup_command() -> anyhow::Result<bool> {
    let runs = BenchEnv::abandoned().await?;
    for run_id in &runs {
        eprintln!("deleting run {run_id}: database clerk_bench_{run_id}, queues bench-{run_id}.*");
        BenchEnv::new(run_id)?.cleanup().await;
    }
    eprintln!("{} abandoned run(s) deleted", runs.len());
    Ok(true)
}

async fn run_phases(b: &mut Bench, suite: Suite) -> anyhow::Result<()> {
    let runs = |phase| suite.runs(phase, b.opts.ceilings);
    let (micro, broker, gateway, database) =
        (runs(Phase::Micro), runs(Phase::Broker), runs(Phase::Gateway), runs(Phase::Database));
    let (worker, e2e, dlq, reconcile) =
        (runs(Phase::Worker), runs(Phase::E2e), runs(Phase::Dlq), runs(Phase::Reconcile));
    let feed = runs(Phase::Feed);
    let history = runs(Phase::History);
    let cluster = runs(Phase::Cluster);
    let mut clock = Instant::now();
    let mut lap = |b: &mut Bench, phase: &str| {
        let seconds = clock.elapsed().as_secs_f64();
        eprintln!("-- {phase} took {seconds:.1} s");
        b.details.entry("phase_seconds").or_insert_with(|| json!({}))[phase] = json!(seconds);
        clock = Instant::now();
    };
    if micro {
        b.micro()?;
        lap(b, "micro");
    }
    if broker || gateway {
        phases::broker_and_gateway(b, broker, gateway).await?;
        lap(b, "broker_and_gateway");
    }
    if database {
        phases::database(b).await?;
        lap(b, "database");
    }
    if worker {
        phases::workers(b).await?;
        lap(b, "worker");
    }
    if e2e {
        phases::e2e(b).await?;
        lap(b, "e2e");
    }
    if dlq {
        phases::dlq(b).await?;
        lap(b, "dlq");
    }
    if reconcile {
        phases::reconcile(b).await?;
        lap(b, "reconcile");
    }
    if feed {
        phases::feed(b).await?;
        lap(b, "feed");
    }
    if history {
        phases::history(b).await?;
        lap(b, "history");
    }
    if cluster {
        phases::cluster(b).await?;
        lap(b, "cluster");
    }
    Ok(())
}

/// Runs `suite`'s phases, then always cleans up, prints the table and writes the JSON.
async fn bench(suite: Suite, opts: Options, cli: &Flags) -> anyhow::Result<bool> {
    let command = suite.name();
    if suite.needs_services() && !cli.no_build {
        procs::build_services()?;
    }
    if suite.needs_cli() && !cli.no_build {
        procs::build_cli()?;
    }
    let paths = Paths::discover();
    let out = cli.out.clone().unwrap_or_else(|| paths.out_dir());
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    let mut b = Bench::setup(paths, opts.clone()).await?;
    let run_id = b.env.run_id.clone();
    // On Ctrl-C the phase is dropped (its services are killed) and the run still cleans up.
    let result = tokio::select! {
        r = run_phases(&mut b, suite) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    b.memory_rows();
    let (rows, details) = b.teardown(cli.keep).await;
    let seconds = clock.elapsed().as_secs_f64();

    println!("\nclerk-sync bench `{command}` ({} cores, {seconds:.0} s)", cores());
    print!("{}", report::table(&rows));
    let missed = rows.iter().filter(|r| r.pass == Some(false)).count();
    let judged = rows.iter().filter(|r| r.pass.is_some()).count();
    println!("{} of {judged} targets met", judged - missed);
    let document = json!({
        "run": run_info(&run_id, command, started_at, seconds, json!(opts)),
        "rows": rows,
        "details": details,
        "error": result.as_ref().err().map(|e| format!("{e:#}")),
    });
    let path = report::write_json(&out, &document)?;
    println!("written to {}", path.display());
    result?;
    Ok(!cli.strict || missed == 0)
}

/// The memory soak: like [`bench`], but judged on its own rows whatever `--strict` says, and
/// written to `soak.json` so that it never replaces the last `results.json`.
async fn soak(opts: SoakOptions, cli: &Flags) -> anyhow::Result<bool> {
    if !cli.no_build {
        procs::build_services()?;
    }
    let paths = Paths::discover();
    let out = cli.out.clone().unwrap_or_else(|| paths.out_dir());
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    let mut b = Bench::setup(paths, Options::default()).await?;
    let run_id = b.env.run_id.clone();
    let result = tokio::select! {
        r = phases::soak(&mut b, &opts) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let (rows, details) = b.teardown(cli.keep).await;
    let seconds = clock.elapsed().as_secs_f64();

    println!("\nclerk-sync bench `soak` ({} cores, {seconds:.0} s)", cores());
    print!("{}", report::table(&rows));
    let failed = rows.iter().filter(|r| r.pass == Some(false)).count();
    let pass = result.is_ok() && failed == 0;
    println!(
        "soak: {} ({failed} of {} checks failed)",
        if pass { "PASS" } else { "FAIL" },
        rows.iter().filter(|r| r.pass.is_some()).count()
    );
    let document = json!({
        "run": run_info(&run_id, "soak", started_at, seconds, json!(opts)),
        "rows": rows,
        "details": details,
        "error": result.as_ref().err().map(|e| format!("{e:#}")),
    });
    let path = report::write_named_json(&out, "soak", &document)?;
    println!("written to {}", path.display());
    result?;
    Ok(pass)
}

fn run_info(
    run_id: &str,
    command: &str,
    started_at: chrono::DateTime<chrono::Utc>,
    seconds: f64,
    options: serde_json::Value,
) -> serde_json::Value {
    json!({
        "id": run_id,
        "command": command,
        "started_at": started_at.to_rfc3339(),
        "seconds": seconds,
        "cores": cores(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "options": options,
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

//! `clerk-sync`, the operator CLI: see `clerk-sync --help`.

mod backfill;
mod changes;
mod cli;
mod dlq;
mod events;
mod migrate;
mod output;
mod reconcile;
mod send;

use std::process::ExitCode;

use clap::Parser;
use clerk_sync_core::amqp::{Nodes, Topology};
use clerk_sync_core::settings::{Requirement, Settings};
use clerk_sync_core::telemetry::Sink;

use cli::{Cli, Command, DlqCommand};
use output::Output;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        if !cli.config.check_config {
            cli::missing_subcommand();
        }
        // `--check-config` alone validates and prints what every command shares, then exits.
        return cli.config.load(&[]).err().unwrap_or(ExitCode::SUCCESS);
    };
    let requirements: &[Requirement] = match &command {
        Command::Send(args) if !args.list => &[Requirement::SigningSecret],
        Command::Backfill(_) | Command::Reconcile(_) => &[Requirement::ClerkSecretKey],
        _ => &[],
    };
    let settings = match cli.config.load(requirements) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    // stdout is the command's output (tables, `--json`); logs must not mix into it.
    clerk_sync_core::telemetry::init(&settings.log, Sink::Stderr);
    let out = Output { json: cli.json };
    match run(&settings, command, out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => clerk_sync_core::fatal::report(&e),
    }
}

async fn run(settings: &Settings, command: Command, out: Output) -> anyhow::Result<()> {
    let topology = Topology::from_settings(&settings.amqp);
    let nodes = Nodes::from_settings(&settings.amqp);
    match command {
        Command::Dlq(DlqCommand::Stats) => dlq::stats(&nodes, &topology, out).await,
        Command::Dlq(DlqCommand::List(args)) => dlq::list(&nodes, &topology, &args, out).await,
        Command::Dlq(DlqCommand::Show { svix_id }) => dlq::show(&nodes, &topology, &svix_id, out).await,
        Command::Dlq(DlqCommand::Replay(args)) => dlq::replay(settings, &args, out).await,
        Command::Dlq(DlqCommand::Purge(args)) => dlq::purge(settings, &args, out).await,
        Command::Migrate { check } => migrate::migrate(settings, check, out).await,
        Command::Send(args) => send::send(settings, &args, out).await,
        Command::Backfill(args) => backfill::backfill(settings, &args, out).await,
        Command::Changes(command) => changes::run(settings, command, out).await,
        Command::Reconcile(args) => reconcile::reconcile(settings, &args, out).await,
        Command::Events(command) => events::run(settings, command, out).await,
        Command::Reproject(args) => events::reproject::reproject(settings, &args, out).await,
    }
}

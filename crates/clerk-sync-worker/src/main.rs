//! `clerk-sync-worker`: see the crate documentation.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clerk_sync_core::settings::cli::ConfigArgs;
use clerk_sync_core::telemetry::Sink;
use clerk_sync_store::db;
use clerk_sync_worker::Application;

#[derive(Parser)]
#[command(
    version,
    about = "Applies Clerk events from RabbitMQ to Postgres: deduplicated, ordered, acked after commit."
)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume and apply events (the default).
    Run,
    /// Apply pending database migrations (schema `clerk`).
    Migrate {
        /// List pending migrations and exit non-zero if there are any, without applying them.
        #[arg(long)]
        check: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match args.config.load(&[]) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    clerk_sync_core::telemetry::init(&settings.log, Sink::Stdout);
    let result = match args.command.unwrap_or(Command::Run) {
        Command::Run => {
            async {
                let app = Application::build(&settings).await?;
                app.run_until_stopped().await
            }
            .await
        }
        Command::Migrate { check } => migrate(&settings, check).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => clerk_sync_core::fatal::exit("worker failed", &e),
    }
}

async fn migrate(settings: &clerk_sync_core::settings::Settings, check: bool) -> anyhow::Result<()> {
    let report = db::setup::migrate(&settings.database, check).await?;
    let database = &report.target.database;
    match (report.database_missing, check) {
        (true, false) => println!("created database \"{database}\""),
        (true, true) => println!("database \"{database}\" does not exist yet; `migrate` creates it"),
        _ => {}
    }
    let verb = if check { "pending" } else { "applied" };
    for (version, description) in &report.migrations {
        println!("{verb}: {version} {description}");
    }
    anyhow::ensure!(
        !check || report.migrations.is_empty(),
        "{} migration(s) pending on {}; run `clerk-sync-worker migrate`",
        report.migrations.len(),
        report.target
    );
    println!("the schema of {} is up to date", report.target);
    Ok(())
}

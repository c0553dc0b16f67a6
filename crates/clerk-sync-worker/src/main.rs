//! `clerk-sync-worker`: see the crate documentation.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clerk_sync_core::settings::cli::ConfigArgs;
use clerk_sync_worker::{Application, db};

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
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: &clerk_sync_core::settings::Settings, check: bool) -> anyhow::Result<()> {
    let pool = db::pool(&settings.database, "clerk-sync-migrate")?;
    let pending = db::pending(&pool).await?;
    if check {
        for (version, description) in &pending {
            println!("pending: {version} {description}");
        }
        anyhow::ensure!(pending.is_empty(), "{} migration(s) pending", pending.len());
        println!("the schema is up to date");
        return Ok(());
    }
    db::migrate(&pool).await?;
    println!("applied {} migration(s); the schema is up to date", pending.len());
    Ok(())
}

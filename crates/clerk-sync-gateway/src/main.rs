//! `clerk-sync-gateway`: see the crate documentation.

use std::process::ExitCode;

use clap::Parser;
use clerk_sync_core::settings::{Requirement, cli::ConfigArgs};
use clerk_sync_core::telemetry::Sink;
use clerk_sync_gateway::Application;

#[derive(Parser)]
#[command(
    version,
    about = "Receives Clerk's Svix-signed webhooks and queues them in RabbitMQ after the broker confirms."
)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match args.config.load(&[Requirement::SigningSecret]) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    clerk_sync_core::telemetry::init(&settings.log, Sink::Stdout);
    let result = async {
        let app = Application::build(&settings).await?;
        app.run_until_stopped().await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => clerk_sync_core::fatal::exit("gateway failed", &e),
    }
}

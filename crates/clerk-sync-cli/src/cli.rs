//! The command line: every subcommand and flag, with help text an operator can act on.

use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use clerk_sync_core::settings::cli::ConfigArgs;

#[derive(Parser)]
#[command(
    name = "clerk-sync",
    version,
    about = "Operate clerk-sync: inspect and replay dead letters, migrate the schema, send signed test events, backfill.",
    long_about = "Operate clerk-sync. Every command reads the same configuration as the services \
                  (built-in defaults, --config / CLERK_SYNC_CONFIG, CLERK_SYNC__SECTION__KEY variables, \
                  AMQP_URL, DATABASE_URL, CLERK_WEBHOOK_SIGNING_SECRET, CLERK_SECRET_KEY, and .env).",
    override_usage = "clerk-sync [OPTIONS] <COMMAND>\n       clerk-sync --check-config [--config <PATH>]"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Required, except with `--check-config` alone (see [`missing_subcommand`]).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Exits with clap's usage error. clap can make a subcommand required or optional, not "required
/// unless `--check-config`", so `main` asks for it itself.
pub fn missing_subcommand() -> ! {
    Cli::command()
        .error(
            ErrorKind::MissingSubcommand,
            "a subcommand is required (or --check-config, to validate the configuration)",
        )
        .exit()
}

#[derive(Subcommand)]
pub enum Command {
    /// Inspect, replay or purge dead-lettered events.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Apply pending database migrations (schema `clerk`).
    Migrate {
        /// Only list pending migrations; exit 1 if there are any.
        #[arg(long)]
        check: bool,
    },
    /// Sign a sample event (or a file) with the configured secret and POST it to a running gateway.
    Send(SendArgs),
    /// Copy what predates the webhooks from Clerk's Backend API: users, organizations, memberships,
    /// roles, permissions, invitations, domains, the waitlist, sessions and Billing subscriptions.
    #[command(long_about = crate::backfill::kinds::BACKFILL_HELP)]
    Backfill(BackfillArgs),
    /// Follow the change feed: what each event actually changed, once, in order per object.
    #[command(subcommand)]
    Changes(crate::changes::ChangesCommand),
    /// Compare the database with Clerk's Backend API, every kind backfill copies: missing, stale, gone
    /// and orphaned rows (exit 1 on drift); --fix repairs them through the worker's apply path.
    #[command(long_about = crate::backfill::kinds::RECONCILE_HELP)]
    Reconcile(ReconcileArgs),
    /// Search, show and replay the event history (every event the worker received, kept for
    /// worker.event_retention).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Rebuild the synced tables (or one resource) from the event history, in place under the
    /// ordering guard: readers never see an empty table and live webhooks keep winning.
    Reproject(ReprojectArgs),
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Count dead letters (the queue's own counter); break the first 10,000 down by event type and
    /// error kind, with the oldest and newest failure among them.
    Stats,
    /// List dead letters without consuming them (only the first --limit matches are taken and handed back).
    List(ListArgs),
    /// Show one dead letter: headers, reason and the pretty-printed body.
    Show {
        /// The svix-id (AMQP message id) of the event.
        svix_id: String,
    },
    /// Move matching dead letters back to the events exchange with their original routing key.
    Replay(ReplayArgs),
    /// Delete matching dead letters for good.
    Purge(PurgeArgs),
}

#[derive(Args, Clone, Default)]
pub struct Filters {
    /// Only this event type (e.g. user.updated).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Only this error kind (e.g. invalid_payload, database_rejected, delivery_limit).
    #[arg(long, value_name = "KIND")]
    pub error_kind: Option<String>,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// Only dead letters that first failed within this long ago (e.g. 2h, 3d).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub since: Option<Duration>,
    /// Show at most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Args)]
#[group(id = "selection", required = true, multiple = true)]
pub struct Selection {
    /// Every dead letter.
    #[arg(long, group = "selection")]
    pub all: bool,
    /// These svix-ids (repeat the flag for several).
    #[arg(long = "id", value_name = "SVIX_ID", group = "selection")]
    pub ids: Vec<String>,
    /// Only this event type.
    #[arg(long = "type", value_name = "TYPE", group = "selection")]
    pub event_type: Option<String>,
    /// Only this error kind.
    #[arg(long, value_name = "KIND", group = "selection")]
    pub error_kind: Option<String>,
}

#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Move at most this many.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Copies awaiting RabbitMQ's confirm at once (the CLI holds about twice this many letters).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    pub window: u64,
    /// Print what would move, move nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub selection: PurgeSelection,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Args)]
#[group(id = "purge_selection", required = true, multiple = true)]
pub struct PurgeSelection {
    /// Every dead letter.
    #[arg(long, group = "purge_selection")]
    pub all: bool,
    /// These svix-ids.
    #[arg(long = "id", value_name = "SVIX_ID", group = "purge_selection")]
    pub ids: Vec<String>,
    /// Only this event type.
    #[arg(long = "type", value_name = "TYPE", group = "purge_selection")]
    pub event_type: Option<String>,
    /// Only dead letters that first failed longer ago than this (e.g. 7d).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", group = "purge_selection")]
    pub older_than: Option<Duration>,
    /// Only dead letters about this user: after a `user.deleted`, the copies of their personal data
    /// the dead-letter queue still holds.
    #[arg(long = "user", value_name = "USER_ID", group = "purge_selection")]
    pub user_id: Option<String>,
}

#[derive(Args)]
pub struct SendArgs {
    /// A Clerk event type to send a built-in sample of (default user.created). See --list.
    #[arg(conflicts_with = "file")]
    pub event_type: Option<String>,
    /// Send this file's bytes as the body instead.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// The webhook URL (default: http://<gateway.listen>/webhooks/clerk).
    #[arg(long)]
    pub url: Option<String>,
    /// The svix-id to send (default: a fresh one). Re-send the same id to see deduplication.
    #[arg(long)]
    pub id: Option<String>,
    /// List the event types with built-in samples and exit.
    #[arg(long)]
    pub list: bool,
}

#[derive(Args)]
pub struct BackfillArgs {
    /// Only these kinds (repeat or separate with commas; default: all).
    #[arg(long = "kind", value_enum, value_delimiter = ',', value_name = "KIND")]
    pub kinds: Vec<crate::backfill::kinds::Kind>,
    /// Backfill users (the same as --kind users).
    #[arg(long)]
    pub users: bool,
    /// Backfill organizations (--kind organizations).
    #[arg(long)]
    pub organizations: bool,
    /// Backfill organization memberships (--kind memberships).
    #[arg(long)]
    pub memberships: bool,
    /// Objects per API page (Clerk allows up to 500); for subscriptions, parents asked per transaction.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub page_size: u32,
    /// Ignore saved progress and start from the first page.
    #[arg(long)]
    pub restart: bool,
}

#[derive(Args)]
pub struct ReconcileArgs {
    /// Only these kinds (repeat or separate with commas; default: every kind but sessions and subscriptions).
    #[arg(long = "kind", value_enum, value_delimiter = ',', value_name = "KIND")]
    pub kinds: Vec<crate::backfill::kinds::Kind>,
    /// Every kind, sessions and subscriptions included (one request per stored user and organization).
    #[arg(long, conflicts_with_all = ["kinds", "users", "organizations", "memberships"])]
    pub all_kinds: bool,
    /// Reconcile users (the same as --kind users).
    #[arg(long)]
    pub users: bool,
    /// Reconcile organizations (--kind organizations).
    #[arg(long)]
    pub organizations: bool,
    /// Reconcile organization memberships (--kind memberships).
    #[arg(long)]
    pub memberships: bool,
    /// Repair what is found: write Clerk's version of missing and stale objects, tombstone gone and
    /// orphaned ones (live webhooks still win when newer).
    #[arg(long)]
    pub fix: bool,
    /// With --fix, repair at most this many gaps of each kind.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Ids listed per gap in the report.
    #[arg(long, default_value_t = 5)]
    pub show: usize,
    /// Objects per API page (Clerk allows up to 500).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub page_size: u32,
    /// Requests per second to Clerk, shared by the whole run (Clerk allows 100 per 10 s on development
    /// instances and 1000 per 10 s in production; the default leaves room for the application's own calls).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Run again every --interval, serving metrics on --metrics-listen, until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Time between the end of a run and the start of the next, with --watch.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h", value_name = "DURATION")]
    pub interval: Duration,
    /// Where --watch serves Prometheus metrics (GET /metrics).
    #[arg(long, default_value = "0.0.0.0:9095", value_name = "ADDR")]
    pub metrics_listen: String,
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// The newest stored events matching the selectors (metadata only).
    List(EventsListArgs),
    /// One stored event: its metadata and its body.
    Show {
        /// The svix-id of the event.
        svix_id: String,
    },
    /// Publish the selected events through the queue again, as replays: deduplication lets them
    /// through and the ordering guard decides; reports applied, stale and ignored.
    Replay(EventsReplayArgs),
}

/// Which stored events; every selector given narrows the selection.
#[derive(Args, Clone, Default)]
pub struct EventSelectors {
    /// Events about this user (its own events, its memberships, sessions, invitations, ...).
    #[arg(long = "user", value_name = "USER_ID")]
    pub user_id: Option<String>,
    /// Events about this organization.
    #[arg(long = "organization", value_name = "ORG_ID")]
    pub organization_id: Option<String>,
    /// Only this event type (e.g. user.updated).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Received at or after: a time ago (2h, 3d) or an RFC 3339 instant.
    #[arg(long, value_parser = crate::events::parse_instant, value_name = "WHEN")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Received before: a time ago (30m) or an RFC 3339 instant.
    #[arg(long, value_parser = crate::events::parse_instant, value_name = "WHEN")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this outcome: applied, stale or ignored.
    #[arg(long, value_parser = ["applied", "stale", "ignored"], value_name = "OUTCOME")]
    pub outcome: Option<String>,
}

#[derive(Args)]
pub struct EventsListArgs {
    #[command(flatten)]
    pub selectors: EventSelectors,
    /// Show at most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}

#[derive(Args)]
pub struct EventsReplayArgs {
    #[command(flatten)]
    pub selectors: EventSelectors,
    /// Replay at most this many (oldest first).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Count what would be replayed, publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// How long to wait for the workers to apply the replays before reporting.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s", value_name = "DURATION")]
    pub wait: Duration,
}

#[derive(Args)]
pub struct ReprojectArgs {
    /// Only this resource (default: every stored resource, organizations and users first).
    #[arg(long, value_enum)]
    pub kind: Option<ReprojectKind>,
    /// Objects per transaction.
    #[arg(long, default_value_t = 500)]
    pub page_size: i64,
    /// Stored events per transaction at most (and in memory at once): an object with more is
    /// rebuilt over several transactions, with the same result under the ordering guard.
    #[arg(long, default_value_t = 5_000)]
    pub batch_events: i64,
    /// Count what would be rewritten, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReprojectKind {
    Users,
    Organizations,
    Memberships,
    Sessions,
    Invitations,
    Roles,
    Permissions,
    Domains,
    WaitlistEntries,
    Subscriptions,
    SubscriptionItems,
    PaymentAttempts,
}

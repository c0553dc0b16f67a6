//! CLI integration tests: the real `clerk-sync` binary against the real RabbitMQ and Postgres (a
//! prefix and a database per test), and a local fake of Clerk's Backend API for backfill.

mod backfill;
mod changes;
mod check_config;
mod clerk_api;
mod dlq;
mod events;
mod helpers;
mod logging;
mod migrate_and_send;
mod reconcile;

//! The clerk-sync worker: consumes Clerk events from RabbitMQ and applies them to Postgres in
//! batches, deduplicated on svix-id and ordered by Clerk's `updated_at`, acknowledging only after
//! commit. Failures are classified: a database outage pauses consumption, a poison message is
//! dead-lettered with its reason, anything else is retried through delayed retry queues.

pub mod acks;
pub mod consumer;
pub mod feed;
pub mod health;
pub mod history;
pub mod lanes;
pub mod metrics;
pub mod process;
pub mod settle;
pub mod startup;

pub use startup::Application;

//! clerk-sync's data model, shared by the worker, the CLI and the bench: Clerk's catalogue of
//! event types (`catalogue`), an event parsed into the change it asks for (`event`), and Postgres
//! (`db`): the migrations in the workspace's `migrations/`, the pool, error classification, and the
//! one transaction that applies a batch under the ordering guard, and the event history
//! (`history`) that transaction keeps.
//!
//! The gateway does not depend on this crate: it links no database driver.

pub mod catalogue;
pub mod db;
pub mod event;
pub mod feed;
pub mod history;

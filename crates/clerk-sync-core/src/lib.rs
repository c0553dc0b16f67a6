//! Shared library of clerk-sync: what the gateway, the worker and the operator CLI agree on.
//!
//! Configuration ([`settings`]), logging ([`telemetry`]), Prometheus helpers ([`metrics`]), the AMQP
//! topology and the confirmed publisher ([`amqp`]), the webhook envelope ([`envelope`]), Svix
//! signature verification with several secrets ([`signing`]), the admin listener ([`admin`]), how
//! a binary reports the error that stops it ([`fatal`]), when it should stop ([`shutdown`]), and
//! how everything that reconnects waits between attempts ([`backoff`]).

pub mod admin;
pub mod amqp;
pub mod backoff;
pub mod envelope;
pub mod fatal;
pub mod metrics;
pub mod samples;
pub mod settings;
pub mod shutdown;
pub mod signing;
pub mod telemetry;

#[cfg(test)]
mod fuzz_tests;

//! Shared library of clerk-sync: what the gateway, the worker and the operator CLI agree on.
//!
//! Configuration ([`settings`]), logging ([`telemetry`]), Prometheus helpers ([`metrics`]), the AMQP
//! topology and the confirmed publisher ([`amqp`]), the webhook envelope ([`envelope`]) and Svix
//! signature verification with several secrets ([`signing`]), and the admin listener ([`admin`]).

pub mod settings;

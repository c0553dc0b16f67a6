//! clerk-sync benchmarks against the local RabbitMQ and Postgres.
//!
//! `clerk-sync-bench all` (what `make bench` runs) measures, in one run and in this order: the two
//! hot paths in isolation ([`micro`]); the broker ceiling and the gateway at the same concurrency,
//! then the gateway open-loop at fixed rates ([`phases`], [`broker`], [`loadgen`]); the database
//! ceiling ([`dbceiling`]) and the worker from a pre-filled queue ([`workload`]); the two services
//! end to end; and the peak memory of both. It prints one table and writes it as JSON under
//! `target/bench/` ([`report`]). The gateway and the worker run as real processes from the release
//! binaries ([`procs`]), each run in its own queues and database ([`env`]).

pub mod broker;
pub mod catalogue_mix;
pub mod catalogue_objects;
pub mod corpus;
pub mod cpu;
pub mod dbceiling;
pub mod env;
pub mod http1;
pub mod loadgen;
pub mod micro;
pub mod phases;
pub mod procs;
pub mod report;
pub mod workload;

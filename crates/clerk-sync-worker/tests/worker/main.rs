//! Worker integration tests: real RabbitMQ with a prefix per test, real Postgres with a database
//! per test, workers in-process or as real processes.

mod acks;
mod catalogue;
mod catalogue_billing;
mod catalogue_more;
mod convergence;
mod effects;
mod end_to_end;
mod faults;
mod feed;
mod feed_consumer;
mod feed_sql;
mod helpers;
mod history;
mod migrate;
mod nodes;
mod ordering;
mod poison;
mod read_only;
mod reconnects;
mod tls;
mod topology;
mod wait_for;

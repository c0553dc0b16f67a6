//! Gateway integration tests: the real gateway over real HTTP against the real RabbitMQ, each test
//! with its own exchange and queue prefix and port 0 listeners, so they run in parallel.

mod admin;
mod bad_input;
mod broker_faults;
mod budget;
mod config;
mod early_refusal;
mod helpers;
mod load;
mod nodes;
mod shutdown;
mod webhook;

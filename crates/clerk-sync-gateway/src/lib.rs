//! The clerk-sync ingest gateway.
//!
//! `POST /webhooks/clerk` verifies the Svix signature over the raw body, publishes the body
//! unchanged to RabbitMQ and answers 2xx only once the broker has confirmed it; when the broker
//! cannot confirm, it answers 503 so that Svix retries and nothing is lost. Admin endpoints live on
//! a separate listener. Request bodies are held within one process-wide byte budget ([`budget`]).

pub mod budget;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod startup;

pub use startup::Application;

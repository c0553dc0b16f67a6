//! HTTP routes of the public listener.

mod body;
mod webhook;

pub use webhook::{AppState, method_not_allowed, not_found, receive};

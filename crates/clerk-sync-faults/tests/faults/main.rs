//! Fault scenarios against real processes: every event that got a 2xx is applied exactly once, the
//! final state equals the ordered history, and nothing lands in the dead-letter queue. Each
//! scenario prints what it injected and what it verified.
//!
//! These restart shared services, so they are `#[ignore]`d in the normal run and executed one at a
//! time by `make test-faults` (`cargo nextest run -p clerk-sync-faults --run-ignored only -j 1`).

mod feed;
mod flood;
mod helpers;
mod read_only;
mod scenarios;

//! The one way clerk-sync builds a retry backoff: exponential from `min` to `max`, jittered, and
//! never giving up on its own. Every caller retries something that comes back (a broker, a
//! database, Clerk's API) and decides itself when to stop (shutdown, an attempt budget), so an
//! elapsed-time limit would only turn an outage into a crash.

use std::time::Duration;

use ::backoff::ExponentialBackoff;

/// Waits that start at `min`, grow by the crate's default factor (1.5) with its default jitter
/// (±50%), and level off at `max`; `next_backoff` never returns `None`.
pub fn exponential(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBackoff {
        initial_interval: min,
        current_interval: min,
        max_interval: max,
        max_elapsed_time: None,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use backoff::backoff::Backoff;

    use super::*;

    #[test]
    fn the_first_wait_is_near_the_minimum() {
        let mut b = exponential(Duration::from_millis(200), Duration::from_secs(5));
        let first = b.next_backoff().expect("never gives up");
        // Jitter is ±50% of the current interval.
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(300), "{first:?}");
    }

    #[test]
    fn waits_level_off_at_the_maximum_and_never_run_out() {
        let max = Duration::from_secs(2);
        let mut b = exponential(Duration::from_millis(10), max);
        for _ in 0..200 {
            let wait = b.next_backoff().expect("no elapsed-time limit");
            assert!(wait <= max + max / 2, "{wait:?} exceeds the jittered maximum");
        }
        assert_eq!(b.current_interval, max);
        assert_eq!(b.max_elapsed_time, None);
    }

    #[test]
    fn reset_starts_again_from_the_minimum() {
        let min = Duration::from_millis(50);
        let mut b = exponential(min, Duration::from_secs(1));
        for _ in 0..20 {
            b.next_backoff();
        }
        b.reset();
        assert_eq!(b.current_interval, min);
    }
}

//! What happens to a message that could not be applied: the retry policy (plain data), and
//! publishing to a retry queue or the dead-letter queue, confirmed, before the original is acked.

use std::time::Duration;

use clerk_sync_core::amqp::{self, OutgoingMessage, PublishError, Publisher, headers};
use lapin::message::Delivery;
use lapin::types::FieldTable;

/// Why a message failed, and whether retrying can help.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: String,
    pub message: String,
    pub permanent: bool,
}

impl Failure {
    pub fn permanent(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: kind.into(), message: message.into(), permanent: true }
    }

    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: kind.into(), message: message.into(), permanent: false }
    }
}

/// How many times a failing message is tried and how long it waits in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first delivery included.
    pub max_attempts: u32,
    /// Wait before attempt 2, 3, ...; the last one repeats.
    pub delays: Vec<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Attempt number `attempt` failed; try again after `delay`.
    Retry { attempt: u32, delay: Duration },
    /// Attempt number `attempt` failed and was the last allowed.
    GiveUp { attempt: u32 },
}

impl RetryPolicy {
    /// Decides after the failure of a message that had already failed `previous` times.
    pub fn decide(&self, previous: u32) -> Decision {
        let attempt = previous.saturating_add(1);
        if attempt >= self.max_attempts || self.delays.is_empty() {
            return Decision::GiveUp { attempt };
        }
        let index = usize::try_from(attempt - 1).unwrap_or(usize::MAX).min(self.delays.len() - 1);
        Decision::Retry { attempt, delay: self.delays[index] }
    }
}

/// Waits between attempts at something that should succeed soon: `first`, doubling up to `max`,
/// `attempts` times; then the caller stops trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub attempts: u32,
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (0-based); `None` once they are used up.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        (attempt < self.attempts).then(|| self.first.saturating_mul(2u32.saturating_pow(attempt)).min(self.max))
    }

    /// Every wait, in order: how long a caller holds on before giving up.
    pub fn total(&self) -> Duration {
        (0..self.attempts).filter_map(|a| self.delay(a)).sum()
    }
}

/// What was done with a failed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Retried,
    DeadLettered,
}

fn headers_for(delivery: &Delivery, failure: &Failure, attempts: u32) -> FieldTable {
    let existing = delivery.properties.headers().as_ref();
    let mut table = existing.cloned().unwrap_or_default();
    let first_failed = amqp::get_i64(existing, headers::FIRST_FAILED_AT).unwrap_or_else(amqp::now_ms);
    let original = amqp::get_str(existing, headers::ORIGINAL_ROUTING_KEY)
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
    // Bounded: a header must fit in a frame and nobody reads a 1 MB error.
    let message: String = failure.message.chars().take(1000).collect();
    amqp::put_str(&mut table, headers::ERROR, &message);
    amqp::put_str(&mut table, headers::ERROR_KIND, &failure.kind);
    amqp::put_i64(&mut table, headers::ATTEMPTS, i64::from(attempts));
    amqp::put_i64(&mut table, headers::FIRST_FAILED_AT, first_failed);
    amqp::put_str(&mut table, headers::ORIGINAL_ROUTING_KEY, &original);
    table
}

/// Attempts already made, from the header the retry loop maintains.
pub fn previous_attempts(delivery: &Delivery) -> u32 {
    amqp::get_i64(delivery.properties.headers().as_ref(), headers::ATTEMPTS)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(0)
}

/// Publishes `delivery` to a retry queue or the dead-letter exchange and waits for the confirm.
/// The caller acks the original only after this returns `Ok`.
pub async fn settle(
    publisher: &Publisher,
    policy: &RetryPolicy,
    delivery: &Delivery,
    failure: &Failure,
) -> Result<Settled, PublishError> {
    let topology = publisher.topology();
    let previous = previous_attempts(delivery);
    let (exchange, routing_key, attempts, settled, failure) = match (failure.permanent, policy.decide(previous)) {
        (false, Decision::Retry { attempt, delay }) => {
            (String::new(), topology.retry_queue(delay), attempt, Settled::Retried, failure.clone())
        }
        (false, Decision::GiveUp { attempt }) => {
            let mut f = failure.clone();
            f.message = format!("gave up after {attempt} attempts: {}", failure.message);
            (topology.dead_exchange(), delivery.routing_key.as_str().to_owned(), attempt, Settled::DeadLettered, f)
        }
        (true, _) => (
            topology.dead_exchange(),
            delivery.routing_key.as_str().to_owned(),
            previous + 1,
            Settled::DeadLettered,
            failure.clone(),
        ),
    };
    let properties = delivery.properties.clone().with_headers(headers_for(delivery, &failure, attempts));
    publisher
        .publish(OutgoingMessage { exchange: &exchange, routing_key: &routing_key, body: &delivery.data, properties })
        .await?;
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 4, delays: vec![Duration::from_secs(1), Duration::from_secs(10)] }
    }

    #[test]
    fn failures_are_retried_with_growing_delays_until_the_attempt_limit() {
        let p = policy();
        assert_eq!(p.decide(0), Decision::Retry { attempt: 1, delay: Duration::from_secs(1) });
        assert_eq!(p.decide(1), Decision::Retry { attempt: 2, delay: Duration::from_secs(10) });
        assert_eq!(
            p.decide(2),
            Decision::Retry { attempt: 3, delay: Duration::from_secs(10) },
            "the last delay repeats"
        );
        assert_eq!(p.decide(3), Decision::GiveUp { attempt: 4 });
        assert_eq!(p.decide(u32::MAX), Decision::GiveUp { attempt: u32::MAX });
    }

    #[test]
    fn settling_backs_off_doubling_to_a_cap_and_then_stops() {
        let b = Backoff { first: Duration::from_millis(200), max: Duration::from_secs(5), attempts: 8 };
        let waits: Vec<u64> = (0..9).filter_map(|a| b.delay(a)).map(|d| d.as_millis() as u64).collect();
        assert_eq!(waits, vec![200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000]);
        assert_eq!(b.delay(8), None, "then the message is nacked back");
        assert_eq!(b.total(), Duration::from_millis(21_200), "held about 20 s, not a tight redelivery loop");
        assert_eq!(b.delay(u32::MAX), None);
        let long = Backoff { attempts: 100, ..b };
        assert_eq!(long.delay(60), Some(Duration::from_secs(5)), "no overflow");
    }

    #[test]
    fn a_single_attempt_policy_never_retries() {
        let p = RetryPolicy { max_attempts: 1, delays: vec![Duration::from_secs(1)] };
        assert_eq!(p.decide(0), Decision::GiveUp { attempt: 1 });
    }
}

//! The load of a cluster scenario and its verdict: a Svix-like client that retries until it gets a
//! 2xx and records the longest stretch of wall time in which every answer was a refusal, a few
//! poison events mixed into the history, and the check that ends every scenario (each accepted
//! event applied exactly once; the dead-letter queue holds the poison and nothing else).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clerk_sync_core::samples::envelope;
use clerk_sync_testkit::{BrokerProbe, signed_post, wait_until};
use futures_util::StreamExt;
use secrecy::SecretString;

use crate::helpers::{History, SECRET, Stack};

/// Events in flight at once.
pub const IN_FLIGHT: usize = 32;
/// Events sent per second at most: slow enough that the load outlasts every fault (a rolling
/// restart takes about 30 s), fast enough to keep the 32 in flight busy through it.
const RATE: f64 = 150.0;
/// Poison events among the history: valid envelopes whose payload the worker refuses.
const POISON: usize = 5;

/// What the client saw, including the longest run of refusals.
#[derive(Default)]
pub struct Seen {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub unreachable: AtomicU64,
    run: Mutex<Run>,
}

#[derive(Default)]
struct Run {
    started: Option<Instant>,
    longest: Duration,
}

impl Seen {
    fn refused_now(&self) {
        let mut run = self.run.lock().unwrap();
        run.started.get_or_insert_with(Instant::now);
    }

    fn accepted_now(&self) {
        let mut run = self.run.lock().unwrap();
        if let Some(started) = run.started.take() {
            run.longest = run.longest.max(started.elapsed());
        }
    }

    /// From the first refusal after an acceptance to the next acceptance, the longest such span:
    /// how long the gateway could not queue anything.
    pub fn longest_refusal(&self) -> Duration {
        self.run.lock().unwrap().longest
    }
}

/// The history's events plus the poison, shuffled in among them.
pub struct Load {
    pub history: History,
    pub poison: BTreeSet<String>,
    events: Vec<(String, Vec<u8>)>,
}

impl Load {
    pub fn new(users: usize, updates: usize) -> Self {
        let history = History::new(users, updates);
        let mut events = history.events.clone();
        let mut poison = BTreeSet::new();
        for i in 0..POISON {
            let id = format!("msg_poison_{}", uuid::Uuid::new_v4().simple());
            // An id that is not a string: the worker dead-letters it as invalid_payload.
            let body = envelope("user.updated", serde_json::json!({"id": 42, "updated_at": 1}), 1);
            events.insert((i + 1) * events.len() / (POISON + 1), (id.clone(), body.to_string().into_bytes()));
            poison.insert(id);
        }
        Self { history, poison, events }
    }

    /// Delivers every event, Svix-like: the n-th first sent at n / RATE seconds, then anything but
    /// a 2xx retried after 100 ms until accepted.
    pub async fn deliver(&self, gateway: &str, deadline: Duration) -> Arc<Seen> {
        let seen = Arc::new(Seen::default());
        let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
        let secret = SecretString::from(SECRET.to_owned());
        let started = tokio::time::Instant::now();
        let until = Instant::now() + deadline;
        let jobs = self.events.iter().enumerate().map(|(i, (id, body))| {
            let (client, secret, seen) = (client.clone(), secret.clone(), seen.clone());
            async move {
                #[allow(clippy::cast_precision_loss, reason = "a few thousand events")]
                tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / RATE)).await;
                loop {
                    assert!(Instant::now() < until, "event {id} was never accepted");
                    let ts = chrono::Utc::now().timestamp();
                    match signed_post(&client, gateway, &secret, id, ts, body).send().await {
                        Ok(r) if r.status().is_success() => {
                            seen.accepted.fetch_add(1, Ordering::Relaxed);
                            seen.accepted_now();
                            return;
                        }
                        Ok(r) => {
                            assert_eq!(r.status().as_u16(), 503, "a refusal is a 503");
                            seen.refused.fetch_add(1, Ordering::Relaxed);
                            seen.refused_now();
                        }
                        Err(_) => {
                            seen.unreachable.fetch_add(1, Ordering::Relaxed);
                            seen.refused_now();
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        futures_util::stream::iter(jobs).for_each_concurrent(IN_FLIGHT, |job| job).await;
        seen
    }
}

/// What a scenario proved.
pub struct Verdict {
    pub committed: i64,
    pub lost: i64,
    pub dead_by_fault: usize,
    /// Extra dead-letter copies of a poison event (same svix-id).
    pub poison_copies: usize,
}

/// Waits until every accepted healthy event is committed, then checks the users' final state, that
/// each event is recorded once, and that the dead-letter queue holds exactly the poison.
pub async fn verify(stack: &Stack, load: &Load, timeout: Duration) -> Verdict {
    let n = i64::try_from(load.history.events.len()).unwrap();
    const COMMITTED: &str = "SELECT count(*) FROM clerk.webhook_events WHERE outcome IS NOT NULL
        AND svix_id NOT LIKE 'msg_probe_%' AND svix_id NOT LIKE 'msg_poison_%'";
    const RECORDED: &str = "SELECT count(*) FROM clerk.webhook_events
        WHERE svix_id NOT LIKE 'msg_probe_%' AND svix_id NOT LIKE 'msg_poison_%'";
    let committed = || async { sqlx::query_scalar::<_, i64>(COMMITTED).fetch_one(&stack.pool).await.unwrap_or(-1) };
    wait_until(timeout, &format!("{n} events are committed"), || async { committed().await >= n }).await;
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, first_name FROM clerk.users ORDER BY id").fetch_all(&stack.pool).await.unwrap();
    assert_eq!(rows.len(), load.history.users, "one row per user");
    for (id, first_name) in &rows {
        assert_eq!(first_name.as_deref(), Some(load.history.latest(id).as_str()), "{id} ends at its newest version");
    }
    let recorded: i64 = sqlx::query_scalar(RECORDED).fetch_one(&stack.pool).await.unwrap();
    assert_eq!(recorded, n, "every accepted event recorded exactly once");

    let probe = BrokerProbe::connect().await;
    let dead_queue = stack.topology.dead_queue();
    let poison = u32::try_from(load.poison.len()).unwrap();
    wait_until(Duration::from_secs(60), "the poison is dead-lettered", || async {
        probe.ready_count(&dead_queue).await >= poison
    })
    .await;
    let letters = probe.drain(&dead_queue, Duration::from_millis(500)).await;
    let ids: Vec<String> =
        letters.iter().map(|m| m.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default()).collect();
    let dead_by_fault = ids.iter().filter(|id| !load.poison.contains(*id)).count();
    let poison_seen: BTreeSet<&String> = ids.iter().filter(|id| load.poison.contains(*id)).collect();
    assert_eq!(dead_by_fault, 0, "dead-lettered besides the poison: {ids:?}");
    assert_eq!(poison_seen.len(), load.poison.len(), "each poison event dead-lettered: {ids:?}");
    // A poison event can be dead-lettered twice: its publish confirmed as the connection went (the
    // client saw a 503 and sent it again), or its dead-letter copy confirmed before the ack of the
    // original was lost with a node. At-least-once, as for healthy events, which dedup on svix-id.
    let poison_copies = ids.len() - poison_seen.len();
    Verdict { committed: recorded, lost: n - recorded, dead_by_fault, poison_copies }
}

/// The scenario's row in the suite's table.
pub fn report(scenario: &str, seen: &Seen, verdict: &Verdict) {
    println!(
        "CLUSTER | {scenario} | {IN_FLIGHT} | {:.1} s | {} | {} | {} accepted, {} refused, {} unreachable, {} committed once, {} poison dead-lettered (+{} duplicate copies)",
        seen.longest_refusal().as_secs_f64(),
        verdict.lost,
        verdict.dead_by_fault,
        seen.accepted.load(Ordering::Relaxed),
        seen.refused.load(Ordering::Relaxed),
        seen.unreachable.load(Ordering::Relaxed),
        verdict.committed,
        POISON,
        verdict.poison_copies,
    );
}

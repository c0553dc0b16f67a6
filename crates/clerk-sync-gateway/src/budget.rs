//! The process-wide budget of request-body bytes held in memory at once.
//!
//! A forged request cannot be told from a real one until its whole body has arrived and its HMAC
//! is checked, so bodies must be buffered; this bounds what all of them hold together, whatever
//! the number of connections. A body reserves its bytes before it buffers them. When they do not
//! fit, the largest body still being read gives way (it is answered 503) if it is larger than the
//! newcomer would be; otherwise the newcomer is refused. Real Clerk events are a few KB and arrive
//! at once, so under a flood of large or trickled forged bodies they are the last to be refused.
//!
//! The bytes a shed body gives back are set aside for the request that shed it, so a flood that
//! keeps reserving cannot take them first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The body does not fit: answer 503 and let the client retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

#[derive(Clone)]
pub struct BodyBudget {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Woken whenever bytes are given back.
    released: Notify,
    in_use: IntGauge,
}

struct State {
    capacity: usize,
    /// Bytes reserved by bodies.
    used: usize,
    /// Bytes set aside for requests that shed a body and wait for its bytes.
    claimed: usize,
    next_id: u64,
    holders: HashMap<u64, Holder>,
}

struct Holder {
    held: usize,
    claim: usize,
    started: Instant,
    /// False once the body has arrived: a verified request is never shed while it publishes.
    sheddable: bool,
    shed: CancellationToken,
}

/// One request's share of the budget, given back when it is dropped.
pub struct Hold {
    shared: Arc<Shared>,
    id: u64,
    shed: CancellationToken,
}

impl BodyBudget {
    pub fn new(capacity: usize, in_use: IntGauge) -> Self {
        let state = State { capacity, used: 0, claimed: 0, next_id: 0, holders: HashMap::new() };
        Self { shared: Arc::new(Shared { state: Mutex::new(state), released: Notify::new(), in_use }) }
    }

    /// A share of nothing yet, for one request's body.
    pub fn hold(&self) -> Hold {
        let mut state = self.shared.lock();
        let id = state.next_id;
        state.next_id += 1;
        let shed = CancellationToken::new();
        let holder = Holder { held: 0, claim: 0, started: Instant::now(), sheddable: true, shed: shed.clone() };
        state.holders.insert(id, holder);
        Hold { shared: self.shared.clone(), id, shed }
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.shared.lock().used
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every step, so a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Reserves for `id` if the bytes are free (its own claim counts as free for it).
    fn try_take(&mut self, id: u64, n: usize) -> bool {
        let claim = self.holders.get(&id).map_or(0, |h| h.claim);
        if self.used + n + (self.claimed - claim) > self.capacity {
            return false;
        }
        self.used += n;
        self.claimed -= claim;
        if let Some(h) = self.holders.get_mut(&id) {
            h.held += n;
            h.claim = 0;
        }
        true
    }

    /// Sheds the largest body being read (the oldest among equals) if it holds more than `than`,
    /// and returns it.
    fn shed_larger(&mut self, id: u64, than: usize) -> Option<u64> {
        let (victim, holder) = self
            .holders
            .iter()
            .filter(|(other, h)| **other != id && h.sheddable && !h.shed.is_cancelled() && h.held > than)
            .max_by(|(_, a), (_, b)| a.held.cmp(&b.held).then(b.started.cmp(&a.started)))?;
        holder.shed.cancel();
        Some(*victim)
    }

    fn set_claim(&mut self, id: u64, claim: usize) {
        if let Some(h) = self.holders.get_mut(&id) {
            self.claimed = self.claimed - h.claim + claim;
            h.claim = claim;
        }
    }
}

impl Hold {
    /// Reserves `n` more bytes, shedding a larger body to make room if there is one and waiting at
    /// most `wait` for it to give its bytes back. Fails at once if this request was shed.
    pub async fn reserve(&self, n: usize, wait: Duration) -> Result<(), Overloaded> {
        let deadline = tokio::time::Instant::now() + wait;
        // The body this request shed, until it has given its bytes back.
        let mut victim = None;
        loop {
            let released = self.shared.released.notified();
            {
                let mut state = self.shared.lock();
                if self.shed.is_cancelled() {
                    state.set_claim(self.id, 0);
                    return Err(Overloaded);
                }
                if state.try_take(self.id, n) {
                    self.shared.in_use.set(i64::try_from(state.used).unwrap_or(i64::MAX));
                    return Ok(());
                }
                if !victim.is_some_and(|v| state.holders.contains_key(&v)) {
                    let mine = state.holders.get(&self.id).map_or(0, |h| h.held) + n;
                    victim = state.shed_larger(self.id, mine);
                    if victim.is_none() {
                        // Nothing larger to shed: this one does not fit.
                        state.set_claim(self.id, 0);
                        return Err(Overloaded);
                    }
                    state.set_claim(self.id, n);
                }
            }
            tokio::select! {
                () = released => {}
                () = self.shed.cancelled() => {}
                () = tokio::time::sleep_until(deadline) => {
                    self.shared.lock().set_claim(self.id, 0);
                    return Err(Overloaded);
                }
            }
        }
    }

    /// Resolves when a smaller request has shed this one: stop reading and answer 503.
    pub async fn shed(&self) {
        self.shed.cancelled().await;
    }

    /// The whole body has arrived: from now on it is never shed (it is verified and published).
    pub fn keep(&self) {
        if let Some(h) = self.shared.lock().holders.get_mut(&self.id) {
            h.sheddable = false;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(h) = state.holders.remove(&self.id) {
            state.used -= h.held;
            state.claimed -= h.claim;
        }
        self.shared.in_use.set(i64::try_from(state.used).unwrap_or(i64::MAX));
        drop(state);
        self.shared.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(200);

    fn budget(capacity: usize) -> BodyBudget {
        BodyBudget::new(capacity, IntGauge::new("test_in_use", "test").unwrap())
    }

    #[tokio::test]
    async fn reservations_within_the_capacity_succeed_and_are_given_back_on_drop() {
        let budget = budget(100);
        let (a, b) = (budget.hold(), budget.hold());
        a.reserve(60, WAIT).await.unwrap();
        b.reserve(40, WAIT).await.unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_request_that_would_be_the_largest_is_refused_and_holds_nothing_more() {
        let budget = budget(100);
        let a = budget.hold();
        a.reserve(60, WAIT).await.unwrap();
        let b = budget.hold();
        assert_eq!(b.reserve(60, WAIT).await, Err(Overloaded));
        assert_eq!(budget.used(), 60);
        assert!(!a.shed.is_cancelled(), "an equal or smaller body is never shed for it");
    }

    #[tokio::test]
    async fn a_smaller_request_sheds_the_largest_and_gets_its_bytes_first() {
        let budget = budget(100);
        let (large, medium) = (budget.hold(), budget.hold());
        large.reserve(70, WAIT).await.unwrap();
        medium.reserve(30, WAIT).await.unwrap();
        let small = budget.hold();
        let waiting = small.reserve(10, Duration::from_secs(5));
        let shed_and_drop = async {
            large.shed().await;
            // Another body asks before the shed one is gone: the freed bytes are spoken for.
            let greedy = budget.hold();
            drop(large);
            assert_eq!(greedy.reserve(65, WAIT).await, Err(Overloaded));
        };
        let (got, ()) = tokio::join!(waiting, shed_and_drop);
        assert_eq!(got, Ok(()));
        assert!(!medium.shed.is_cancelled());
        assert_eq!(budget.used(), 40);
    }

    #[tokio::test]
    async fn a_waiter_sheds_one_body_however_often_it_is_woken() {
        let budget = budget(100);
        let (older, newer) = (budget.hold(), budget.hold());
        older.reserve(50, WAIT).await.unwrap();
        newer.reserve(50, WAIT).await.unwrap();
        let small = budget.hold();
        let waiting = small.reserve(10, Duration::from_secs(5));
        let churn = async {
            older.shed().await;
            // Requests that come and go wake the waiter before its victim is gone.
            for _ in 0..3 {
                drop(budget.hold());
                tokio::task::yield_now().await;
            }
            drop(older);
        };
        let (got, ()) = tokio::join!(waiting, churn);
        assert_eq!(got, Ok(()));
        assert!(!newer.shed.is_cancelled(), "only the oldest of the largest was shed");
        assert_eq!(budget.used(), 60);
    }

    #[tokio::test]
    async fn a_kept_body_is_never_shed() {
        let budget = budget(100);
        let a = budget.hold();
        a.reserve(90, WAIT).await.unwrap();
        a.keep();
        let b = budget.hold();
        assert_eq!(b.reserve(20, WAIT).await, Err(Overloaded));
        assert!(!a.shed.is_cancelled());
    }

    #[tokio::test]
    async fn a_shed_body_that_never_gives_its_bytes_back_times_the_waiter_out() {
        let budget = budget(100);
        let stuck = budget.hold();
        stuck.reserve(100, WAIT).await.unwrap();
        let small = budget.hold();
        assert_eq!(small.reserve(10, WAIT).await, Err(Overloaded));
        drop(small);
        assert_eq!(budget.shared.lock().claimed, 0, "the claim is dropped with the waiter");
        drop(stuck);
        assert_eq!(budget.used(), 0);
    }
}

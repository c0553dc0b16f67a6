//! The svix-ids this worker process is applying right now, across its concurrent batches.
//!
//! Svix redelivers a message with the same svix-id, and a redelivery can land in a batch while the
//! first copy's batch is still open. The second batch's dedup insert then waits on the first
//! transaction's uncommitted row, holding every lock the second batch has taken so far: with large
//! batches nearly every batch ended up waiting for the previous one's commit. Instead, a batch
//! applies first the messages no other batch holds, and applies the rest in a second transaction
//! once their ids are free (where dedup finds them, or applies them if the first copy failed).
//! Deduplication itself stays in the transaction; this only avoids waiting inside one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct InFlight {
    ids: Mutex<HashSet<String>>,
    released: Notify,
}

/// Ids registered by one batch; dropping it releases them (also when the batch gives up).
#[derive(Debug)]
pub struct Claim {
    owner: Arc<InFlight>,
    ids: Vec<String>,
}

impl InFlight {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Claims every id no other batch holds; returns the claim and, per id, whether it was free.
    pub fn claim_free<'a>(self: &Arc<Self>, ids: impl IntoIterator<Item = &'a str>) -> (Claim, Vec<bool>) {
        let mut map = self.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut claimed: Vec<String> = Vec::new();
        let mut free = Vec::new();
        for id in ids {
            // A second copy inside the same batch is the batch's own business (dedup handles it).
            if claimed.iter().any(|c| c == id) {
                free.push(true);
            } else if map.insert(id.to_owned()) {
                claimed.push(id.to_owned());
                free.push(true);
            } else {
                free.push(false);
            }
        }
        (Claim { owner: self.clone(), ids: claimed }, free)
    }

    /// Waits until none of `ids` is held by another batch, then claims them all.
    pub async fn claim_all(self: &Arc<Self>, ids: &[&str]) -> Claim {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before checking, so a release between the check and the await is not missed.
            released.as_mut().enable();
            {
                let mut map = self.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if ids.iter().all(|id| !map.contains(*id)) {
                    let claimed: Vec<String> =
                        ids.iter().filter(|id| map.insert((**id).to_owned())).map(|id| (*id).to_owned()).collect();
                    return Claim { owner: self.clone(), ids: claimed };
                }
            }
            released.await;
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut map = self.owner.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in &self.ids {
            map.remove(id);
        }
        drop(map);
        self.owner.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ids_held_by_another_batch_are_not_free_and_a_batchs_own_repeats_are() {
        let f = InFlight::new();
        let (_a, free_a) = f.claim_free(["m1", "m2"]);
        assert_eq!(free_a, vec![true, true]);
        let (_b, free_b) = f.claim_free(["m2", "m3", "m3"]);
        assert_eq!(free_b, vec![false, true, true]);
        assert_eq!(f.held(), 3);
    }

    #[test]
    fn dropping_a_claim_releases_its_ids() {
        let f = InFlight::new();
        let (a, _) = f.claim_free(["m1"]);
        drop(a);
        assert_eq!(f.held(), 0);
        let (_b, free) = f.claim_free(["m1"]);
        assert_eq!(free, vec![true]);
    }

    #[tokio::test]
    async fn claim_all_waits_for_the_holder_to_finish() {
        let f = InFlight::new();
        let (a, _) = f.claim_free(["m1", "m2"]);
        let waiter = tokio::spawn({
            let f = f.clone();
            async move {
                let _claim = f.claim_all(&["m2"]).await;
            }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "m2 is still held");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(f.held(), 0);
    }
}

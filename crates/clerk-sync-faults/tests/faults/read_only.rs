//! A failover that lands on a standby: the database refuses every write (SQLSTATE 25006) for
//! 20 s while a history is delivered, with a retry schedule short enough (1 s, two attempts) that
//! treating it as poison would dead-letter most of the events in flight.

use std::time::Duration;

use clerk_sync_testkit::wait_until;

use crate::helpers::*;

#[tokio::test]
#[ignore = "runs with the fault suite (`make test-faults`)"]
async fn postgres_read_only_for_20_s_during_load() {
    let mut stack = Stack::new("f-readonly").await;
    stack.spawn_worker_with(&[("CLERK_SYNC__WORKER__RETRY_DELAYS", "1s"), ("CLERK_SYNC__WORKER__MAX_ATTEMPTS", "2")]);
    let gateway = stack.spawn_gateway().await;
    let history = History::new(60, 10);
    let load = deliver(&history, std::slice::from_ref(&gateway.url), 16, Duration::from_secs(240));
    let inject = async {
        wait_until(Duration::from_secs(60), "load is flowing", || async { stack.processed().await >= 50 }).await;
        stack.db.set_read_only(true).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        stack.db.set_read_only(false).await;
    };
    let (stats, ()) = tokio::join!(load, inject);
    let verified = stack.verify(&history, Duration::from_secs(120)).await;
    report("Postgres read-only (25006) for 20 s, retry 1s x2", 600, "read-only 20 s", &stats, &verified);
    stack.cleanup().await;
}

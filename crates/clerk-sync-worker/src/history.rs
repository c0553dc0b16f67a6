//! Upkeep of the event history (`clerk.event_history`): daily partitions created a few days ahead
//! (a day without one would land in the DEFAULT partition), whole days dropped once older than
//! `worker.event_retention` (no per-row deletes), and the size gauges. Runs in housekeeping, so
//! every worker does it; the SQL functions serialize concurrent callers.

use std::time::Duration;

use sqlx::PgPool;

use crate::metrics::WorkerMetrics;

/// Days of partitions kept ready from yesterday on: a worker that stops doing housekeeping for a
/// day or two still has somewhere to write.
const DAYS_AHEAD: i32 = 4;

pub async fn maintain(pool: &PgPool, retention: Duration, metrics: &WorkerMetrics) {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let upkeep = async {
        // Every worker does this: the lock (the one `history_ensure_partitions` takes) makes a
        // second worker wait and then find the work done, instead of dropping a table twice.
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('clerk.event_history partitions'))")
            .execute(&mut *tx)
            .await?;
        let created: i32 =
            sqlx::query_scalar("SELECT clerk.history_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, $1)")
                .bind(DAYS_AHEAD)
                .fetch_one(&mut *tx)
                .await?;
        let dropped: i32 =
            sqlx::query_scalar("SELECT clerk.history_drop_before($1)").bind(cutoff).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>((created, dropped))
    };
    match upkeep.await {
        Ok((0, 0)) => {}
        Ok((created, dropped)) => tracing::info!(created, dropped, "event history partitions maintained"),
        Err(e) => tracing::warn!(error = %e, "event history upkeep failed; will retry"),
    }
    let size = async {
        let mut conn = pool.acquire().await?;
        clerk_sync_store::history::query::size(&mut conn).await
    };
    match size.await {
        Ok((rows, bytes)) => {
            metrics.history_rows.set(rows);
            metrics.history_bytes.set(bytes);
        }
        Err(e) => tracing::debug!(error = %e, "reading the event history's size failed"),
    }
}

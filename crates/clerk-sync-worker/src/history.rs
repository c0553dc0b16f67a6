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
    let result = async {
        let created: i32 =
            sqlx::query_scalar("SELECT clerk.history_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, $1)")
                .bind(DAYS_AHEAD)
                .fetch_one(pool)
                .await?;
        let dropped: i32 =
            sqlx::query_scalar("SELECT clerk.history_drop_before($1)").bind(cutoff).fetch_one(pool).await?;
        let mut conn = pool.acquire().await?;
        let (rows, bytes) = clerk_sync_store::history::query::size(&mut conn).await?;
        Ok::<_, sqlx::Error>((created, dropped, rows, bytes))
    }
    .await;
    match result {
        Ok((created, dropped, rows, bytes)) => {
            if created > 0 || dropped > 0 {
                tracing::info!(created, dropped, "event history partitions maintained");
            }
            metrics.history_rows.set(rows);
            metrics.history_bytes.set(bytes);
        }
        Err(e) => tracing::warn!(error = %e, "event history upkeep failed; will retry"),
    }
}

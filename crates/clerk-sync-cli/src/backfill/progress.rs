//! `clerk.backfill_progress`: where each kind's backfill stands ([`Position`]), read when a run
//! starts and written in the transaction of each page's rows, so an interrupted run resumes at the
//! first page not committed (migrations 2 and 18).

use sqlx::{PgConnection, PgPool};

use super::kinds::Kind;
use super::pager::Position;

/// The position to start from: the saved one if a run was interrupted, else the start (and the
/// row reset).
pub async fn start(pool: &PgPool, kind: Kind, restart: bool) -> Result<Position, sqlx::Error> {
    let saved: Option<(i32, Option<String>, bool)> = sqlx::query_as(
        "SELECT next_offset, parent_cursor, finished_at IS NOT NULL FROM clerk.backfill_progress WHERE resource = $1",
    )
    .bind(kind.name())
    .fetch_optional(pool)
    .await?;
    match saved {
        Some((offset, parent_done, false)) if !restart => {
            Ok(Position { parent_done, offset: u32::try_from(offset).unwrap_or(0) })
        }
        _ => {
            sqlx::query(
                "INSERT INTO clerk.backfill_progress (resource) VALUES ($1)
                 ON CONFLICT (resource) DO UPDATE SET next_offset = 0, parent_cursor = NULL, written = 0,
                     started_at = now(), updated_at = now(), finished_at = NULL",
            )
            .bind(kind.name())
            .execute(pool)
            .await?;
            Ok(Position::default())
        }
    }
}

/// Saves `after` and counts `written` rows, inside the page's transaction.
pub async fn save(conn: &mut PgConnection, kind: Kind, after: &Position, written: u64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE clerk.backfill_progress SET next_offset = $2, parent_cursor = $3, written = written + $4,
             updated_at = now()
         WHERE resource = $1",
    )
    .bind(kind.name())
    .bind(i32::try_from(after.offset).unwrap_or(i32::MAX))
    .bind(after.parent_done.as_deref())
    .bind(i64::try_from(written).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

/// The walk is over: the next run starts from the beginning.
pub async fn finish(pool: &PgPool, kind: Kind) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE clerk.backfill_progress SET finished_at = now(), updated_at = now() WHERE resource = $1")
        .bind(kind.name())
        .execute(pool)
        .await?;
    Ok(())
}

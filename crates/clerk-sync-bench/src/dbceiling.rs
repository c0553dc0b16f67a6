//! The database ceiling: a plain program that writes the rows the worker writes, for the same
//! messages in the same order, in transactions of the worker's batch size and as many concurrent
//! transactions as the worker's `concurrency`. It reduces each batch with the store's own plan
//! builder and row structs (`clerk_sync_store::db::{plan, resources}`), then upserts them plainly:
//! no `webhook_events`, no ordering guard, no tombstone rules, no outcomes. That bookkeeping is
//! what the worker-to-ceiling ratio measures. Parsing happens before the clock starts, so the
//! ceiling is the database's alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clerk_sync_store::db::plan::Plan;
use clerk_sync_store::db::resources::Rows;
use clerk_sync_store::event::{self, Event};
use sqlx::postgres::PgConnectOptions;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use crate::workload::Message;

/// Each statement reads one resource's rows from a `jsonb` array whose keys are the column names.
const ORGS: &str = "INSERT INTO clerk.organizations AS t (id, name, slug, image_url, created_by, members_count,
        max_allowed_memberships, public_metadata, private_metadata, created_at, updated_at, raw, nested, version_at,
        version_svix_id, synced_at)
    SELECT x.id, x.name, x.slug, x.image_url, x.created_by, x.members_count, x.max_allowed_memberships,
        x.public_metadata, x.private_metadata, x.created_at, x.updated_at, x.raw, x.nested, x.version_at,
        x.version_svix_id, now()
    FROM jsonb_populate_recordset(NULL::clerk.organizations, $1) AS x ORDER BY x.id
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, slug = EXCLUDED.slug, image_url = EXCLUDED.image_url,
        created_by = EXCLUDED.created_by, members_count = EXCLUDED.members_count,
        max_allowed_memberships = EXCLUDED.max_allowed_memberships, public_metadata = EXCLUDED.public_metadata,
        private_metadata = EXCLUDED.private_metadata, created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at, raw = EXCLUDED.raw, nested = EXCLUDED.nested,
        version_at = EXCLUDED.version_at, version_svix_id = EXCLUDED.version_svix_id, synced_at = now()";

const USERS: &str = "INSERT INTO clerk.users AS t (id, external_id, username, first_name, last_name,
        primary_email_address, primary_phone_number, image_url, public_metadata, private_metadata, unsafe_metadata,
        banned, locked, last_sign_in_at, created_at, updated_at, raw, version_at, version_svix_id, synced_at)
    SELECT x.id, x.external_id, x.username, x.first_name, x.last_name, x.primary_email_address,
        x.primary_phone_number, x.image_url, x.public_metadata, x.private_metadata, x.unsafe_metadata, x.banned,
        x.locked, x.last_sign_in_at, x.created_at, x.updated_at, x.raw, x.version_at, x.version_svix_id, now()
    FROM jsonb_populate_recordset(NULL::clerk.users, $1) AS x ORDER BY x.id
    ON CONFLICT (id) DO UPDATE SET external_id = EXCLUDED.external_id, username = EXCLUDED.username,
        first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
        primary_email_address = EXCLUDED.primary_email_address, primary_phone_number = EXCLUDED.primary_phone_number,
        image_url = EXCLUDED.image_url, public_metadata = EXCLUDED.public_metadata,
        private_metadata = EXCLUDED.private_metadata, unsafe_metadata = EXCLUDED.unsafe_metadata,
        banned = EXCLUDED.banned, locked = EXCLUDED.locked, last_sign_in_at = EXCLUDED.last_sign_in_at,
        created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, raw = EXCLUDED.raw,
        version_at = EXCLUDED.version_at, version_svix_id = EXCLUDED.version_svix_id, synced_at = now()";

const MEMBERSHIPS: &str = "INSERT INTO clerk.organization_memberships AS t (id, organization_id, user_id, role,
        permissions, public_metadata, private_metadata, created_at, updated_at, raw, version_at, version_svix_id,
        synced_at)
    SELECT x.id, x.organization_id, x.user_id, x.role, x.permissions, x.public_metadata, x.private_metadata,
        x.created_at, x.updated_at, x.raw, x.version_at, x.version_svix_id, now()
    FROM jsonb_populate_recordset(NULL::clerk.organization_memberships, $1) AS x ORDER BY x.id
    ON CONFLICT (id) DO UPDATE SET organization_id = EXCLUDED.organization_id, user_id = EXCLUDED.user_id,
        role = EXCLUDED.role, permissions = EXCLUDED.permissions, public_metadata = EXCLUDED.public_metadata,
        private_metadata = EXCLUDED.private_metadata, created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at, raw = EXCLUDED.raw, version_at = EXCLUDED.version_at,
        version_svix_id = EXCLUDED.version_svix_id, synced_at = now()";

/// A deletion, for any of the three tables.
macro_rules! deletions {
    ($table:literal) => {
        concat!(
            "INSERT INTO clerk.",
            $table,
            " AS t (id, deleted_at, synced_at)
             SELECT x.id, x.deleted_at, now() FROM jsonb_populate_recordset(NULL::clerk.",
            $table,
            ", $1) AS x
             ORDER BY x.id
             ON CONFLICT (id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at, raw = NULL, synced_at = now()"
        )
    };
}

/// Writes one batch's rows in one transaction. The statements go organizations, users,
/// memberships, each in id order, so concurrent batches never deadlock. Returns the rows written.
pub async fn write_batch(conn: &mut PgConnection, batch: &[&Event]) -> Result<usize, sqlx::Error> {
    let plan = Plan::build(batch, &vec![true; batch.len()]);
    let rows = Rows::of(&plan);
    let mut tx = conn.begin().await?;
    let mut written = 0;
    macro_rules! upsert {
        ($sql:expr, $table:literal, $batch:expr) => {
            if !$batch.upserts.is_empty() {
                written += $batch.upserts.len();
                sqlx::query($sql).bind(Json(&$batch.upserts)).execute(&mut *tx).await?;
            }
            if !$batch.deletions.is_empty() {
                written += $batch.deletions.len();
                sqlx::query(deletions!($table)).bind(Json(&$batch.deletions)).execute(&mut *tx).await?;
            }
        };
    }
    upsert!(ORGS, "organizations", rows.organizations);
    upsert!(USERS, "users", rows.users);
    upsert!(MEMBERSHIPS, "organization_memberships", rows.memberships);
    tx.commit().await?;
    Ok(written)
}

#[derive(Debug, serde::Serialize)]
pub struct CeilingReport {
    pub messages: usize,
    pub batches: usize,
    pub rows_written: usize,
    pub seconds: f64,
    /// Messages per second: the unit the worker is measured in.
    pub events_per_s: f64,
    pub deadlock_retries: u64,
    /// `true` when connected through the Unix socket rather than TCP.
    pub unix_socket: bool,
}

/// Parses every message (untimed), then writes all batches with `concurrency` connections.
pub async fn run(
    connect: &PgConnectOptions,
    messages: &[Message],
    batch_size: usize,
    concurrency: usize,
) -> anyhow::Result<CeilingReport> {
    let parsed: Vec<Event> = messages
        .iter()
        .map(|m| event::parse(&m.svix_id, m.received_at_ms, &m.body))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("a workload message does not parse: {e}"))?;
    let batches: Vec<(usize, usize)> =
        (0..messages.len()).step_by(batch_size.max(1)).map(|s| (s, (s + batch_size).min(messages.len()))).collect();
    let shared = Arc::new((parsed, batches));
    let next = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..concurrency.max(1) {
        conns.push(PgConnection::connect_with(connect).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (shared, next) = (shared.clone(), next.clone());
            tokio::spawn(async move {
                let (parsed, batches) = &*shared;
                let (mut rows, mut retries) = (0usize, 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(from, to)) = batches.get(i) else { break };
                    let batch: Vec<&Event> = parsed[from..to].iter().collect();
                    loop {
                        match write_batch(&mut conn, &batch).await {
                            Ok(written) => {
                                rows += written;
                                break;
                            }
                            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("40P01") && retries < 100 => {
                                retries += 1;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => return Err(anyhow::Error::from(e)),
                        }
                    }
                }
                let _ = conn.close().await;
                Ok::<_, anyhow::Error>((rows, retries))
            })
        })
        .collect();
    let (mut rows_written, mut deadlock_retries) = (0, 0);
    for task in tasks {
        let (rows, retries) = task.await??;
        rows_written += rows;
        deadlock_retries += retries;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(CeilingReport {
        messages: messages.len(),
        batches: shared.1.len(),
        rows_written,
        seconds,
        events_per_s: messages.len() as f64 / seconds,
        deadlock_retries,
        unix_socket: connect.get_socket().is_some(),
    })
}

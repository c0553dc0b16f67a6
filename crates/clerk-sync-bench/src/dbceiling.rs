//! The database ceiling: a plain program that writes the rows the worker writes, for the same
//! messages in the same order, with batched `UNNEST` upserts in transactions of the worker's batch
//! size and as many concurrent transactions as the worker's `concurrency`. It has none of the
//! worker's bookkeeping (no `webhook_events`, no ordering guard, no tombstone rules, no outcomes):
//! that bookkeeping is what the worker-to-ceiling ratio measures. Parsing happens before the
//! clock starts, so the ceiling is the database's alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clerk_sync_worker::event::ParsedEvent;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use crate::rows::{BatchColumns, build};
use crate::workload::Message;

const USERS: &str = "INSERT INTO clerk.users AS t (id, external_id, username, first_name, last_name,
        primary_email_address, primary_phone_number, image_url, public_metadata, private_metadata, unsafe_metadata,
        banned, locked, last_sign_in_at, created_at, updated_at, deleted_at, raw, synced_at)
    SELECT x.id, x.external_id, x.username, x.first_name, x.last_name, x.email, x.phone, x.image_url, x.pub::jsonb,
        x.priv::jsonb, x.uns::jsonb, x.banned, x.locked, x.last_sign_in_at, x.created_at, x.updated_at, x.deleted_at,
        x.raw::jsonb, now()
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
        $9::text[], $10::text[], $11::text[], $12::bool[], $13::bool[], $14::timestamptz[], $15::timestamptz[],
        $16::timestamptz[], $17::timestamptz[], $18::text[])
        AS x(id, external_id, username, first_name, last_name, email, phone, image_url, pub, priv, uns, banned, locked,
             last_sign_in_at, created_at, updated_at, deleted_at, raw)
    ORDER BY x.id
    ON CONFLICT (id) DO UPDATE SET external_id = EXCLUDED.external_id, username = EXCLUDED.username,
        first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
        primary_email_address = EXCLUDED.primary_email_address, primary_phone_number = EXCLUDED.primary_phone_number,
        image_url = EXCLUDED.image_url, public_metadata = EXCLUDED.public_metadata,
        private_metadata = EXCLUDED.private_metadata, unsafe_metadata = EXCLUDED.unsafe_metadata,
        banned = EXCLUDED.banned, locked = EXCLUDED.locked, last_sign_in_at = EXCLUDED.last_sign_in_at,
        created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at,
        raw = EXCLUDED.raw, synced_at = now()";

const ORGS: &str = "INSERT INTO clerk.organizations AS t (id, name, slug, image_url, created_by, members_count,
        max_allowed_memberships, public_metadata, private_metadata, created_at, updated_at, deleted_at, raw, synced_at)
    SELECT x.id, x.name, x.slug, x.image_url, x.created_by, x.members_count, x.max_allowed, x.pub::jsonb,
        x.priv::jsonb, x.created_at, x.updated_at, x.deleted_at, x.raw::jsonb, now()
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int4[], $8::text[],
        $9::text[], $10::timestamptz[], $11::timestamptz[], $12::timestamptz[], $13::text[])
        AS x(id, name, slug, image_url, created_by, members_count, max_allowed, pub, priv, created_at, updated_at,
             deleted_at, raw)
    ORDER BY x.id
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, slug = EXCLUDED.slug, image_url = EXCLUDED.image_url,
        created_by = EXCLUDED.created_by, members_count = EXCLUDED.members_count,
        max_allowed_memberships = EXCLUDED.max_allowed_memberships, public_metadata = EXCLUDED.public_metadata,
        private_metadata = EXCLUDED.private_metadata, created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at, raw = EXCLUDED.raw, synced_at = now()";

const MEMBERSHIPS: &str = "INSERT INTO clerk.organization_memberships AS t (id, organization_id, user_id, role,
        permissions, public_metadata, private_metadata, created_at, updated_at, deleted_at, raw, synced_at)
    SELECT x.id, x.organization_id, x.user_id, x.role,
        CASE WHEN x.permissions IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(x.permissions::jsonb)) END,
        x.pub::jsonb, x.priv::jsonb, x.created_at, x.updated_at, x.deleted_at, x.raw::jsonb, now()
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::text[])
        AS x(id, organization_id, user_id, role, permissions, pub, priv, created_at, updated_at, deleted_at, raw)
    ORDER BY x.id
    ON CONFLICT (id) DO UPDATE SET organization_id = EXCLUDED.organization_id, user_id = EXCLUDED.user_id,
        role = EXCLUDED.role, permissions = EXCLUDED.permissions, public_metadata = EXCLUDED.public_metadata,
        private_metadata = EXCLUDED.private_metadata, created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at, raw = EXCLUDED.raw, synced_at = now()";

/// Writes one batch's rows in one transaction. The statements go organizations, users,
/// memberships, each in id order, so concurrent batches never deadlock.
pub async fn write_batch(conn: &mut PgConnection, c: &BatchColumns<'_>) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    if !c.orgs.id.is_empty() {
        let o = &c.orgs;
        sqlx::query(ORGS)
            .bind(&o.id)
            .bind(&o.name)
            .bind(&o.slug)
            .bind(&o.image_url)
            .bind(&o.created_by)
            .bind(&o.members_count)
            .bind(&o.max_allowed)
            .bind(&o.public_metadata)
            .bind(&o.private_metadata)
            .bind(&o.created_at)
            .bind(&o.updated_at)
            .bind(&o.deleted_at)
            .bind(&o.raw)
            .execute(&mut *tx)
            .await?;
    }
    if !c.users.id.is_empty() {
        let u = &c.users;
        sqlx::query(USERS)
            .bind(&u.id)
            .bind(&u.external_id)
            .bind(&u.username)
            .bind(&u.first_name)
            .bind(&u.last_name)
            .bind(&u.email)
            .bind(&u.phone)
            .bind(&u.image_url)
            .bind(&u.public_metadata)
            .bind(&u.private_metadata)
            .bind(&u.unsafe_metadata)
            .bind(&u.banned)
            .bind(&u.locked)
            .bind(&u.last_sign_in_at)
            .bind(&u.created_at)
            .bind(&u.updated_at)
            .bind(&u.deleted_at)
            .bind(&u.raw)
            .execute(&mut *tx)
            .await?;
    }
    if !c.members.id.is_empty() {
        let m = &c.members;
        sqlx::query(MEMBERSHIPS)
            .bind(&m.id)
            .bind(&m.organization_id)
            .bind(&m.user_id)
            .bind(&m.role)
            .bind(&m.permissions)
            .bind(&m.public_metadata)
            .bind(&m.private_metadata)
            .bind(&m.created_at)
            .bind(&m.updated_at)
            .bind(&m.deleted_at)
            .bind(&m.raw)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
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
    let parsed: Vec<ParsedEvent> = messages
        .iter()
        .map(|m| clerk_sync_worker::event::parse(&m.body))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("a workload message does not parse: {e}"))?;
    let received: Vec<i64> = messages.iter().map(|m| m.received_at_ms).collect();
    let batches: Vec<(usize, usize)> =
        (0..messages.len()).step_by(batch_size.max(1)).map(|s| (s, (s + batch_size).min(messages.len()))).collect();
    let shared = Arc::new((parsed, received, batches));
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
                let (parsed, received, batches) = &*shared;
                let (mut rows, mut retries) = (0usize, 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(from, to)) = batches.get(i) else { break };
                    let cols = build(&parsed[from..to], &received[from..to]);
                    rows += cols.rows();
                    loop {
                        match write_batch(&mut conn, &cols).await {
                            Ok(()) => break,
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
        batches: shared.2.len(),
        rows_written,
        seconds,
        events_per_s: messages.len() as f64 / seconds,
        deadlock_retries,
        unix_socket: connect.get_socket().is_some(),
    })
}

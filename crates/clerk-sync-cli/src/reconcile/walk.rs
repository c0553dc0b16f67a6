//! Comparing one kind, page by page, in bounded memory:
//! 1. walk Clerk's listing of the kind (`backfill::pager`: one list, a list per stored parent, or
//!    one object per stored parent) and look each page's ids up here in one query: no row is
//!    `missing`, an older alive row is `stale` (a tombstone is final and never a gap); the ids
//!    seen are kept as 8-byte fingerprints, sorted once the walk ends;
//! 2. for the kinds Clerk deletes, walk the alive rows here in id order (keyset pages): a row
//!    whose fingerprint Clerk did not list is a candidate `gone`, confirmed with Clerk (`confirm`:
//!    an offset walk can skip an object when another is deleted meanwhile, and a webhook can
//!    create one after the walk passed), so a live object is never tombstoned; rows written after
//!    the run began are skipped;
//! 3. for memberships, alive rows whose user or organization is a tombstone here are `orphaned`.
//!
//! With `--fix`, each page's repairs are applied as soon as it is compared (`repair`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use clerk_sync_store::event;
use sqlx::PgPool;

use super::confirm::Confirm;
use super::kinds::{Gap, Kind, fingerprint, id_and_version};
use super::repair::{self, Repair};
use super::report::KindReport;
use crate::backfill::client::ClerkApi;
use crate::backfill::pager::{Pager, Position};

/// Rows per keyset page of the table walks.
const DB_PAGE: i64 = 1_000;

pub struct Ctx<'a> {
    pub pool: &'a PgPool,
    pub api: &'a ClerkApi,
    pub fix: bool,
    pub page_size: u32,
    /// When the run began: rows synced since are newer than the walk and never `gone`.
    pub started: DateTime<Utc>,
}

/// What `--limit` still allows this kind to repair.
struct Budget(u64);

impl Budget {
    fn take(&mut self, ctx: &Ctx<'_>) -> bool {
        if ctx.fix && self.0 > 0 {
            self.0 -= 1;
            true
        } else {
            false
        }
    }
}

pub async fn reconcile_kind(ctx: &Ctx<'_>, kind: Kind, limit: Option<u64>, show: usize) -> anyhow::Result<KindReport> {
    let mut report = KindReport::new(kind, show);
    let mut budget = Budget(limit.unwrap_or(u64::MAX));
    let seen = walk_clerk(ctx, kind, &mut report, &mut budget).await?;
    if kind.delete_event().is_none() {
        return Ok(report);
    }
    let gone = find_gone(ctx, kind, &seen, &mut report, &mut budget).await?;
    drop(seen);
    if kind == Kind::Memberships {
        find_orphans(ctx, &gone, &mut report, &mut budget).await?;
    }
    Ok(report)
}

/// Step 1; returns the sorted fingerprints of the ids Clerk listed.
async fn walk_clerk(
    ctx: &Ctx<'_>,
    kind: Kind,
    report: &mut KindReport,
    budget: &mut Budget,
) -> anyhow::Result<Vec<u64>> {
    let sql = kind.lookup_sql();
    let mut seen = Vec::new();
    let mut pager = Pager::new(ctx.pool, ctx.api, kind, ctx.page_size, Position::default());
    while let Some(page) = pager.next().await? {
        let fetched = page.objects.len();
        report.examined += fetched as u64;
        let mut parsed = Vec::with_capacity(fetched);
        for raw in page.objects {
            match event::from_object("", chrono::Utc::now().timestamp_millis(), kind.upsert_event(), raw) {
                Ok(e) => match id_and_version(&e.change) {
                    Some((id, v)) => parsed.push((id.to_owned(), v, e)),
                    None => report.skipped_invalid += 1,
                },
                Err(e) => {
                    report.skipped_invalid += 1;
                    tracing::warn!(kind = kind.name(), error = %e, "skipping an invalid object from Clerk");
                }
            }
        }
        seen.extend(parsed.iter().map(|(id, _, _)| fingerprint(id)));
        let ids: Vec<&str> = parsed.iter().map(|(id, _, _)| id.as_str()).collect();
        let rows: Vec<(String, Option<i64>, bool)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(&ids).fetch_all(ctx.pool).await?;
        let here: HashMap<String, (Option<i64>, bool)> = rows.into_iter().map(|(id, v, d)| (id, (v, d))).collect();
        let mut repairs = Vec::new();
        for (id, version, e) in parsed {
            let gap = match here.get(&id) {
                None => Gap::Missing,
                Some((_, true)) => continue,
                Some((Some(stored), false)) if *stored >= version => continue,
                Some(_) => Gap::Stale,
            };
            report.found(gap, &id);
            if budget.take(ctx) {
                repairs.push(repair::upsert(kind, &id, version, e, gap));
            }
        }
        repair::apply(ctx.pool, repairs, report).await?;
    }
    seen.sort_unstable();
    seen.dedup();
    seen.shrink_to_fit();
    Ok(seen)
}

/// Step 2; returns the ids found gone (bounded by the drift, for step 3 not to count them twice).
async fn find_gone(
    ctx: &Ctx<'_>,
    kind: Kind,
    seen: &[u64],
    report: &mut KindReport,
    budget: &mut Budget,
) -> anyhow::Result<HashSet<String>> {
    let sql = kind.alive_sql();
    let mut confirm = Confirm::new(ctx.api, kind);
    let mut gone = HashSet::new();
    let mut after = String::new();
    loop {
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&after)
            .bind(ctx.started)
            .bind(DB_PAGE)
            .fetch_all(ctx.pool)
            .await?;
        let Some(last) = rows.last() else { break };
        after.clone_from(&last.0);
        let full = rows.len() as i64 == DB_PAGE;
        let mut repairs: Vec<Repair> = Vec::new();
        for (id, org_id, raw) in rows {
            if seen.binary_search(&fingerprint(&id)).is_ok() || !confirm.gone(&id, org_id.as_deref()).await? {
                continue;
            }
            report.found(Gap::Gone, &id);
            if budget.take(ctx) {
                repairs.push(repair::deletion(kind, &id, raw, Gap::Gone)?);
            }
            if kind == Kind::Memberships {
                gone.insert(id);
            }
        }
        repair::apply(ctx.pool, repairs, report).await?;
        if !full {
            break;
        }
    }
    Ok(gone)
}

/// Step 3: memberships alive here whose user or organization is deleted here.
async fn find_orphans(
    ctx: &Ctx<'_>,
    gone: &HashSet<String>,
    report: &mut KindReport,
    budget: &mut Budget,
) -> anyhow::Result<()> {
    const SQL: &str = "SELECT m.id, m.raw::text FROM clerk.organization_memberships m
         WHERE m.deleted_at IS NULL AND m.id > $1
           AND (EXISTS (SELECT 1 FROM clerk.users u WHERE u.id = m.user_id AND u.deleted_at IS NOT NULL)
             OR EXISTS (SELECT 1 FROM clerk.organizations o WHERE o.id = m.organization_id AND o.deleted_at IS NOT NULL))
         ORDER BY m.id LIMIT $2";
    let mut after = String::new();
    loop {
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as(SQL).bind(&after).bind(DB_PAGE).fetch_all(ctx.pool).await?;
        let Some(last) = rows.last() else { break };
        after.clone_from(&last.0);
        let full = rows.len() as i64 == DB_PAGE;
        let mut repairs = Vec::new();
        for (id, raw) in rows.into_iter().filter(|(id, _)| !gone.contains(id)) {
            report.found(Gap::Orphaned, &id);
            if budget.take(ctx) {
                repairs.push(repair::deletion(Kind::Memberships, &id, raw, Gap::Orphaned)?);
            }
        }
        repair::apply(ctx.pool, repairs, report).await?;
        if !full {
            break;
        }
    }
    Ok(())
}

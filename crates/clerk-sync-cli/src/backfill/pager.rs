//! Walking a kind's [`Source`] page by page, for backfill and reconcile alike: one list, a list
//! under each parent, or one object per parent. The parents are the alive rows stored here, in id
//! order (so run backfill's users and organizations first, as the default order does), or, for a
//! parent this project does not store (Billing statements), Clerk's own list of them in its order;
//! each page says where the walk stands after it ([`Position`]), which backfill saves with the
//! page's rows.

use std::collections::VecDeque;

use serde_json::value::RawValue;
use sqlx::PgPool;

use super::client::ClerkApi;
use super::kinds::{Kind, Parent, Source};

/// Parent ids read from the database at once.
const PARENT_PAGE: i64 = 1_000;

/// Parents read from a Clerk list at once.
const LISTED_PAGE: u32 = 100;

/// Where a walk stands: the last parent done (`users:<id>` / `organizations:<id>`; for parents
/// read from Clerk, how many of its list are done: `statements:<n>`; `None`: none yet, and always
/// for a single list) and the offset within the list being read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    pub parent_done: Option<String>,
    pub offset: u32,
}

pub struct Page {
    pub objects: Vec<Box<RawValue>>,
    /// Clerk's `total_count`, for a single list that has one.
    pub total: Option<u64>,
    /// Where the walk stands once this page is written.
    pub after: Position,
}

/// A parent and its id, as a position names it.
fn cursor(parent: Parent, id: &str) -> String {
    format!("{}:{id}", parent.name())
}

/// Whether `id` looks like an id Clerk issues (letters, digits, `_` and `-`), safe in a path.
pub fn clerk_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The alive ids of `parents`' tables after a saved cursor, in order, read a page at a time.
struct Parents<'a> {
    pool: &'a PgPool,
    parents: &'static [Parent],
    /// Index into `parents` of the table being read.
    at: usize,
    after: String,
    buffer: VecDeque<String>,
    exhausted: bool,
}

impl<'a> Parents<'a> {
    fn new(pool: &'a PgPool, parents: &'static [Parent], done: Option<&str>) -> Self {
        let (mut at, mut after) = (0, String::new());
        if let Some((name, id)) = done.and_then(|d| d.split_once(':'))
            && let Some(i) = parents.iter().position(|p| p.name() == name)
        {
            (at, after) = (i, id.to_owned());
        }
        Self { pool, parents, at, after, buffer: VecDeque::new(), exhausted: false }
    }

    async fn next(&mut self) -> Result<Option<(Parent, String)>, sqlx::Error> {
        loop {
            if let Some(id) = self.buffer.pop_front() {
                return Ok(Some((self.parents[self.at], id)));
            }
            if self.exhausted {
                self.at += 1;
                self.after.clear();
                self.exhausted = false;
            }
            let Some(parent) = self.parents.get(self.at) else { return Ok(None) };
            let sql =
                format!("SELECT id FROM {} WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2", parent.table());
            let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&self.after)
                .bind(PARENT_PAGE)
                .fetch_all(self.pool)
                .await?;
            self.exhausted = (ids.len() as i64) < PARENT_PAGE;
            if let Some(last) = ids.last() {
                self.after.clone_from(last);
            }
            // An id Clerk would not issue is not put into a URL.
            self.buffer.extend(ids.into_iter().filter(|id| clerk_id(id)));
        }
    }
}

/// The objects of a list Clerk has and this project does not store ([`Source::PerListed`]), each
/// with its index in that list. Resuming by index is safe while the list only grows: a parent
/// added at its head shifts the rest, so some are read twice (recorded once), none skipped.
struct Listed<'a> {
    api: &'a ClerkApi,
    path: &'static str,
    /// The index of the next parent to fetch.
    next: u32,
    buffer: VecDeque<(u32, String)>,
    exhausted: bool,
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

impl Listed<'_> {
    async fn next(&mut self) -> anyhow::Result<Option<(u32, String)>> {
        loop {
            if let Some(parent) = self.buffer.pop_front() {
                return Ok(Some(parent));
            }
            if self.exhausted {
                return Ok(None);
            }
            // 404: an instance without Billing has no statements.
            let fetched = self.api.list_page(self.path, LISTED_PAGE, self.next, false, true).await?;
            let objects = fetched.map(|f| f.objects).unwrap_or_default();
            self.exhausted = objects.len() < LISTED_PAGE as usize;
            for raw in objects {
                let index = self.next;
                self.next += 1;
                let IdOnly { id } = serde_json::from_str(raw.get()).map_err(|e| {
                    anyhow::anyhow!("unexpected answer from {}: {e} (expected objects with an id)", self.path)
                })?;
                if clerk_id(&id) {
                    self.buffer.push_back((index, id));
                } else {
                    tracing::warn!(path = self.path, "skipping a parent whose id Clerk would not issue");
                }
            }
        }
    }
}

/// For a kind listed per parent, the parents' tables that have no alive row here (a walk of them
/// reads nothing: their backfill has not run yet).
pub async fn missing_parents(pool: &PgPool, kind: Kind) -> Result<Vec<&'static str>, sqlx::Error> {
    let parents: &[Parent] = match kind.source() {
        Source::List { .. } | Source::PerListed { .. } => &[],
        Source::PerParent { parent: Parent::Users, .. } => &[Parent::Users],
        Source::PerParent { parent: Parent::Organizations, .. } => &[Parent::Organizations],
        Source::OnePerParent { parents, .. } => parents,
    };
    let mut missing = Vec::new();
    for parent in parents {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {} WHERE deleted_at IS NULL)", parent.table());
        let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await?;
        if !any {
            missing.push(parent.name());
        }
    }
    Ok(missing)
}

pub struct Pager<'a> {
    api: &'a ClerkApi,
    kind: Kind,
    page_size: u32,
    position: Position,
    parents: Option<Parents<'a>>,
    /// The parent whose list is being read (lists per parent only).
    current: Option<(Parent, String)>,
    listed: Option<Listed<'a>>,
    /// The parent read from Clerk whose list is being read, with its index.
    current_listed: Option<(u32, String)>,
    done: bool,
}

impl<'a> Pager<'a> {
    pub fn new(pool: &'a PgPool, api: &'a ClerkApi, kind: Kind, page_size: u32, from: Position) -> Self {
        let listed = match kind.source() {
            Source::PerListed { name, parents, .. } => {
                // `<name>:<n>`: the first n are done; anything else starts over.
                let next = from
                    .parent_done
                    .as_deref()
                    .and_then(|d| d.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
                    .unwrap_or(0);
                Some(Listed { api, path: parents, next, buffer: VecDeque::new(), exhausted: false })
            }
            _ => None,
        };
        let parents = match kind.source() {
            Source::List { .. } | Source::PerListed { .. } => None,
            Source::PerParent { parent, .. } => {
                let parents: &'static [Parent] = match parent {
                    Parent::Users => &[Parent::Users],
                    Parent::Organizations => &[Parent::Organizations],
                };
                Some(Parents::new(pool, parents, from.parent_done.as_deref()))
            }
            Source::OnePerParent { parents, .. } => Some(Parents::new(pool, parents, from.parent_done.as_deref())),
        };
        Self { api, kind, page_size, position: from, parents, current: None, listed, current_listed: None, done: false }
    }

    /// The next page, or `None` once the walk is over.
    pub async fn next(&mut self) -> anyhow::Result<Option<Page>> {
        if self.done {
            return Ok(None);
        }
        match self.kind.source() {
            Source::List { path, ordered } => {
                let fetched = self
                    .api
                    .list_page(path, self.page_size, self.position.offset, ordered, self.kind.is_billing())
                    .await?;
                let Some(fetched) = fetched else {
                    // Only a Billing list may be absent: the instance does not have Billing.
                    tracing::warn!(kind = self.kind.name(), path, "Clerk answered 404: nothing to read");
                    self.done = true;
                    return Ok(None);
                };
                let n = fetched.objects.len();
                self.position.offset += u32::try_from(n).unwrap_or(u32::MAX);
                self.done = n < self.page_size as usize;
                Ok(Some(Page { objects: fetched.objects, total: fetched.total, after: self.position.clone() }))
            }
            Source::PerParent { path, .. } => {
                let Some((parent, id)) = self.current_parent().await? else { return Ok(None) };
                let (page, finished) = self.child_page(&path(&id), cursor(parent, &id)).await?;
                if finished {
                    self.current = None;
                }
                Ok(Some(page))
            }
            Source::OnePerParent { path, .. } => {
                let mut objects = Vec::new();
                let mut asked = 0;
                while asked < self.page_size {
                    let Some((parent, id)) = self.current_parent().await? else { break };
                    asked += 1;
                    if let Some(object) = self.api.object(&path(parent, &id)).await? {
                        objects.push(object);
                    }
                    self.position = Position { parent_done: Some(cursor(parent, &id)), offset: 0 };
                    self.current = None;
                }
                if asked == 0 {
                    return Ok(None);
                }
                Ok(Some(Page { objects, total: None, after: self.position.clone() }))
            }
            Source::PerListed { name, path, .. } => {
                if self.current_listed.is_none() {
                    let Some(listed) = self.listed.as_mut() else { return Ok(None) };
                    self.current_listed = listed.next().await?;
                }
                let Some((index, id)) = self.current_listed.clone() else {
                    self.done = true;
                    return Ok(None);
                };
                let (page, finished) = self.child_page(&path(&id), format!("{name}:{}", index + 1)).await?;
                if finished {
                    self.current_listed = None;
                }
                Ok(Some(page))
            }
        }
    }

    /// One page of a parent's own list at the saved offset (404: none). A short page ends the
    /// parent: the position names it `done` and the next page starts the next parent.
    async fn child_page(&mut self, path: &str, done: String) -> anyhow::Result<(Page, bool)> {
        let fetched = self.api.list_page(path, self.page_size, self.position.offset, false, true).await?;
        let objects = fetched.map(|f| f.objects).unwrap_or_default();
        let finished = objects.len() < self.page_size as usize;
        if finished {
            self.position = Position { parent_done: Some(done), offset: 0 };
        } else {
            self.position.offset += u32::try_from(objects.len()).unwrap_or(u32::MAX);
        }
        Ok((Page { objects, total: None, after: self.position.clone() }, finished))
    }

    /// The parent being read, or the next one (`None`: all done).
    async fn current_parent(&mut self) -> anyhow::Result<Option<(Parent, String)>> {
        if self.current.is_none() {
            let Some(parents) = self.parents.as_mut() else { return Ok(None) };
            match parents.next().await? {
                Some((parent, id)) => self.current = Some((parent, id)),
                None => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
        Ok(self.current.clone())
    }
}

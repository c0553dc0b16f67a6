//! Confirming with Clerk that an object the walk did not see is gone, before it is tombstoned:
//! users and organizations are asked for directly (404: gone); memberships and domains through
//! their organization's list (Clerk has no endpoint for one of them; an organization Clerk answers
//! 404 for has none left); roles and permissions through a second reading of their list, taken
//! once per run (each is one or a few pages).

use std::collections::{HashMap, HashSet};

use super::kinds::Kind;
use crate::backfill::client::ClerkApi;
use crate::backfill::kinds::Source;
use crate::backfill::pager::clerk_id;

/// Objects per page of the lists read to confirm.
const PAGE: u32 = 500;

pub struct Confirm<'a> {
    api: &'a ClerkApi,
    kind: Kind,
    /// The ids of each list read so far (`None`: the list does not exist, e.g. a deleted
    /// organization's), by path.
    lists: HashMap<String, Option<HashSet<String>>>,
}

impl<'a> Confirm<'a> {
    pub fn new(api: &'a ClerkApi, kind: Kind) -> Self {
        Self { api, kind, lists: HashMap::new() }
    }

    /// Whether Clerk says `id` (of the organization `org_id`, for memberships and domains) does
    /// not exist.
    pub async fn gone(&mut self, id: &str, org_id: Option<&str>) -> anyhow::Result<bool> {
        if !clerk_id(id) {
            tracing::warn!(kind = self.kind.name(), id, "an id Clerk would not issue; not asking about it");
            return Ok(false);
        }
        let path = match self.kind {
            Kind::Users => return Ok(self.api.object(&format!("/v1/users/{id}")).await?.is_none()),
            Kind::Organizations => return Ok(self.api.object(&format!("/v1/organizations/{id}")).await?.is_none()),
            Kind::Memberships | Kind::Domains => {
                // Without a usable organization there is nowhere to look it up: it cannot exist.
                let Some(org_id) = org_id.filter(|o| clerk_id(o)) else { return Ok(true) };
                let list = if self.kind == Kind::Memberships { "memberships" } else { "domains" };
                format!("/v1/organizations/{org_id}/{list}")
            }
            kind => match kind.source() {
                Source::List { path, .. } => path.to_owned(),
                // Only the kinds above are deleted by Clerk and listed per parent.
                _ => anyhow::bail!("cannot confirm that {} {id} is gone", kind.name()),
            },
        };
        if !self.lists.contains_key(&path) {
            let ids = self.list_ids(&path).await?;
            // Only an organization's list may be absent (the organization is gone); an absent
            // instance list must not read as "everything is gone".
            anyhow::ensure!(
                ids.is_some() || matches!(self.kind, Kind::Memberships | Kind::Domains),
                "Clerk answered 404 Not Found for {path}"
            );
            self.lists.insert(path.clone(), ids);
        }
        Ok(self.lists[&path].as_ref().is_none_or(|ids| !ids.contains(id)))
    }

    /// Every id of a list; `None` if Clerk answers 404 for it.
    async fn list_ids(&self, path: &str) -> anyhow::Result<Option<HashSet<String>>> {
        #[derive(serde::Deserialize)]
        struct Id {
            id: String,
        }
        let mut ids = HashSet::new();
        let mut offset = 0u32;
        loop {
            let Some(page) = self.api.list_page(path, PAGE, offset, false, true).await? else { return Ok(None) };
            let fetched = page.objects.len();
            for raw in page.objects {
                if let Ok(o) = serde_json::from_str::<Id>(raw.get()) {
                    ids.insert(o.id);
                }
            }
            if fetched < PAGE as usize {
                return Ok(Some(ids));
            }
            offset += PAGE;
        }
    }
}

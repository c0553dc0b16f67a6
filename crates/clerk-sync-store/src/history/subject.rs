//! Who an event is about, as the history indexes it: the object it writes, and the user and
//! organization it concerns. Read from the parsed change for the types this service stores, and
//! from the payload's conventional fields (`user_id`, `organization_id`, a membership's
//! `public_user_data.user_id`, a subscription's `payer.user_id`) for the others, so that
//! `events list --user` finds a user's sessions and invitations too.

use serde::Deserialize;

use crate::event::{Change, Event};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Subject {
    pub object_id: Option<String>,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Ids {
    id: Option<String>,
    user_id: Option<String>,
    organization_id: Option<String>,
    payer: Option<Payer>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Payer {
    user_id: Option<String>,
    organization_id: Option<String>,
}

impl Subject {
    pub fn of(event: &Event) -> Self {
        let nested_org = |o: &Option<crate::event::Organization>| o.as_ref().map(|o| o.id.clone());
        match &event.change {
            Change::UpsertUser(u) => Self::user(&u.id),
            Change::DeleteUser(d) => Self::user(&d.id),
            Change::UpsertOrganization(o) => Self::organization(&o.id),
            Change::DeleteOrganization(d) => Self::organization(&d.id),
            Change::UpsertMembership { membership: m, organization }
            | Change::DeleteMembership { membership: m, organization } => Self {
                object_id: Some(m.id.clone()),
                user_id: m.public_user_data.as_ref().and_then(|p| p.user_id.clone()),
                organization_id: nested_org(organization),
            },
            // Sessions and the types not stored: the payload's conventional fields.
            _ => {
                let ids: Ids = serde_json::from_str(event.data.get()).unwrap_or_default();
                let payer = ids.payer.unwrap_or_default();
                Self {
                    object_id: ids.id,
                    user_id: ids.user_id.or(payer.user_id),
                    organization_id: ids.organization_id.or(payer.organization_id),
                }
            }
        }
    }

    /// The user a raw message body concerns, read leniently (a dead letter may not parse as an
    /// event at all): `data.id` of a `user.*` event, else the conventional fields.
    pub fn user_of_body(body: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let data = v.get("data")?;
        let text = |p: &[&str]| p.iter().try_fold(data, |v, k| v.get(*k)).and_then(|v| v.as_str()).map(str::to_owned);
        if v.get("type").and_then(|t| t.as_str()).is_some_and(|t| t.starts_with("user.")) {
            return text(&["id"]);
        }
        text(&["user_id"]).or_else(|| text(&["public_user_data", "user_id"])).or_else(|| text(&["payer", "user_id"]))
    }

    fn user(id: &str) -> Self {
        Self { object_id: Some(id.to_owned()), user_id: Some(id.to_owned()), organization_id: None }
    }

    fn organization(id: &str) -> Self {
        Self { object_id: Some(id.to_owned()), user_id: None, organization_id: Some(id.to_owned()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse;

    fn subject(t: &str) -> Subject {
        let body = clerk_sync_core::samples::sample(t, 1_716_883_200_000).unwrap().to_string();
        Subject::of(&parse("msg_1", 0, body.as_bytes()).unwrap())
    }

    #[test]
    fn stored_and_unstored_types_name_their_user_and_organization() {
        let m = subject("organizationMembership.created");
        assert_eq!(m.user_id.as_deref(), Some("user_2sampleUser0000000000"));
        assert_eq!(m.organization_id.as_deref(), Some("org_2sampleOrg00000000000"));
        assert_eq!(subject("user.deleted").user_id.as_deref(), Some("user_2sampleUser0000000000"));
        let s = subject("session.created");
        assert_eq!(
            (s.object_id.as_deref(), s.user_id.as_deref()),
            (Some("sess_2sampleSession00000000"), Some("user_2sampleUser0000000000"))
        );
        assert_eq!(
            subject("organizationInvitation.created").organization_id.as_deref(),
            Some("org_2sampleOrg00000000000")
        );
        assert_eq!(subject("subscription.active").user_id.as_deref(), Some("user_2sampleUser0000000000"));
        for t in ["user.updated", "organizationMembership.deleted", "session.ended", "paymentAttempt.created"] {
            let body = clerk_sync_core::samples::sample(t, 1).unwrap().to_string();
            assert_eq!(Subject::user_of_body(body.as_bytes()).as_deref(), Some("user_2sampleUser0000000000"), "{t}");
        }
        assert_eq!(Subject::user_of_body(b"{not json"), None);
    }
}

//! Clerk's whole catalogue of webhook event types, and what this service does with each: which
//! resource it writes, or that it is recorded as `ignored`. Types outside the catalogue are
//! Clerk's future additions: ignored too, never dead-lettered.

/// What the worker does with events of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Written to the table of this resource.
    Stored(Resource),
    /// Recorded in `clerk.webhook_events` as `ignored`: not stored (yet), or never (`email.created`
    /// and `sms.created` carry one-time codes).
    Ignored,
}

/// A resource with a table of its own in schema `clerk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    User,
    Organization,
    Membership,
    Session,
    Invitation,
    Role,
    Permission,
    Domain,
    WaitlistEntry,
}

impl Resource {
    pub const ALL: [Self; 9] = [
        Self::User,
        Self::Organization,
        Self::Membership,
        Self::Session,
        Self::Invitation,
        Self::Role,
        Self::Permission,
        Self::Domain,
        Self::WaitlistEntry,
    ];

    /// The name `clerk.apply_batch` returns for rows of this resource.
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Organization => "organization",
            Self::Membership => "membership",
            Self::Session => "session",
            Self::Invitation => "invitation",
            Self::Role => "role",
            Self::Permission => "permission",
            Self::Domain => "domain",
            Self::WaitlistEntry => "waitlist_entry",
        }
    }

    pub fn from_sql(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_sql() == name)
    }

    /// The table in schema `clerk`.
    pub fn table(self) -> &'static str {
        match self {
            Self::User => "users",
            Self::Organization => "organizations",
            Self::Membership => "organization_memberships",
            Self::Session => "sessions",
            Self::Invitation => "organization_invitations",
            Self::Role => "roles",
            Self::Permission => "permissions",
            Self::Domain => "organization_domains",
            Self::WaitlistEntry => "waitlist_entries",
        }
    }
}

/// One event type of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    pub name: &'static str,
    pub handling: Handling,
}

const fn stored(name: &'static str, resource: Resource) -> EventType {
    EventType { name, handling: Handling::Stored(resource) }
}

const fn ignored(name: &'static str) -> EventType {
    EventType { name, handling: Handling::Ignored }
}

/// Every type Clerk sends, in Clerk's order.
pub const CATALOGUE: &[EventType] = &[
    stored("user.created", Resource::User),
    stored("user.updated", Resource::User),
    stored("user.deleted", Resource::User),
    stored("organization.created", Resource::Organization),
    stored("organization.updated", Resource::Organization),
    stored("organization.deleted", Resource::Organization),
    stored("organizationMembership.created", Resource::Membership),
    stored("organizationMembership.updated", Resource::Membership),
    stored("organizationMembership.deleted", Resource::Membership),
    stored("organizationInvitation.created", Resource::Invitation),
    stored("organizationInvitation.accepted", Resource::Invitation),
    stored("organizationInvitation.revoked", Resource::Invitation),
    stored("organizationDomain.created", Resource::Domain),
    stored("organizationDomain.updated", Resource::Domain),
    stored("organizationDomain.deleted", Resource::Domain),
    stored("session.created", Resource::Session),
    stored("session.ended", Resource::Session),
    stored("session.pending", Resource::Session),
    stored("session.removed", Resource::Session),
    stored("session.revoked", Resource::Session),
    ignored("email.created"),
    ignored("sms.created"),
    stored("role.created", Resource::Role),
    stored("role.updated", Resource::Role),
    stored("role.deleted", Resource::Role),
    stored("permission.created", Resource::Permission),
    stored("permission.updated", Resource::Permission),
    stored("permission.deleted", Resource::Permission),
    stored("waitlistEntry.created", Resource::WaitlistEntry),
    stored("waitlistEntry.updated", Resource::WaitlistEntry),
    ignored("paymentAttempt.created"),
    ignored("paymentAttempt.updated"),
    ignored("subscription.active"),
    ignored("subscription.created"),
    ignored("subscription.pastDue"),
    ignored("subscription.updated"),
    ignored("subscriptionItem.abandoned"),
    ignored("subscriptionItem.active"),
    ignored("subscriptionItem.canceled"),
    ignored("subscriptionItem.created"),
    ignored("subscriptionItem.ended"),
    ignored("subscriptionItem.freeTrialEnding"),
    ignored("subscriptionItem.incomplete"),
    ignored("subscriptionItem.pastDue"),
    ignored("subscriptionItem.upcoming"),
    ignored("subscriptionItem.updated"),
];

/// The catalogue's names, in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    CATALOGUE.iter().map(|t| t.name)
}

/// The catalogue entry of `name`, if Clerk sends it.
pub fn find(name: &str) -> Option<&'static EventType> {
    CATALOGUE.iter().find(|t| t.name == name)
}

/// A metrics label for `name`: itself if it is in the catalogue, else `unknown` (labels must not
/// grow with whatever a sender makes up).
pub fn label(name: &str) -> &'static str {
    find(name).map_or("unknown", |t| t.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_type_has_a_sample_and_each_name_appears_once() {
        let mut seen = std::collections::HashSet::new();
        for t in CATALOGUE {
            assert!(seen.insert(t.name), "{} twice", t.name);
            let body = clerk_sync_core::samples::sample(t.name, 1_716_883_200_000).unwrap().to_string();
            let head = clerk_sync_core::envelope::parse_head(body.as_bytes()).unwrap();
            assert_eq!(head.event_type, t.name);
        }
        assert_eq!(label("user.exploded"), "unknown");
        assert_eq!(find("user.deleted").map(|t| t.handling), Some(Handling::Stored(Resource::User)));
    }
}

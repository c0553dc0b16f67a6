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
    Subscription,
    SubscriptionItem,
    PaymentAttempt,
}

impl Resource {
    pub const ALL: [Self; 12] = [
        Self::User,
        Self::Organization,
        Self::Membership,
        Self::Session,
        Self::Invitation,
        Self::Role,
        Self::Permission,
        Self::Domain,
        Self::WaitlistEntry,
        Self::Subscription,
        Self::SubscriptionItem,
        Self::PaymentAttempt,
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
            Self::Subscription => "subscription",
            Self::SubscriptionItem => "subscription_item",
            Self::PaymentAttempt => "payment_attempt",
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
            Self::Subscription => "subscriptions",
            Self::SubscriptionItem => "subscription_items",
            Self::PaymentAttempt => "payment_attempts",
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
    stored("paymentAttempt.created", Resource::PaymentAttempt),
    stored("paymentAttempt.updated", Resource::PaymentAttempt),
    stored("subscription.active", Resource::Subscription),
    stored("subscription.created", Resource::Subscription),
    stored("subscription.pastDue", Resource::Subscription),
    stored("subscription.updated", Resource::Subscription),
    stored("subscriptionItem.abandoned", Resource::SubscriptionItem),
    stored("subscriptionItem.active", Resource::SubscriptionItem),
    stored("subscriptionItem.canceled", Resource::SubscriptionItem),
    stored("subscriptionItem.created", Resource::SubscriptionItem),
    stored("subscriptionItem.ended", Resource::SubscriptionItem),
    stored("subscriptionItem.freeTrialEnding", Resource::SubscriptionItem),
    stored("subscriptionItem.incomplete", Resource::SubscriptionItem),
    stored("subscriptionItem.pastDue", Resource::SubscriptionItem),
    stored("subscriptionItem.upcoming", Resource::SubscriptionItem),
    stored("subscriptionItem.updated", Resource::SubscriptionItem),
];

/// The catalogue's names, in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    CATALOGUE.iter().map(|t| t.name)
}

/// Older spellings Clerk has sent, and the catalogue's name for each.
const ALIASES: &[(&str, &str)] = &[("subscription.past_due", "subscription.pastDue")];

/// The catalogue entry of `name` (or of the type an older spelling names), if Clerk sends it.
pub fn find(name: &str) -> Option<&'static EventType> {
    let name = ALIASES.iter().find(|(old, _)| *old == name).map_or(name, |(_, new)| new);
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
        assert_eq!(label("subscription.past_due"), "subscription.pastDue", "the old spelling");
        assert_eq!(find("user.deleted").map(|t| t.handling), Some(Handling::Stored(Resource::User)));
    }
}

//! Every kind of object `backfill` and `reconcile` read from Clerk's Backend API: where Clerk lists
//! it (one list for the instance, a list per parent, or one object per parent), its table here,
//! and the webhook types whose `data` has the object's shape. The one catalogue both commands use,
//! with the selection of kinds from their flags and the `--help` texts that list the endpoints.

use clerk_sync_store::event::Change;

/// A kind, in the order runs take them: parents before what is listed under them (sessions walk
/// the users stored here, invitations and domains the organizations), users and organizations
/// before memberships (reconcile's orphan check reads their tombstones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Kind {
    Users,
    Organizations,
    Memberships,
    Roles,
    Permissions,
    Invitations,
    Domains,
    #[value(name = "waitlist-entries", alias = "waitlist_entries")]
    WaitlistEntries,
    #[value(name = "subscription-items", alias = "subscription_items")]
    SubscriptionItems,
    Sessions,
    Subscriptions,
    #[value(name = "payment-attempts", alias = "payment_attempts")]
    PaymentAttempts,
}

/// A parent a listing walks: the alive rows of its table here, in id order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    Users,
    Organizations,
}

impl Parent {
    pub fn name(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Organizations => "organizations",
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            Self::Users => "clerk.users",
            Self::Organizations => "clerk.organizations",
        }
    }
}

/// Where Clerk lists a kind.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// One paginated list for the whole instance (`limit`/`offset`); `ordered`: the endpoint
    /// takes `order_by=+created_at` (the others are read in Clerk's default order).
    List { path: &'static str, ordered: bool },
    /// A paginated list under each parent (`/v1/organizations/<id>/invitations`); a parent Clerk
    /// answers 404 for has none.
    PerParent { parent: Parent, path: fn(&str) -> String },
    /// At most one object per parent (a payer's subscription); 404: none.
    OnePerParent { parents: &'static [Parent], path: fn(Parent, &str) -> String },
    /// A paginated list under each object of another list Clerk has and this project does not
    /// store (payment attempts under each Billing statement): the parents are read from Clerk,
    /// `parents` is their list's path and `name` what a saved position calls them.
    PerListed { name: &'static str, parents: &'static str, path: fn(&str) -> String },
}

impl Kind {
    pub const ALL: [Self; 12] = [
        Self::Users,
        Self::Organizations,
        Self::Memberships,
        Self::Roles,
        Self::Permissions,
        Self::Invitations,
        Self::Domains,
        Self::WaitlistEntries,
        Self::SubscriptionItems,
        Self::Sessions,
        Self::Subscriptions,
        Self::PaymentAttempts,
    ];

    /// The name in reports, `clerk.backfill_progress` and synthetic svix-ids.
    pub fn name(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Organizations => "organizations",
            Self::Memberships => "memberships",
            Self::Roles => "roles",
            Self::Permissions => "permissions",
            Self::Invitations => "invitations",
            Self::Domains => "domains",
            Self::WaitlistEntries => "waitlist_entries",
            Self::SubscriptionItems => "subscription_items",
            Self::Sessions => "sessions",
            Self::Subscriptions => "subscriptions",
            Self::PaymentAttempts => "payment_attempts",
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            Self::Users => "clerk.users",
            Self::Organizations => "clerk.organizations",
            Self::Memberships => "clerk.organization_memberships",
            Self::Roles => "clerk.roles",
            Self::Permissions => "clerk.permissions",
            Self::Invitations => "clerk.organization_invitations",
            Self::Domains => "clerk.organization_domains",
            Self::WaitlistEntries => "clerk.waitlist_entries",
            Self::SubscriptionItems => "clerk.subscription_items",
            Self::Sessions => "clerk.sessions",
            Self::Subscriptions => "clerk.subscriptions",
            Self::PaymentAttempts => "clerk.payment_attempts",
        }
    }

    pub fn source(self) -> Source {
        match self {
            Self::Users => Source::List { path: "/v1/users", ordered: true },
            Self::Organizations => Source::List { path: "/v1/organizations", ordered: true },
            Self::Memberships => Source::List { path: "/v1/organization_memberships", ordered: true },
            Self::Roles => Source::List { path: "/v1/organization_roles", ordered: false },
            Self::Permissions => Source::List { path: "/v1/organization_permissions", ordered: false },
            Self::WaitlistEntries => Source::List { path: "/v1/waitlist_entries", ordered: false },
            Self::SubscriptionItems => Source::List { path: "/v1/billing/subscription_items", ordered: false },
            Self::Invitations => Source::PerParent {
                parent: Parent::Organizations,
                path: |id| format!("/v1/organizations/{id}/invitations"),
            },
            Self::Domains => Source::PerParent {
                parent: Parent::Organizations,
                path: |id| format!("/v1/organizations/{id}/domains"),
            },
            // Clerk lists sessions only by user (or client); every status unless `status=` is given.
            Self::Sessions => {
                Source::PerParent { parent: Parent::Users, path: |id| format!("/v1/sessions?user_id={id}") }
            }
            Self::Subscriptions => Source::OnePerParent {
                parents: &[Parent::Users, Parent::Organizations],
                path: |parent, id| format!("/v1/{}/{id}/billing/subscription", parent.name()),
            },
            // Clerk has no list of every payment attempt: they are listed per statement.
            Self::PaymentAttempts => Source::PerListed {
                name: "statements",
                parents: "/v1/billing/statements",
                path: |id| format!("/v1/billing/statements/{id}/payment_attempts"),
            },
        }
    }

    /// Clerk Billing: an instance without it may answer 404 for the whole list, which then means
    /// "nothing to copy" rather than an error.
    pub fn is_billing(self) -> bool {
        matches!(self, Self::SubscriptionItems | Self::Subscriptions | Self::PaymentAttempts)
    }

    /// A webhook type whose `data` has the shape of this kind's objects (every session and
    /// invitation type is an upsert, final statuses merged, so any one of them does).
    pub fn upsert_event(self) -> &'static str {
        match self {
            Self::Users => "user.updated",
            Self::Organizations => "organization.updated",
            Self::Memberships => "organizationMembership.updated",
            Self::Roles => "role.updated",
            Self::Permissions => "permission.updated",
            Self::Invitations => "organizationInvitation.created",
            Self::Domains => "organizationDomain.updated",
            Self::WaitlistEntries => "waitlistEntry.updated",
            Self::SubscriptionItems => "subscriptionItem.updated",
            Self::Sessions => "session.created",
            Self::Subscriptions => "subscription.updated",
            Self::PaymentAttempts => "paymentAttempt.updated",
        }
    }

    /// The deletion event, for the kinds Clerk deletes (the others' tables have no tombstone a
    /// reconcile could make: a session ends, an invitation is revoked, both as statuses).
    pub fn delete_event(self) -> Option<&'static str> {
        match self {
            Self::Users => Some("user.deleted"),
            Self::Organizations => Some("organization.deleted"),
            Self::Memberships => Some("organizationMembership.deleted"),
            Self::Roles => Some("role.deleted"),
            Self::Permissions => Some("permission.deleted"),
            Self::Domains => Some("organizationDomain.deleted"),
            _ => None,
        }
    }

    /// Reconcile's default selection: every kind but those that cost one request per user
    /// (sessions; subscriptions, also one per organization) or per Billing statement (payment
    /// attempts), which a large instance cannot afford every hour within Clerk's rate limits.
    /// They run when named.
    pub fn reconciled_by_default(self) -> bool {
        !matches!(self, Self::Sessions | Self::Subscriptions | Self::PaymentAttempts)
    }
}

/// The id and Clerk `updated_at` (ms) of an object parsed as its kind's upsert event.
pub fn id_and_version(change: &Change) -> Option<(&str, i64)> {
    match change {
        Change::UpsertUser(u) => Some((&u.id, u.updated_at?)),
        Change::UpsertOrganization(o) => Some((&o.id, o.updated_at?)),
        Change::UpsertMembership { membership, .. } => Some((&membership.id, membership.updated_at?)),
        Change::UpsertSession(s) => Some((&s.id, s.updated_at?)),
        Change::UpsertInvitation(i) => Some((&i.id, i.updated_at?)),
        Change::UpsertRole(r) => Some((&r.id, r.updated_at?)),
        Change::UpsertPermission(p) => Some((&p.id, p.updated_at?)),
        Change::UpsertDomain(d) => Some((&d.id, d.updated_at?)),
        Change::UpsertWaitlistEntry(w) => Some((&w.id, w.updated_at?)),
        Change::UpsertSubscription(s) => Some((&s.id, s.updated_at?)),
        Change::UpsertSubscriptionItem(i) => Some((&i.id, i.updated_at?)),
        Change::UpsertPaymentAttempt(p) => Some((&p.id, p.updated_at?)),
        _ => None,
    }
}

/// The kinds a run takes: those named (by `--kind` or the three older flags), else `default`,
/// always in [`Kind::ALL`]'s order.
pub fn select(named: &[Kind], default: impl Fn(Kind) -> bool) -> Vec<Kind> {
    Kind::ALL.into_iter().filter(|k| if named.is_empty() { default(*k) } else { named.contains(k) }).collect()
}

impl crate::cli::BackfillArgs {
    /// The kinds named by `--kind` and the three older flags.
    pub fn selected(&self) -> Vec<Kind> {
        named(&self.kinds, self.users, self.organizations, self.memberships)
    }
}

fn named(kinds: &[Kind], users: bool, organizations: bool, memberships: bool) -> Vec<Kind> {
    let mut named = kinds.to_vec();
    for (flag, kind) in [(users, Kind::Users), (organizations, Kind::Organizations), (memberships, Kind::Memberships)] {
        if flag && !named.contains(&kind) {
            named.push(kind);
        }
    }
    named
}

impl crate::cli::ReconcileArgs {
    /// The kinds named by `--kind` and the three older flags (`--all-kinds`: every kind).
    pub fn selected(&self) -> Vec<Kind> {
        if self.all_kinds {
            return Kind::ALL.to_vec();
        }
        named(&self.kinds, self.users, self.organizations, self.memberships)
    }
}

/// `clerk-sync backfill --help`.
pub const BACKFILL_HELP: &str = "Copy what Clerk's Backend API lists into the tables, through the worker's apply path (a newer \
                  webhook version wins, a deletion stays), resumable page by page (--restart starts over).\n\n\
                  Kinds, in this order (default: all): users, organizations, memberships, roles, permissions \
                  (GET /v1/organization_roles, /v1/organization_permissions), invitations and domains (per \
                  stored organization), waitlist-entries, subscription-items (GET /v1/billing/subscription_items), \
                  sessions (GET /v1/sessions?user_id=, one request per stored user), subscriptions (one request \
                  per stored user and organization), payment-attempts (GET /v1/billing/statements, then \
                  /v1/billing/statements/<id>/payment_attempts for each). Kinds listed per parent read the users \
                  and organizations stored here, so backfill those first (the default order does).";

/// `clerk-sync reconcile --help`.
pub const RECONCILE_HELP: &str = "Compare the tables with Clerk's Backend API, kind by kind: missing (in Clerk, not here), \
                  stale (Clerk's updated_at is newer), gone (alive here, Clerk no longer has it; only for kinds \
                  Clerk deletes: users, organizations, memberships, roles, permissions, domains) and, for \
                  memberships, orphaned (its user or organization is deleted here). Exit 1 on drift; --fix \
                  repairs through the worker's apply path (live webhooks still win when newer) and marks its \
                  tombstones deleted_by = 'reconcile'.\n\n\
                  Default kinds: users, organizations, memberships, roles, permissions, invitations and domains \
                  (per stored organization), waitlist-entries, subscription-items. sessions and subscriptions \
                  cost one request per stored user (and organization), payment-attempts one per Billing \
                  statement: they run only when named (--kind, or --all-kinds).";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_keeps_the_catalogue_order_and_reconcile_leaves_out_the_per_user_kinds_by_default() {
        let picked = select(&named(&[Kind::Sessions, Kind::Roles], true, false, false), |_| true);
        assert_eq!(picked, [Kind::Users, Kind::Roles, Kind::Sessions]);
        assert_eq!(select(&[], |_| true), Kind::ALL);
        let default = select(&[], Kind::reconciled_by_default);
        for costly in [Kind::Sessions, Kind::Subscriptions, Kind::PaymentAttempts] {
            assert!(!default.contains(&costly), "{costly:?}");
        }
        assert_eq!(default.len(), Kind::ALL.len() - 3);
    }
}

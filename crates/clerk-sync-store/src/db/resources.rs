//! The rows a plan sends to SQL: one struct per resource, serialized to the `jsonb` argument of
//! that resource's apply function (`clerk.apply_<resource>`, called by `clerk.apply_batch`). Field
//! names are the table's column names: SQL reads them with
//! `jsonb_populate_recordset(NULL::clerk.<table>, ...)`, so a column is added in one struct and
//! one function, with no positional list to keep in step.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

use super::billing_rows::{self, PaymentAttemptRow, SubscriptionItemRow, SubscriptionRow};
use super::more_rows::{self, DomainRow, PermissionRow, RoleRow, WaitlistEntryRow};
use super::ms;
use super::plan::{
    DeletionsById, FinalById, Newest, NewestById, Plan, Version, invitation_final_rank, merged_status,
    session_final_rank,
};
use crate::event::{Invitation, Membership, Organization, Session, User};

/// One resource's part of a batch: `{"upserts": [...], "deletions": [...]}`.
#[derive(Debug, Serialize)]
pub struct ResourceBatch<'a, R> {
    pub upserts: Vec<R>,
    pub deletions: Vec<DeletionRow<'a>>,
}

/// A deletion: the object's id, the earliest time it was deleted, and for a user the external id
/// the deletion named.
#[derive(Debug, Serialize)]
pub struct DeletionRow<'a> {
    pub id: &'a str,
    pub deleted_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<&'a str>,
}

/// A row of `clerk.organizations`.
#[derive(Debug, Serialize)]
pub struct OrganizationRow<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub slug: Option<&'a str>,
    pub image_url: Option<&'a str>,
    pub created_by: Option<&'a str>,
    pub members_count: Option<i32>,
    pub max_allowed_memberships: Option<i32>,
    pub public_metadata: Option<&'a RawValue>,
    pub private_metadata: Option<&'a RawValue>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    /// A copy nested in a membership event, not the organization's own event.
    pub nested: bool,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

/// A row of `clerk.users`.
#[derive(Debug, Serialize)]
pub struct UserRow<'a> {
    pub id: &'a str,
    pub external_id: Option<&'a str>,
    pub username: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub primary_email_address: Option<&'a str>,
    pub primary_phone_number: Option<&'a str>,
    pub image_url: Option<&'a str>,
    pub public_metadata: Option<&'a RawValue>,
    pub private_metadata: Option<&'a RawValue>,
    pub unsafe_metadata: Option<&'a RawValue>,
    pub banned: Option<bool>,
    pub locked: Option<bool>,
    pub two_factor_enabled: Option<bool>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

/// A row of `clerk.organization_memberships`.
#[derive(Debug, Serialize)]
pub struct MembershipRow<'a> {
    pub id: &'a str,
    pub organization_id: Option<String>,
    pub user_id: Option<&'a str>,
    pub role: Option<&'a str>,
    pub permissions: Option<&'a [String]>,
    pub public_metadata: Option<&'a RawValue>,
    pub private_metadata: Option<&'a RawValue>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

/// A row of `clerk.sessions`; `status` is the batch's merge of final statuses (`db/plan.rs`).
#[derive(Debug, Serialize)]
pub struct SessionRow<'a> {
    pub id: &'a str,
    pub user_id: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub last_active_at: Option<DateTime<Utc>>,
    pub last_active_organization_id: Option<&'a str>,
    pub expire_at: Option<DateTime<Utc>>,
    pub abandon_at: Option<DateTime<Utc>>,
    pub latest_activity: Option<&'a RawValue>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

/// A row of `clerk.organization_invitations`; `status` is the batch's merge of final statuses.
#[derive(Debug, Serialize)]
pub struct InvitationRow<'a> {
    pub id: &'a str,
    pub organization_id: Option<&'a str>,
    pub email_address: Option<&'a str>,
    pub role: Option<&'a str>,
    pub status: Option<&'a str>,
    pub inviter_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub public_metadata: Option<&'a RawValue>,
    pub private_metadata: Option<&'a RawValue>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

/// The plan as the arguments of `clerk.apply_batch`.
#[derive(Debug)]
pub struct Rows<'a> {
    pub organizations: ResourceBatch<'a, OrganizationRow<'a>>,
    pub users: ResourceBatch<'a, UserRow<'a>>,
    pub memberships: ResourceBatch<'a, MembershipRow<'a>>,
    pub sessions: ResourceBatch<'a, SessionRow<'a>>,
    pub invitations: ResourceBatch<'a, InvitationRow<'a>>,
    pub roles: ResourceBatch<'a, RoleRow<'a>>,
    pub permissions: ResourceBatch<'a, PermissionRow<'a>>,
    pub domains: ResourceBatch<'a, DomainRow<'a>>,
    pub waitlist_entries: ResourceBatch<'a, WaitlistEntryRow<'a>>,
    pub subscriptions: ResourceBatch<'a, SubscriptionRow<'a>>,
    pub subscription_items: ResourceBatch<'a, SubscriptionItemRow<'a>>,
    pub payment_attempts: ResourceBatch<'a, PaymentAttemptRow<'a>>,
}

impl<'a> Rows<'a> {
    pub fn of(plan: &Plan<'a>) -> Self {
        Self {
            organizations: batch(&plan.orgs, &plan.org_deletes, organization),
            users: batch(&plan.users, &plan.user_deletes, user),
            memberships: batch(&plan.members, &plan.member_deletes, membership),
            sessions: batch(&plan.sessions, &DeletionsById::new(), |n| session(n, &plan.session_finals)),
            invitations: batch(&plan.invitations, &DeletionsById::new(), |n| invitation(n, plan)),
            roles: batch(&plan.roles, &plan.role_deletes, more_rows::role),
            permissions: batch(&plan.permissions, &plan.permission_deletes, more_rows::permission),
            domains: batch(&plan.domains, &plan.domain_deletes, more_rows::domain),
            waitlist_entries: batch(&plan.waitlist, &DeletionsById::new(), more_rows::waitlist_entry),
            subscriptions: batch(&plan.subscriptions, &DeletionsById::new(), billing_rows::subscription),
            subscription_items: batch(&plan.subscription_items, &DeletionsById::new(), billing_rows::subscription_item),
            payment_attempts: batch(&plan.payment_attempts, &DeletionsById::new(), billing_rows::payment_attempt),
        }
    }
}

fn batch<'a, T, R>(
    newest: &NewestById<'a, T>,
    deletes: &DeletionsById<'a>,
    row: impl Fn(&Newest<'a, T>) -> R,
) -> ResourceBatch<'a, R> {
    ResourceBatch {
        upserts: newest.values().map(row).collect(),
        deletions: deletes
            .iter()
            .map(|(id, d)| DeletionRow { id, deleted_at: d.deleted_at, external_id: d.external_id })
            .collect(),
    }
}

fn version_at(v: &Version<'_>) -> Option<DateTime<Utc>> {
    v.at.and_then(ms)
}

fn raw(v: &Option<Box<RawValue>>) -> Option<&RawValue> {
    v.as_deref()
}

fn organization<'a>(n: &Newest<'a, Organization>) -> OrganizationRow<'a> {
    let o = n.object;
    OrganizationRow {
        id: &o.id,
        name: o.name.as_deref(),
        slug: o.slug.as_deref(),
        image_url: o.image_url.as_deref(),
        created_by: o.created_by.as_deref(),
        members_count: o.members_count,
        max_allowed_memberships: o.max_allowed_memberships,
        public_metadata: raw(&o.public_metadata),
        private_metadata: raw(&o.private_metadata),
        created_at: o.created_at.and_then(ms),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        nested: !n.version.own,
        version_at: version_at(&n.version),
        version_svix_id: n.version.svix_id,
    }
}

fn user<'a>(n: &Newest<'a, User>) -> UserRow<'a> {
    let u = n.object;
    UserRow {
        id: &u.id,
        external_id: u.external_id.as_deref(),
        username: u.username.as_deref(),
        first_name: u.first_name.as_deref(),
        last_name: u.last_name.as_deref(),
        primary_email_address: u.primary_email(),
        primary_phone_number: u.primary_phone(),
        image_url: u.image_url.as_deref(),
        public_metadata: raw(&u.public_metadata),
        private_metadata: raw(&u.private_metadata),
        unsafe_metadata: raw(&u.unsafe_metadata),
        banned: u.banned,
        locked: u.locked,
        two_factor_enabled: u.two_factor_enabled,
        last_sign_in_at: u.last_sign_in_at.and_then(ms),
        created_at: u.created_at.and_then(ms),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: version_at(&n.version),
        version_svix_id: n.version.svix_id,
    }
}

fn membership<'a>(n: &Newest<'a, Membership>) -> MembershipRow<'a> {
    let m = n.object;
    MembershipRow {
        id: &m.id,
        organization_id: nested_org_id(m),
        user_id: m.public_user_data.as_ref().and_then(|p| p.user_id.as_deref()),
        role: m.role.as_deref(),
        permissions: m.permissions.as_deref(),
        public_metadata: raw(&m.public_metadata),
        private_metadata: raw(&m.private_metadata),
        created_at: m.created_at.and_then(ms),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: version_at(&n.version),
        version_svix_id: n.version.svix_id,
    }
}

/// The organization id of a membership, read from its nested organization even when that
/// organization was too incomplete to upsert.
fn nested_org_id(m: &Membership) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    m.organization.as_ref().and_then(|raw| serde_json::from_str::<Id>(raw.get()).ok()).and_then(|o| o.id)
}

fn session<'a>(n: &Newest<'a, Session>, finals: &FinalById<'a>) -> SessionRow<'a> {
    let s = n.object;
    SessionRow {
        id: &s.id,
        user_id: s.user_id.as_deref(),
        client_id: s.client_id.as_deref(),
        status: merged_status(s.status.as_deref(), finals, &s.id, session_final_rank),
        last_active_at: s.last_active_at.and_then(ms),
        last_active_organization_id: s.last_active_organization_id.as_deref(),
        expire_at: s.expire_at.and_then(ms),
        abandon_at: s.abandon_at.and_then(ms),
        latest_activity: raw(&s.latest_activity),
        created_at: s.created_at.and_then(ms),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: version_at(&n.version),
        version_svix_id: n.version.svix_id,
    }
}

fn invitation<'a>(n: &Newest<'a, Invitation>, plan: &Plan<'a>) -> InvitationRow<'a> {
    let v = n.object;
    InvitationRow {
        id: &v.id,
        organization_id: v.organization_id.as_deref(),
        email_address: v.email_address.as_deref(),
        role: v.role.as_deref(),
        status: merged_status(v.status.as_deref(), &plan.invitation_finals, &v.id, invitation_final_rank),
        inviter_id: v.inviter_id.as_deref(),
        user_id: v.user_id.as_deref().or_else(|| plan.invitation_users.get(v.id.as_str()).copied()),
        public_metadata: raw(&v.public_metadata),
        private_metadata: raw(&v.private_metadata),
        expires_at: v.expires_at.and_then(ms),
        created_at: v.created_at.and_then(ms),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: version_at(&n.version),
        version_svix_id: n.version.svix_id,
    }
}

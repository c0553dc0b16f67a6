//! The rows of the resources without a user in them and without final statuses (roles,
//! permissions, organization domains, waitlist entries): one struct per table, named by column,
//! built from the plan's newest version of each object. See `resources.rs` for the contract.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

use super::ms;
use super::plan::{Newest, Version};
use crate::event::{Domain, Permission, Role, WaitlistEntry};

fn version_at(v: &Version<'_>) -> Option<DateTime<Utc>> {
    v.at.and_then(ms)
}

/// A row of `clerk.roles`; `permissions` are the permission keys.
#[derive(Debug, Serialize)]
pub struct RoleRow<'a> {
    pub id: &'a str,
    pub key: Option<&'a str>,
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub is_creator_eligible: Option<bool>,
    pub permissions: Option<Vec<&'a str>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

/// A row of `clerk.permissions`.
#[derive(Debug, Serialize)]
pub struct PermissionRow<'a> {
    pub id: &'a str,
    pub key: Option<&'a str>,
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: Option<&'a str>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

/// A row of `clerk.organization_domains`.
#[derive(Debug, Serialize)]
pub struct DomainRow<'a> {
    pub id: &'a str,
    pub organization_id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub enrollment_mode: Option<&'a str>,
    pub verification_status: Option<&'a str>,
    pub verification_strategy: Option<&'a str>,
    pub affiliation_email_address: Option<&'a str>,
    pub total_pending_invitations: Option<i32>,
    pub total_pending_suggestions: Option<i32>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

/// A row of `clerk.waitlist_entries`.
#[derive(Debug, Serialize)]
pub struct WaitlistEntryRow<'a> {
    pub id: &'a str,
    pub email_address: Option<&'a str>,
    pub status: Option<&'a str>,
    pub is_locked: Option<bool>,
    pub invitation_id: Option<&'a str>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

pub fn role<'a>(n: &Newest<'a, Role>) -> RoleRow<'a> {
    let r = n.object;
    RoleRow {
        id: &r.id,
        key: r.key.as_deref(),
        name: r.name.as_deref(),
        description: r.description.as_deref(),
        is_creator_eligible: r.is_creator_eligible,
        permissions: r.permission_keys(),
        created_at: r.created_at.and_then(ms),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: version_at(&n.version),
        version_svix_id: n.version.svix_id,
    }
}

pub fn permission<'a>(n: &Newest<'a, Permission>) -> PermissionRow<'a> {
    let p = n.object;
    PermissionRow {
        id: &p.id,
        key: p.key.as_deref(),
        name: p.name.as_deref(),
        description: p.description.as_deref(),
        kind: p.kind.as_deref(),
        created_at: p.created_at.and_then(ms),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: version_at(&n.version),
        version_svix_id: n.version.svix_id,
    }
}

pub fn domain<'a>(n: &Newest<'a, Domain>) -> DomainRow<'a> {
    let d = n.object;
    let verification = d.verification();
    DomainRow {
        id: &d.id,
        organization_id: d.organization_id.as_deref(),
        name: d.name.as_deref(),
        enrollment_mode: d.enrollment_mode.as_deref(),
        verification_status: verification.and_then(|v| v.status.as_deref()),
        verification_strategy: verification.and_then(|v| v.strategy.as_deref()),
        affiliation_email_address: d.affiliation_email_address.as_deref(),
        total_pending_invitations: d.total_pending_invitations,
        total_pending_suggestions: d.total_pending_suggestions,
        created_at: d.created_at.and_then(ms),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: version_at(&n.version),
        version_svix_id: n.version.svix_id,
    }
}

pub fn waitlist_entry<'a>(n: &Newest<'a, WaitlistEntry>) -> WaitlistEntryRow<'a> {
    let w = n.object;
    WaitlistEntryRow {
        id: &w.id,
        email_address: w.email_address.as_deref(),
        status: w.status.as_deref(),
        is_locked: w.is_locked,
        invitation_id: w.invitation.as_ref().and_then(|i| i.id.as_deref()),
        created_at: w.created_at.and_then(ms),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: version_at(&n.version),
        version_svix_id: n.version.svix_id,
    }
}

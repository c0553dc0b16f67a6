//! Clerk's objects as they appear in webhook `data` (and in the Backend API): lenient serde structs.
//!
//! Unknown fields are accepted and optional fields are optional, because Clerk adds fields often.
//! Metadata and nested blobs stay raw JSON text: they are stored as `jsonb` without being parsed
//! into a tree and serialised again. Timestamps are milliseconds since the epoch, as `i64`.

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Deserialize)]
pub struct EmailAddress {
    pub id: Option<String>,
    pub email_address: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PhoneNumber {
    pub id: Option<String>,
    pub phone_number: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub primary_email_address_id: Option<String>,
    #[serde(default)]
    pub email_addresses: Option<Vec<EmailAddress>>,
    #[serde(default)]
    pub primary_phone_number_id: Option<String>,
    #[serde(default)]
    pub phone_numbers: Option<Vec<PhoneNumber>>,
    #[serde(default)]
    pub public_metadata: Option<Box<RawValue>>,
    #[serde(default)]
    pub private_metadata: Option<Box<RawValue>>,
    #[serde(default)]
    pub unsafe_metadata: Option<Box<RawValue>>,
    #[serde(default)]
    pub banned: Option<bool>,
    #[serde(default)]
    pub locked: Option<bool>,
    #[serde(default)]
    pub two_factor_enabled: Option<bool>,
    #[serde(default)]
    pub last_sign_in_at: Option<i64>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

impl User {
    /// The primary address, found through `primary_email_address_id` (Clerk does not promise
    /// that the first entry is the primary one).
    pub fn primary_email(&self) -> Option<&str> {
        let primary = self.primary_email_address_id.as_deref()?;
        self.email_addresses
            .iter()
            .flatten()
            .find(|e| e.id.as_deref() == Some(primary))
            .and_then(|e| e.email_address.as_deref())
    }

    pub fn primary_phone(&self) -> Option<&str> {
        let primary = self.primary_phone_number_id.as_deref()?;
        self.phone_numbers
            .iter()
            .flatten()
            .find(|p| p.id.as_deref() == Some(primary))
            .and_then(|p| p.phone_number.as_deref())
    }
}

#[derive(Debug, Deserialize)]
pub struct Organization {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub members_count: Option<i32>,
    #[serde(default)]
    pub max_allowed_memberships: Option<i32>,
    #[serde(default)]
    pub public_metadata: Option<Box<RawValue>>,
    #[serde(default)]
    pub private_metadata: Option<Box<RawValue>>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct PublicUserData {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `organizationMembership.*` carries this whole object, `.deleted` included.
#[derive(Debug, Deserialize)]
pub struct Membership {
    pub id: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    #[serde(default)]
    pub public_metadata: Option<Box<RawValue>>,
    #[serde(default)]
    pub private_metadata: Option<Box<RawValue>>,
    /// The full organization; upserted under the same ordering rule.
    pub organization: Option<Box<RawValue>>,
    #[serde(default)]
    pub public_user_data: Option<PublicUserData>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

/// `user.deleted`, `organization.deleted`, ...: `{"id", "object", "deleted": true}` and sometimes
/// `external_id` or `slug`. No `updated_at`: the envelope timestamp dates the deletion.
#[derive(Debug, Deserialize)]
pub struct DeletedObject {
    pub id: String,
    #[serde(default)]
    pub external_id: Option<String>,
}

/// `session.*`: the session; `user` (the whole user, added in late 2025) is kept in `raw` only.
#[derive(Debug, Deserialize)]
pub struct Session {
    pub id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub last_active_at: Option<i64>,
    #[serde(default)]
    pub last_active_organization_id: Option<String>,
    #[serde(default)]
    pub expire_at: Option<i64>,
    #[serde(default)]
    pub abandon_at: Option<i64>,
    #[serde(default)]
    pub latest_activity: Option<Box<RawValue>>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

/// `organizationInvitation.*`: the invitation; `user_id` is set once accepted.
#[derive(Debug, Deserialize)]
pub struct Invitation {
    pub id: String,
    #[serde(default)]
    pub organization_id: Option<String>,
    #[serde(default)]
    pub email_address: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub inviter_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub public_metadata: Option<Box<RawValue>>,
    #[serde(default)]
    pub private_metadata: Option<Box<RawValue>>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

/// `role.*`: a role and its permissions (objects in webhooks; a bare key is accepted too).
#[derive(Debug, Deserialize)]
pub struct Role {
    pub id: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub is_creator_eligible: Option<bool>,
    #[serde(default)]
    pub permissions: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

impl Role {
    /// The role's permission keys, in Clerk's order.
    pub fn permission_keys(&self) -> Option<Vec<&str>> {
        let keys = self.permissions.as_ref()?;
        Some(keys.iter().filter_map(|p| p.as_str().or_else(|| p.get("key").and_then(|k| k.as_str()))).collect())
    }
}

/// `permission.*`.
#[derive(Debug, Deserialize)]
pub struct Permission {
    pub id: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct Verification {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub strategy: Option<String>,
}

/// `organizationDomain.created/updated` (`.deleted` is a [`DeletedObject`]).
#[derive(Debug, Deserialize)]
pub struct Domain {
    pub id: String,
    #[serde(default)]
    pub organization_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub enrollment_mode: Option<String>,
    /// Deprecated by Clerk but still sent; `affiliation_verification` otherwise.
    #[serde(default)]
    pub verification: Option<Verification>,
    #[serde(default)]
    pub affiliation_verification: Option<Verification>,
    #[serde(default)]
    pub affiliation_email_address: Option<String>,
    #[serde(default)]
    pub total_pending_invitations: Option<i32>,
    #[serde(default)]
    pub total_pending_suggestions: Option<i32>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

impl Domain {
    pub fn verification(&self) -> Option<&Verification> {
        self.verification.as_ref().or(self.affiliation_verification.as_ref())
    }
}

#[derive(Debug, Deserialize)]
pub struct IdOnly {
    #[serde(default)]
    pub id: Option<String>,
}

/// `waitlistEntry.*`.
#[derive(Debug, Deserialize)]
pub struct WaitlistEntry {
    pub id: String,
    #[serde(default)]
    pub email_address: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub is_locked: Option<bool>,
    #[serde(default)]
    pub invitation: Option<IdOnly>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

//! The three kinds of object reconcile compares, and where each lives: Clerk's list endpoint, the
//! table here, the webhook types whose `data` has the object's shape.

use clerk_sync_store::event::Change;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Users,
    Organizations,
    Memberships,
}

impl Kind {
    pub const ALL: [Self; 3] = [Self::Users, Self::Organizations, Self::Memberships];

    pub fn name(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Organizations => "organizations",
            Self::Memberships => "memberships",
        }
    }

    pub fn list_path(self) -> &'static str {
        match self {
            Self::Users => "/v1/users",
            Self::Organizations => "/v1/organizations",
            Self::Memberships => "/v1/organization_memberships",
        }
    }

    /// The rows of a page of ids: id, `updated_at` in ms, whether a tombstone.
    pub fn lookup_sql(self) -> &'static str {
        macro_rules! lookup {
            ($table:literal) => {
                concat!(
                    "SELECT id, (extract(epoch FROM updated_at) * 1000)::bigint, deleted_at IS NOT NULL FROM ",
                    $table,
                    " WHERE id = ANY($1)"
                )
            };
        }
        match self {
            Self::Users => lookup!("clerk.users"),
            Self::Organizations => lookup!("clerk.organizations"),
            Self::Memberships => lookup!("clerk.organization_memberships"),
        }
    }

    /// A keyset page of alive rows synced before $2: id, organization id and stored object (only a
    /// membership's deletion needs them, see `repair::deletion`).
    pub fn alive_sql(self) -> &'static str {
        macro_rules! alive {
            ($columns:literal, $table:literal) => {
                concat!(
                    "SELECT id, ",
                    $columns,
                    " FROM ",
                    $table,
                    " WHERE deleted_at IS NULL AND id > $1 AND synced_at < $2 ORDER BY id LIMIT $3"
                )
            };
        }
        match self {
            Self::Users => alive!("NULL::text, NULL::text", "clerk.users"),
            Self::Organizations => alive!("NULL::text, NULL::text", "clerk.organizations"),
            Self::Memberships => alive!("organization_id, raw::text", "clerk.organization_memberships"),
        }
    }

    /// Of the ids `$1`, those alive now (read before a repair, to mark what it tombstones).
    pub fn alive_ids_sql(self) -> &'static str {
        match self {
            Self::Users => "SELECT id FROM clerk.users WHERE id = ANY($1) AND deleted_at IS NULL",
            Self::Organizations => "SELECT id FROM clerk.organizations WHERE id = ANY($1) AND deleted_at IS NULL",
            Self::Memberships => {
                "SELECT id FROM clerk.organization_memberships WHERE id = ANY($1) AND deleted_at IS NULL"
            }
        }
    }

    /// Marks the tombstones this run made (`$1`: the ids that were alive before it).
    pub fn mark_deleted_sql(self) -> &'static str {
        match self {
            Self::Users => {
                "UPDATE clerk.users SET deleted_by = 'reconcile' WHERE id = ANY($1) AND deleted_at IS NOT NULL"
            }
            Self::Organizations => {
                "UPDATE clerk.organizations SET deleted_by = 'reconcile' WHERE id = ANY($1) AND deleted_at IS NOT NULL"
            }
            Self::Memberships => {
                "UPDATE clerk.organization_memberships SET deleted_by = 'reconcile' WHERE id = ANY($1) AND deleted_at IS NOT NULL"
            }
        }
    }

    pub fn upsert_event(self) -> &'static str {
        match self {
            Self::Users => "user.updated",
            Self::Organizations => "organization.updated",
            Self::Memberships => "organizationMembership.updated",
        }
    }

    pub fn delete_event(self) -> &'static str {
        match self {
            Self::Users => "user.deleted",
            Self::Organizations => "organization.deleted",
            Self::Memberships => "organizationMembership.deleted",
        }
    }

    /// The gaps this kind can have (only memberships can be orphaned).
    pub fn gaps(self) -> &'static [Gap] {
        match self {
            Self::Memberships => &[Gap::Missing, Gap::Stale, Gap::Gone, Gap::Orphaned],
            _ => &[Gap::Missing, Gap::Stale, Gap::Gone],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// In Clerk, no row here.
    Missing,
    /// Clerk's `updated_at` is newer than the row's.
    Stale,
    /// Alive here, absent from Clerk: its deletion was lost.
    Gone,
    /// A membership alive here while its user or organization is deleted here.
    Orphaned,
}

impl Gap {
    pub const ALL: [Self; 4] = [Self::Missing, Self::Stale, Self::Gone, Self::Orphaned];

    pub fn name(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Stale => "stale",
            Self::Gone => "gone",
            Self::Orphaned => "orphaned",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The id and Clerk `updated_at` (ms) of an object parsed as its upsert event.
pub fn id_and_version(change: &Change) -> Option<(&str, i64)> {
    match change {
        Change::UpsertUser(u) => Some((&u.id, u.updated_at?)),
        Change::UpsertOrganization(o) => Some((&o.id, o.updated_at?)),
        Change::UpsertMembership { membership, .. } => Some((&membership.id, membership.updated_at?)),
        _ => None,
    }
}

/// A compact, stable fingerprint of an id for the set of ids seen in Clerk (8 bytes an object:
/// a million users take 8 MB). A collision can only hide a `gone` object, never invent one.
pub fn fingerprint(id: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, fast, and good enough for distinct text ids.
    id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

//! What reconcile needs of each kind beyond the shared catalogue (`backfill::kinds`): the SQL that
//! reads its table, and the gaps it can have.

pub use crate::backfill::kinds::{Kind, id_and_version};

/// Each statement is built from a table name of the catalogue, never from input.
impl Kind {
    /// The rows of a page of ids: id, `updated_at` in ms, whether a tombstone (for a kind Clerk
    /// never deletes, a row whose personal data was removed with its user: not compared either).
    pub fn lookup_sql(self) -> String {
        format!(
            "SELECT id, (extract(epoch FROM updated_at) * 1000)::bigint, deleted_at IS NOT NULL FROM {} WHERE id = ANY($1)",
            self.table()
        )
    }

    /// A keyset page of alive rows synced before $2: id, organization id and stored object (only
    /// a membership's deletion needs the object, see `repair::deletion`; memberships and domains
    /// are confirmed gone through their organization's list).
    pub fn alive_sql(self) -> String {
        let columns = match self {
            Self::Memberships => "organization_id, raw::text",
            Self::Domains => "organization_id, NULL::text",
            _ => "NULL::text, NULL::text",
        };
        format!(
            "SELECT id, {columns} FROM {} WHERE deleted_at IS NULL AND id > $1 AND synced_at < $2 ORDER BY id LIMIT $3",
            self.table()
        )
    }

    /// Of the ids `$1`, those alive now (read before a repair, to mark what it tombstones).
    pub fn alive_ids_sql(self) -> String {
        format!("SELECT id FROM {} WHERE id = ANY($1) AND deleted_at IS NULL", self.table())
    }

    /// Marks the tombstones this run made (`$1`: the ids that were alive before it); the tables
    /// Clerk deletes from have `deleted_by` (migrations 6 and 18).
    pub fn mark_deleted_sql(self) -> String {
        format!("UPDATE {} SET deleted_by = 'reconcile' WHERE id = ANY($1) AND deleted_at IS NOT NULL", self.table())
    }

    /// The gaps this kind can have: `gone` only where Clerk deletes (the others' rows are never
    /// tombstoned by a reconcile), `orphaned` only for memberships.
    pub fn gaps(self) -> &'static [Gap] {
        match self {
            Self::Memberships => &[Gap::Missing, Gap::Stale, Gap::Gone, Gap::Orphaned],
            k if k.delete_event().is_some() => &[Gap::Missing, Gap::Stale, Gap::Gone],
            _ => &[Gap::Missing, Gap::Stale],
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

/// A compact, stable fingerprint of an id for the set of ids seen in Clerk (8 bytes an object:
/// a million users take 8 MB). A collision can only hide a `gone` object, never invent one.
pub fn fingerprint(id: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, fast, and good enough for distinct text ids.
    id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

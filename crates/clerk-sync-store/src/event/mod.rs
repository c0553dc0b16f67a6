//! The webhook envelope and parsing a message into the [`Event`] the store applies: who sent it
//! (svix-id), when, and the change it asks for. Parsing failures here are permanent: no retry can
//! fix a body.

pub mod billing;
mod objects;

pub use objects::{
    DeletedObject, Domain, Invitation, Membership, Organization, Permission, PublicUserData, Role, Session, User,
    WaitlistEntry,
};

use serde::Deserialize;
use serde_json::value::RawValue;

/// The envelope; `data` stays raw until the type says what it is.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(borrow)]
    pub data: &'a RawValue,
    /// Milliseconds in real deliveries, seconds in Clerk's OpenAPI examples.
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// An envelope `timestamp` below this is in seconds (1e11 ms is 1973; 1e11 s is year 5138).
const SECONDS_THRESHOLD: i64 = 100_000_000_000;

/// Normalises an envelope timestamp to milliseconds.
pub fn envelope_ms(ts: i64) -> i64 {
    if ts.abs() < SECONDS_THRESHOLD { ts.saturating_mul(1000) } else { ts }
}

/// The earliest and latest instants stored: years 1 to 9999. Postgres holds a little more,
/// chrono a lot more; a value outside this range is treated as absent rather than sent to be
/// refused.
const MIN_MS: i64 = -62_135_596_800_000;
const MAX_MS: i64 = 253_402_300_799_999;

/// Milliseconds since the epoch to a timestamp, exactly; `None` outside years 1 to 9999.
pub fn datetime_ms(value: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    if (MIN_MS..=MAX_MS).contains(&value) { chrono::DateTime::from_timestamp_millis(value) } else { None }
}

/// What an event asks the database to do.
#[derive(Debug)]
pub enum Change {
    UpsertUser(User),
    DeleteUser(DeletedObject),
    UpsertOrganization(Organization),
    DeleteOrganization(DeletedObject),
    UpsertMembership {
        membership: Membership,
        organization: Option<Organization>,
    },
    DeleteMembership {
        membership: Membership,
        organization: Option<Organization>,
    },
    /// `session.*`: every type is an upsert; the final statuses are merged (`db/plan.rs`).
    UpsertSession(Session),
    /// `organizationInvitation.*`: every type is an upsert; accepted and revoked are merged as final.
    UpsertInvitation(Invitation),
    UpsertRole(Role),
    DeleteRole(DeletedObject),
    UpsertPermission(Permission),
    DeletePermission(DeletedObject),
    UpsertDomain(Domain),
    DeleteDomain(DeletedObject),
    UpsertWaitlistEntry(WaitlistEntry),
    UpsertSubscription(billing::Subscription),
    UpsertSubscriptionItem(billing::SubscriptionItem),
    UpsertPaymentAttempt(billing::PaymentAttempt),
    /// Recorded in `webhook_events` as `ignored`: a type this service does not store.
    Ignore,
}

/// One event on its way to the database: the message's identity, its type, when it happened, and
/// the change it asks for. The one type a message is carried in from parsing to its outcome.
#[derive(Debug)]
pub struct Event {
    /// The svix-id: the deduplication key (and the last tiebreak of the order of versions).
    pub svix_id: String,
    /// When the gateway received it (ms); dates a deletion whose envelope has no timestamp.
    pub received_at_ms: i64,
    pub event_type: String,
    /// The envelope `timestamp`, in ms.
    pub occurred_at_ms: Option<i64>,
    pub change: Change,
    /// The `data` object exactly as sent, stored as `raw`.
    pub data: Box<RawValue>,
    /// The whole message body as received, for the event history; `None` for events made from
    /// an object (backfill, reconcile) or when the history is off.
    pub body: Option<Vec<u8>>,
    /// The svix-id of the event this one replays (`clerk-sync events replay`): deduplicated under
    /// its own svix-id, ordered as the original (the same version, not a newer one).
    pub replay_of: Option<String>,
}

impl Event {
    /// The svix-id that ranks this event among versions of its object.
    pub fn version_id(&self) -> &str {
        self.replay_of.as_deref().unwrap_or(&self.svix_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not a Clerk event envelope: {0}")]
    Envelope(serde_json::Error),
    #[error("{event_type}: `data` does not match the expected object: {source}")]
    Data { event_type: String, source: serde_json::Error },
    #[error("{0}: `data.updated_at` is missing or out of range, so the event cannot be ordered")]
    MissingUpdatedAt(String),
}

impl ParseError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Envelope(_) => "invalid_envelope",
            Self::Data { .. } => "invalid_payload",
            Self::MissingUpdatedAt(_) => "missing_updated_at",
        }
    }
}

fn parse_data<'a, T: Deserialize<'a>>(event_type: &str, raw: &'a RawValue) -> Result<T, ParseError> {
    serde_json::from_str(raw.get()).map_err(|source| ParseError::Data { event_type: event_type.to_owned(), source })
}

fn require_updated_at(event_type: &str, updated_at: Option<i64>) -> Result<(), ParseError> {
    match updated_at.map(datetime_ms) {
        Some(Some(_)) => Ok(()),
        _ => Err(ParseError::MissingUpdatedAt(event_type.to_owned())),
    }
}

fn membership_parts(event_type: &str, raw: &RawValue) -> Result<(Membership, Option<Organization>), ParseError> {
    let membership: Membership = parse_data(event_type, raw)?;
    require_updated_at(event_type, membership.updated_at)?;
    let organization = match &membership.organization {
        Some(org) if org.get() != "null" => {
            let org: Organization = parse_data(event_type, org)?;
            // A nested organization without updated_at cannot be ordered: skip it, keep the membership.
            org.updated_at.and_then(datetime_ms).is_some().then_some(org)
        }
        _ => None,
    };
    Ok((membership, organization))
}

/// Parses the body of the message `svix_id`, received at `received_at_ms`.
pub fn parse(svix_id: &str, received_at_ms: i64, body: &[u8]) -> Result<Event, ParseError> {
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(ParseError::Envelope)?;
    let mut event = from_object(svix_id, received_at_ms, &envelope.event_type, envelope.data.to_owned())?;
    event.occurred_at_ms = envelope.timestamp.map(envelope_ms);
    event.body = Some(body.to_vec());
    Ok(event)
}

/// The event a `data` object of type `event_type` makes, without an envelope. Also used for
/// objects read from Clerk's Backend API (backfill, reconcile), which have the same shapes as
/// webhook payloads; they name their own svix-ids.
pub fn from_object(
    svix_id: &str,
    received_at_ms: i64,
    event_type: &str,
    data: Box<RawValue>,
) -> Result<Event, ParseError> {
    let t = event_type;
    let change = match t {
        "user.created" | "user.updated" => {
            let user: User = parse_data(t, &data)?;
            require_updated_at(t, user.updated_at)?;
            Change::UpsertUser(user)
        }
        "user.deleted" => Change::DeleteUser(parse_data(t, &data)?),
        "organization.created" | "organization.updated" => {
            let org: Organization = parse_data(t, &data)?;
            require_updated_at(t, org.updated_at)?;
            Change::UpsertOrganization(org)
        }
        "organization.deleted" => Change::DeleteOrganization(parse_data(t, &data)?),
        "organizationMembership.created" | "organizationMembership.updated" => {
            let (membership, organization) = membership_parts(t, &data)?;
            Change::UpsertMembership { membership, organization }
        }
        "organizationMembership.deleted" => {
            let (membership, organization) = membership_parts(t, &data)?;
            Change::DeleteMembership { membership, organization }
        }
        "session.created" | "session.pending" | "session.ended" | "session.removed" | "session.revoked" => {
            let session: Session = parse_data(t, &data)?;
            require_updated_at(t, session.updated_at)?;
            Change::UpsertSession(session)
        }
        "organizationInvitation.created" | "organizationInvitation.accepted" | "organizationInvitation.revoked" => {
            let invitation: Invitation = parse_data(t, &data)?;
            require_updated_at(t, invitation.updated_at)?;
            Change::UpsertInvitation(invitation)
        }
        "role.created" | "role.updated" => {
            let role: Role = parse_data(t, &data)?;
            require_updated_at(t, role.updated_at)?;
            Change::UpsertRole(role)
        }
        "role.deleted" => Change::DeleteRole(parse_data(t, &data)?),
        "permission.created" | "permission.updated" => {
            let permission: Permission = parse_data(t, &data)?;
            require_updated_at(t, permission.updated_at)?;
            Change::UpsertPermission(permission)
        }
        "permission.deleted" => Change::DeletePermission(parse_data(t, &data)?),
        "organizationDomain.created" | "organizationDomain.updated" => {
            let domain: Domain = parse_data(t, &data)?;
            require_updated_at(t, domain.updated_at)?;
            Change::UpsertDomain(domain)
        }
        "organizationDomain.deleted" => Change::DeleteDomain(parse_data(t, &data)?),
        "waitlistEntry.created" | "waitlistEntry.updated" => {
            let entry: WaitlistEntry = parse_data(t, &data)?;
            require_updated_at(t, entry.updated_at)?;
            Change::UpsertWaitlistEntry(entry)
        }
        // `subscription.past_due` is the old spelling of `subscription.pastDue`.
        "subscription.created"
        | "subscription.updated"
        | "subscription.active"
        | "subscription.pastDue"
        | "subscription.past_due" => {
            let subscription: billing::Subscription = parse_data(t, &data)?;
            require_updated_at(t, subscription.updated_at)?;
            Change::UpsertSubscription(subscription)
        }
        t if t.starts_with("subscriptionItem.") && crate::catalogue::find(t).is_some() => {
            let item: billing::SubscriptionItem = parse_data(t, &data)?;
            require_updated_at(t, item.updated_at)?;
            Change::UpsertSubscriptionItem(item)
        }
        "paymentAttempt.created" | "paymentAttempt.updated" => {
            let attempt: billing::PaymentAttempt = parse_data(t, &data)?;
            require_updated_at(t, attempt.updated_at)?;
            Change::UpsertPaymentAttempt(attempt)
        }
        _ => Change::Ignore,
    };
    Ok(Event {
        svix_id: svix_id.to_owned(),
        received_at_ms,
        occurred_at_ms: None,
        data,
        event_type: event_type.to_owned(),
        change,
        body: None,
        replay_of: None,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_tests;

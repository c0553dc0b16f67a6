//! The objects of the mixed-catalogue workload's new resources (issue 19), one per bench id:
//! invitations, domains, roles, permissions, waitlist entries and the three Billing objects.
//! Each body is the project's sample of its type (`clerk_sync_core::samples::sample`) with the
//! object's own id and its relations (organization, accepting user, payer, subscription) put in,
//! so that every object of the stream is a row of its own, as real traffic makes them.

use serde_json::{Value, json};

use crate::corpus::{PLACEHOLDER_MS, org_id, user_id};

/// The new resources the mixed stream carries besides sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Invitation,
    Domain,
    Subscription,
    SubscriptionItem,
    PaymentAttempt,
    WaitlistEntry,
    Role,
    Permission,
}

/// One object of a kind: its number, and the user (an invitation's accepting user, a payer), the
/// organization and the subscription (an item's) it relates to.
#[derive(Debug, Clone, Copy)]
pub struct Object {
    pub n: usize,
    pub user: usize,
    pub org: usize,
    pub subscription: usize,
}

impl Kind {
    /// The event that creates an object of this kind.
    pub fn first(self) -> &'static str {
        match self {
            Kind::Invitation => "organizationInvitation.created",
            Kind::Domain => "organizationDomain.created",
            Kind::Subscription => "subscription.created",
            Kind::SubscriptionItem => "subscriptionItem.created",
            Kind::PaymentAttempt => "paymentAttempt.created",
            Kind::WaitlistEntry => "waitlistEntry.created",
            Kind::Role => "role.created",
            Kind::Permission => "permission.created",
        }
    }

    /// A later version's event for `roll` in 0..100, and whether it is the object's last (Clerk
    /// sends nothing more about an accepted invitation, a deleted domain, an ended item, ...).
    pub fn next(self, roll: u32) -> (&'static str, bool) {
        match self {
            Kind::Invitation if roll < 60 => ("organizationInvitation.accepted", true),
            Kind::Invitation => ("organizationInvitation.revoked", true),
            Kind::Domain if roll < 8 => ("organizationDomain.deleted", true),
            Kind::Domain => ("organizationDomain.updated", false),
            Kind::Subscription => match roll {
                0..30 => ("subscription.active", false),
                30..40 => ("subscription.pastDue", false),
                _ => ("subscription.updated", false),
            },
            Kind::SubscriptionItem => match roll {
                0..6 => ("subscriptionItem.canceled", true),
                6..12 => ("subscriptionItem.ended", true),
                12..20 => ("subscriptionItem.pastDue", false),
                20..30 => ("subscriptionItem.upcoming", false),
                30..35 => ("subscriptionItem.freeTrialEnding", false),
                35..60 => ("subscriptionItem.active", false),
                _ => ("subscriptionItem.updated", false),
            },
            Kind::PaymentAttempt => ("paymentAttempt.updated", roll < 50),
            Kind::WaitlistEntry => ("waitlistEntry.updated", roll < 50),
            Kind::Role if roll < 3 => ("role.deleted", true),
            Kind::Role => ("role.updated", false),
            Kind::Permission if roll < 3 => ("permission.deleted", true),
            Kind::Permission => ("permission.updated", false),
        }
    }
}

/// The envelope of `event_type` about `o`, at [`PLACEHOLDER_MS`] (stamped per message).
pub fn body(kind: Kind, event_type: &str, o: &Object) -> Value {
    let mut v = clerk_sync_core::samples::sample(event_type, PLACEHOLDER_MS)
        .unwrap_or_else(|| clerk_sync_core::samples::envelope(event_type, json!({}), PLACEHOLDER_MS));
    let d = &mut v["data"];
    let (n, user, org) = (o.n, user_id(o.user), org_id(o.org));
    let deleted = d.get("deleted").is_some_and(|x| x == true);
    match kind {
        Kind::Invitation => {
            d["id"] = json!(format!("orginv_2bench{n:017}"));
            d["organization_id"] = json!(org);
            d["email_address"] = json!(format!("invitee.{n}@example.com"));
            if event_type.ends_with("accepted") {
                d["user_id"] = json!(user);
            }
        }
        Kind::Domain => {
            d["id"] = json!(format!("orgdmn_2bench{n:017}"));
            if !deleted {
                d["organization_id"] = json!(org);
                d["name"] = json!(format!("team{n}.example"));
                d["affiliation_email_address"] = json!(format!("admin@team{n}.example"));
            }
        }
        Kind::Role => {
            d["id"] = json!(format!("role_2bench{n:019}"));
            if !deleted {
                d["key"] = json!(format!("org:role_{n}"));
                d["name"] = json!(format!("Role {n}"));
            }
        }
        Kind::Permission => {
            d["id"] = json!(format!("perm_2bench{n:019}"));
            if !deleted {
                d["key"] = json!(format!("org:feature_{n}:manage"));
                d["name"] = json!(format!("Manage feature {n}"));
            }
        }
        Kind::WaitlistEntry => {
            d["id"] = json!(format!("wle_2bench{n:020}"));
            d["email_address"] = json!(format!("early.{n}@example.com"));
        }
        Kind::Subscription => {
            let id = format!("csub_2bench{n:019}");
            payer(d, &user, o.user);
            if let Some(item) = d.get_mut("items").and_then(|i| i.get_mut(0)) {
                item["id"] = json!(format!("csitem_2bench{n:017}s"));
                item["subscription_id"] = json!(id);
                payer(item, &user, o.user);
            }
            d["id"] = json!(id);
            d["payer_id"] = json!(payer_id(o.user));
        }
        Kind::SubscriptionItem => {
            d["id"] = json!(format!("csitem_2bench{n:017}"));
            d["subscription_id"] = json!(format!("csub_2bench{:019}", o.subscription));
            payer(d, &user, o.user);
        }
        Kind::PaymentAttempt => {
            d["id"] = json!(format!("pa_2bench{n:021}"));
            d["payment_id"] = json!(format!("cpa_2bench{n:020}"));
            payer(d, &user, o.user);
        }
    }
    v
}

fn payer_id(u: usize) -> String {
    format!("cpayer_2bench{u:017}")
}

fn payer(d: &mut Value, user: &str, u: usize) {
    if let Some(p) = d.get_mut("payer").filter(|p| p.is_object()) {
        p["id"] = json!(payer_id(u));
        p["user_id"] = json!(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_names_its_own_object_and_parses_as_its_type() {
        let o = Object { n: 7, user: 3, org: 2, subscription: 5 };
        for kind in [
            Kind::Invitation,
            Kind::Domain,
            Kind::Subscription,
            Kind::SubscriptionItem,
            Kind::PaymentAttempt,
            Kind::WaitlistEntry,
            Kind::Role,
            Kind::Permission,
        ] {
            let types = std::iter::once(kind.first()).chain((0..100).map(|r| kind.next(r).0));
            for t in types {
                let v = body(kind, t, &o);
                let id = v["data"]["id"].as_str().unwrap_or_default().to_owned();
                assert!(id.contains("bench") && id.contains('7'), "{t}: {id}");
                let bytes = v.to_string().into_bytes();
                let event = clerk_sync_store::event::parse("msg_obj", 0, &bytes).expect(t);
                assert_eq!(event.event_type, t);
            }
        }
    }
}

//! The mixed-catalogue workload (issue 19): the whole catalogue in realistic proportions, sessions
//! about half of it (the most frequent event in real traffic: every sign-in creates one, every
//! sign-out or expiry ends it), then users, memberships, invitations, Billing and the rest. Each
//! session belongs to a user of the stream and is created, touched (`session.created` again with
//! a newer version, as Clerk sends on refresh) and ended; 2% of messages are duplicates.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::corpus::{Template, event, user_id};
use crate::workload::{Message, Shape, Workload, mean_bytes};

const STEP_MS: i64 = 10;

/// The share (per 1000) of each kind of event after duplicates.
const SESSIONS: u32 = 500;
const USERS: u32 = 200;
const ORGS_AND_MEMBERS: u32 = 80;
/// The rest, one template per type and object id drawn from a small pool, in these weights.
const OTHERS: &[(&str, u32)] = &[
    ("organizationInvitation.created", 30),
    ("organizationInvitation.accepted", 10),
    ("organizationInvitation.revoked", 5),
    ("subscriptionItem.active", 20),
    ("subscription.updated", 20),
    ("paymentAttempt.created", 15),
    ("paymentAttempt.updated", 15),
    ("waitlistEntry.created", 15),
    ("organizationDomain.updated", 5),
    ("role.updated", 5),
    ("permission.updated", 5),
    ("email.created", 50),
    ("sms.created", 25),
];

fn session(id: usize, user: usize, status: &str, t_ms: i64) -> Vec<u8> {
    let data = clerk_sync_core::samples::session(&format!("sess_2bench{id:020}"), &user_id(user), status, t_ms);
    let kind = if status == "active" { "session.created" } else { "session.ended" };
    serde_json::to_vec(&clerk_sync_core::samples::envelope(kind, data, t_ms)).unwrap_or_default()
}

/// `total` messages of the mixed catalogue.
pub fn generate(total: usize, seed: u64, run_id: &str) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let start_ms = chrono::Utc::now().timestamp_millis() - STEP_MS * total as i64 - 60_000;
    let mut messages: Vec<Message> = Vec::with_capacity(total);
    let mut shape = Shape::default();
    let (mut users, mut orgs, mut next_session) = (0usize, 1usize, 0usize);
    let mut open: Vec<(usize, usize)> = Vec::new();
    let others_total: u32 = OTHERS.iter().map(|(_, w)| w).sum();
    let mut serial = 0usize;
    while messages.len() < total {
        let t_ms = start_ms + STEP_MS * messages.len() as i64;
        if rng.random_range(0..1000) < 20 && messages.len() > 100 {
            let from = messages.len().saturating_sub(5_000);
            let original = messages[rng.random_range(from..messages.len())].clone();
            shape.duplicates += 1;
            messages.push(original);
            continue;
        }
        let roll = rng.random_range(0..1000);
        let (event_type, body): (&'static str, Vec<u8>) = if roll < SESSIONS && users > 0 {
            if open.is_empty() || (open.len() < 2_000 && rng.random_bool(0.45)) {
                next_session += 1;
                let user = rng.random_range(0..users);
                open.push((next_session, user));
                ("session.created", session(next_session, user, "active", t_ms))
            } else {
                let i = rng.random_range(0..open.len());
                let (id, user) = open[i];
                if rng.random_bool(0.5) {
                    open.swap_remove(i);
                    ("session.ended", session(id, user, "ended", t_ms))
                } else {
                    ("session.created", session(id, user, "active", t_ms))
                }
            }
        } else if roll < SESSIONS + USERS || users == 0 {
            let (t, u) = if users == 0 || rng.random_bool(0.25) {
                users += 1;
                ("user.created", users - 1)
            } else {
                ("user.updated", rng.random_range(0..users))
            };
            (t, Template::new(t, &event(t, u, 0), t_ms).render(t_ms))
        } else if roll < SESSIONS + USERS + ORGS_AND_MEMBERS {
            let t = match rng.random_range(0..10) {
                0 => {
                    orgs += 1;
                    "organization.created"
                }
                1..=2 => "organization.updated",
                _ => "organizationMembership.created",
            };
            let (u, o) = (rng.random_range(0..users), rng.random_range(0..orgs));
            (t, Template::new(t, &event(t, u, o), t_ms).render(t_ms))
        } else {
            let mut pick = rng.random_range(0..others_total);
            let t = OTHERS
                .iter()
                .find(|(_, w)| {
                    let hit = pick < *w;
                    pick = pick.saturating_sub(*w);
                    hit
                })
                .map_or(OTHERS[0].0, |(t, _)| *t);
            (t, Template::new(t, &event(t, 0, 0), t_ms).render(t_ms))
        };
        serial += 1;
        *shape.by_type.entry(event_type).or_default() += 1;
        messages.push(Message::signed_at(format!("msg_c{run_id}{serial:09}"), event_type, body, t_ms));
    }
    shape.messages = messages.len();
    shape.distinct = serial;
    shape.users = users;
    shape.organizations = orgs;
    shape.mean_bytes = mean_bytes(&messages);
    Workload { messages, shape }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_about_half_and_every_message_parses_as_the_type_it_claims() {
        let w = generate(20_000, 3, "test");
        let sessions: usize = w.shape.by_type.iter().filter(|(t, _)| t.starts_with("session.")).map(|(_, n)| n).sum();
        let share = sessions as f64 / w.shape.distinct as f64;
        assert!((0.4..0.6).contains(&share), "sessions are {share:.2} of the stream");
        assert!(w.shape.by_type.len() >= 15, "{:?}", w.shape.by_type);
        for m in w.messages.iter().step_by(97) {
            let event = clerk_sync_store::event::parse(&m.svix_id, 0, &m.body).expect("parses");
            assert_eq!(event.event_type, m.event_type);
        }
    }
}

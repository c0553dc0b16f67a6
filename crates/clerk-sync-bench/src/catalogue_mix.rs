//! The mixed-catalogue workload (issue 19): the whole catalogue in realistic proportions, sessions
//! about half of it (the most frequent event in real traffic: every sign-in creates one, every
//! sign-out or expiry ends it), then users, memberships, and the other new resources
//! ([`crate::catalogue_objects`]: invitations, domains, Billing, waitlist entries, roles and
//! permissions) in the smaller shares a busy instance sends them.
//!
//! Like the users workload, each object is created and then has several versions, and the stream
//! is not in order: each session belongs to a user of the stream and is created, touched
//! (`session.created` again with a newer version, as Clerk sends on refresh) and ended; an
//! invitation is created and then accepted or revoked; a subscription item moves through its
//! statuses until it ends. About 5% of the new resources' messages are held back and delivered up
//! to a few thousand messages late (after the object's newer versions: stale when they arrive), and
//! 2% of messages are duplicates (the same svix-id again, as Svix retries).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::catalogue_objects::{Kind, Object, body};
use crate::corpus::{Template, event, user_id};
use crate::workload::{Message, Shape, Workload, mean_bytes};

const STEP_MS: i64 = 10;

/// The share (per 1000 distinct events) of each part of the stream.
const SESSIONS: u32 = 500;
const USERS: u32 = 200;
const ORGS_AND_MEMBERS: u32 = 80;
/// The new resources: share per 1000, the chance an event creates an object (else it is a later
/// version of an open one), and how many objects at most (an instance has tens of roles, not
/// thousands). At 200,000 messages: about 1,200 invitations, 300 domains, 750 subscriptions, 800
/// items, 1,600 payment attempts, 1,200 waitlist entries, 30 roles and 60 permissions.
const KINDS: &[(Kind, u32, f64, usize)] = &[
    (Kind::Invitation, 12, 0.5, usize::MAX),
    (Kind::Domain, 6, 0.25, usize::MAX),
    (Kind::Subscription, 12, 0.3, usize::MAX),
    (Kind::SubscriptionItem, 14, 0.3, usize::MAX),
    (Kind::PaymentAttempt, 16, 0.5, usize::MAX),
    (Kind::WaitlistEntry, 10, 0.6, usize::MAX),
    (Kind::Role, 4, 0.1, 30),
    (Kind::Permission, 4, 0.1, 60),
];
/// The rest: types stored nowhere (one-time codes), one template each.
const IGNORED: &[(&str, u32)] = &[("email.created", 95), ("sms.created", 47)];
/// The share (per 1000) of new-resource messages held back, and by how many messages at most.
const HELD_BACK: u32 = 50;
const HOLD_MAX: usize = 3_000;
const DUPLICATES: u32 = 20;
const DUPLICATE_WINDOW: usize = 5_000;

/// The open objects of one kind and how many were created.
#[derive(Default)]
struct Pool {
    created: usize,
    open: Vec<Object>,
}

struct Stream {
    rng: StdRng,
    messages: Vec<Message>,
    held: Vec<(usize, Message)>,
    shape: Shape,
    serial: usize,
    users: usize,
    orgs: usize,
    pools: Vec<Pool>,
}

fn session(id: usize, user: usize, status: &str, t_ms: i64) -> Vec<u8> {
    let data = clerk_sync_core::samples::session(&format!("sess_2bench{id:020}"), &user_id(user), status, t_ms);
    let kind = if status == "active" { "session.created" } else { "session.ended" };
    serde_json::to_vec(&clerk_sync_core::samples::envelope(kind, data, t_ms)).unwrap_or_default()
}

/// The index of the item whose weight `roll` falls in, counting from the first; `None` past the sum.
fn pick<T>(items: &[T], weight: impl Fn(&T) -> u32, mut roll: u32) -> Option<usize> {
    for (i, item) in items.iter().enumerate() {
        if roll < weight(item) {
            return Some(i);
        }
        roll -= weight(item);
    }
    None
}

impl Stream {
    /// A new message; `late` ones may be held back.
    fn emit(&mut self, run_id: &str, event_type: &'static str, body: Vec<u8>, t_ms: i64, late: bool) {
        self.serial += 1;
        *self.shape.by_type.entry(event_type).or_default() += 1;
        let m = Message::signed_at(format!("msg_c{run_id}{:09}", self.serial), event_type, body, t_ms);
        if late && self.rng.random_range(0..1000) < HELD_BACK {
            let at = self.messages.len() + self.rng.random_range(1..HOLD_MAX);
            self.held.push((at, m));
        } else {
            self.messages.push(m);
        }
    }

    /// Delivers the held-back messages that are due.
    fn release(&mut self) {
        let now = self.messages.len();
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 <= now {
                let (_, m) = self.held.swap_remove(i);
                self.messages.push(m);
            } else {
                i += 1;
            }
        }
    }

    fn sessions(
        &mut self,
        open: &mut Vec<(usize, usize)>,
        next: &mut usize,
    ) -> (&'static str, usize, usize, &'static str) {
        if open.is_empty() || (open.len() < 2_000 && self.rng.random_bool(0.45)) {
            *next += 1;
            let user = self.rng.random_range(0..self.users);
            open.push((*next, user));
            return ("session.created", *next, user, "active");
        }
        let i = self.rng.random_range(0..open.len());
        let (id, user) = open[i];
        if self.rng.random_bool(0.5) {
            open.swap_remove(i);
            ("session.ended", id, user, "ended")
        } else {
            ("session.created", id, user, "active")
        }
    }

    /// One event of `kind`: a new object or a later version of an open one.
    fn object(&mut self, k: usize, t_ms: i64) -> (&'static str, Vec<u8>) {
        let (kind, _, new_share, cap) = KINDS[k];
        let (users, orgs) = (self.users, self.orgs);
        let subscriptions = self.pools[KINDS.iter().position(|x| x.0 == Kind::Subscription).unwrap_or(0)].created;
        let rng = &mut self.rng;
        let pool = &mut self.pools[k];
        let (event_type, object) = if pool.open.is_empty() || (pool.created < cap && rng.random_bool(new_share)) {
            pool.created += 1;
            let object = Object {
                n: pool.created,
                user: rng.random_range(0..users),
                org: rng.random_range(0..orgs),
                subscription: rng.random_range(0..subscriptions.max(1)) + 1,
            };
            pool.open.push(object);
            (kind.first(), object)
        } else {
            let i = rng.random_range(0..pool.open.len());
            let object = pool.open[i];
            let (event_type, last) = kind.next(rng.random_range(0..100));
            if last {
                pool.open.swap_remove(i);
            }
            (event_type, object)
        };
        let template = Template::new(event_type, &body(kind, event_type, &object), t_ms);
        (event_type, template.render(t_ms))
    }
}

/// `total` messages of the mixed catalogue (a few more: held-back messages still due at the end
/// are delivered last).
pub fn generate(total: usize, seed: u64, run_id: &str) -> Workload {
    let start_ms = chrono::Utc::now().timestamp_millis() - STEP_MS * total as i64 - 60_000;
    let mut s = Stream {
        rng: StdRng::seed_from_u64(seed),
        messages: Vec::with_capacity(total + 100),
        held: Vec::new(),
        shape: Shape::default(),
        serial: 0,
        users: 0,
        orgs: 1,
        pools: KINDS.iter().map(|_| Pool::default()).collect(),
    };
    let (mut open_sessions, mut next_session) = (Vec::new(), 0usize);
    let kinds_total: u32 = KINDS.iter().map(|k| k.1).sum();
    while s.messages.len() < total {
        s.release();
        let t_ms = start_ms + STEP_MS * s.messages.len() as i64;
        if s.rng.random_range(0..1000) < DUPLICATES && s.messages.len() > 100 {
            let from = s.messages.len().saturating_sub(DUPLICATE_WINDOW);
            let original = s.messages[s.rng.random_range(from..s.messages.len())].clone();
            s.shape.duplicates += 1;
            s.messages.push(original);
            continue;
        }
        let roll = s.rng.random_range(0..1000);
        if roll < SESSIONS && s.users > 0 {
            let (t, id, user, status) = s.sessions(&mut open_sessions, &mut next_session);
            s.emit(run_id, t, session(id, user, status, t_ms), t_ms, true);
        } else if roll < SESSIONS + USERS || s.users == 0 {
            let (t, u) = if s.users == 0 || s.rng.random_bool(0.25) {
                s.users += 1;
                ("user.created", s.users - 1)
            } else {
                ("user.updated", s.rng.random_range(0..s.users))
            };
            s.emit(run_id, t, Template::new(t, &event(t, u, 0), t_ms).render(t_ms), t_ms, false);
        } else if roll < SESSIONS + USERS + ORGS_AND_MEMBERS {
            let t = match s.rng.random_range(0..10) {
                0 => {
                    s.orgs += 1;
                    "organization.created"
                }
                1..=2 => "organization.updated",
                _ => "organizationMembership.created",
            };
            let (u, o) = (s.rng.random_range(0..s.users), s.rng.random_range(0..s.orgs));
            s.emit(run_id, t, Template::new(t, &event(t, u, o), t_ms).render(t_ms), t_ms, false);
        } else {
            let rest = roll - (SESSIONS + USERS + ORGS_AND_MEMBERS);
            if let Some(k) = pick(KINDS, |k| k.1, rest) {
                let (t, body) = s.object(k, t_ms);
                s.emit(run_id, t, body, t_ms, true);
            } else {
                let t = IGNORED[pick(IGNORED, |x| x.1, rest - kinds_total).unwrap_or(0)].0;
                s.emit(run_id, t, Template::new(t, &event(t, 0, 0), t_ms).render(t_ms), t_ms, false);
            }
        }
    }
    let mut rest = std::mem::take(&mut s.held);
    rest.sort_by_key(|(at, _)| *at);
    s.messages.extend(rest.into_iter().map(|(_, m)| m));
    let mut shape = s.shape;
    shape.messages = s.messages.len();
    shape.distinct = s.serial;
    shape.users = s.users;
    shape.organizations = s.orgs;
    shape.mean_bytes = mean_bytes(&s.messages);
    Workload { messages: s.messages, shape }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    #[test]
    fn the_shares_add_up_to_the_whole_stream() {
        let kinds: u32 = KINDS.iter().map(|k| k.1).sum();
        let ignored: u32 = IGNORED.iter().map(|k| k.1).sum();
        assert_eq!(SESSIONS + USERS + ORGS_AND_MEMBERS + kinds + ignored, 1000);
    }

    #[test]
    fn sessions_are_about_half_and_every_message_parses_as_the_type_it_claims() {
        let w = generate(20_000, 3, "test");
        let sessions: usize = w.shape.by_type.iter().filter(|(t, _)| t.starts_with("session.")).map(|(_, n)| n).sum();
        let share = sessions as f64 / w.shape.distinct as f64;
        assert!((0.4..0.6).contains(&share), "sessions are {share:.2} of the stream");
        assert!(w.shape.by_type.len() >= 25, "{:?}", w.shape.by_type);
        assert_eq!(w.messages.len(), w.shape.distinct + w.shape.duplicates);
        for m in w.messages.iter().step_by(37) {
            let event = clerk_sync_store::event::parse(&m.svix_id, 0, &m.body).expect("parses");
            assert_eq!(event.event_type, m.event_type);
        }
    }

    #[test]
    fn each_new_resource_has_many_objects_with_several_versions_some_delivered_late() {
        let w = generate(100_000, 5, "test");
        // Per resource: distinct objects, versions (distinct messages), and messages older than a
        // version of the same object delivered before them.
        let mut objects: HashMap<&str, HashSet<String>> = HashMap::new();
        let mut versions: HashMap<&str, usize> = HashMap::new();
        let mut late: HashMap<&str, usize> = HashMap::new();
        let mut newest: HashMap<String, i64> = HashMap::new();
        let mut seen = HashSet::new();
        for m in &w.messages {
            let Some((resource, _)) = m.event_type.split_once('.') else { continue };
            if matches!(resource, "user" | "organization" | "organizationMembership" | "email" | "sms")
                || !seen.insert(m.svix_id.as_str())
            {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
            let id = v["data"]["id"].as_str().unwrap().to_owned();
            *versions.entry(resource).or_default() += 1;
            if let Some(at) = v["data"]["updated_at"].as_i64() {
                let top = newest.entry(id.clone()).or_insert(at);
                if at < *top {
                    *late.entry(resource).or_default() += 1;
                }
                *top = (*top).max(at);
            }
            objects.entry(resource).or_default().insert(id);
        }
        let at_least = [
            ("session", 5_000),
            ("organizationInvitation", 250),
            ("organizationDomain", 50),
            ("subscription", 150),
            ("subscriptionItem", 150),
            ("paymentAttempt", 250),
            ("waitlistEntry", 250),
            ("role", 20),
            ("permission", 25),
        ];
        let mut counts: Vec<_> = objects.iter().map(|(r, ids)| (*r, ids.len(), versions[r])).collect();
        counts.sort();
        eprintln!("objects and distinct messages per resource at 100,000 messages: {counts:?}");
        for (resource, min) in at_least {
            let n = objects.get(resource).map_or(0, HashSet::len);
            let per = versions[resource] as f64 / n as f64;
            assert!(n >= min, "{resource}: {n} objects");
            assert!(per >= 1.5, "{resource}: {per:.1} versions per object");
            assert!(late.get(resource).copied().unwrap_or(0) > 0, "{resource}: nothing delivered late");
        }
        assert!(objects["role"].len() <= 30 && objects["permission"].len() <= 60, "tens, not thousands");
    }
}

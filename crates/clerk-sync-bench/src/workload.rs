//! The worker's workload: a deterministic stream of realistic Clerk events as a busy instance would
//! send them over half an hour. Users are created and then updated several times each, some are
//! deleted, organizations and memberships come and go, a share of events are types the worker
//! only records (sessions, emails), and about 2% are duplicates: an earlier message re-published
//! with the same svix-id, as Svix does when it retries.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::corpus::{Template, event};

/// One message as the gateway would have published it.
#[derive(Debug, Clone)]
pub struct Message {
    pub svix_id: String,
    pub event_type: &'static str,
    pub body: Vec<u8>,
    pub svix_ts_s: i64,
    pub received_at_ms: i64,
}

impl Message {
    /// A message signed at `t_ms` and received by the gateway 40 ms later, as every workload has it.
    pub fn signed_at(svix_id: String, event_type: &'static str, body: Vec<u8>, t_ms: i64) -> Self {
        Self { svix_id, event_type, body, svix_ts_s: t_ms / 1000, received_at_ms: t_ms + 40 }
    }
}

/// The mean body size of `messages`, for the workload's shape.
pub fn mean_bytes(messages: &[Message]) -> f64 {
    messages.iter().map(|m| m.body.len() as f64).sum::<f64>() / messages.len().max(1) as f64
}

#[derive(Debug, Default, Serialize)]
pub struct Shape {
    pub messages: usize,
    /// Distinct svix-ids: rows `clerk.webhook_events` ends up with.
    pub distinct: usize,
    pub duplicates: usize,
    pub users: usize,
    pub organizations: usize,
    pub by_type: BTreeMap<&'static str, usize>,
    pub mean_bytes: f64,
}

pub struct Workload {
    pub messages: Vec<Message>,
    pub shape: Shape,
}

/// Time between two consecutive events: 200,000 events span about half an hour.
const STEP_MS: i64 = 10;
/// Duplicates re-publish one of this many most recent messages.
const DUPLICATE_WINDOW: usize = 5_000;
const IGNORED: &[&str] = &["session.created", "session.ended", "email.created", "organizationInvitation.created"];

struct State {
    rng: StdRng,
    users_alive: Vec<usize>,
    /// Serialised once per object and stamped per event: building a 2 KB JSON tree for each of
    /// 200,000 events would make generation the slowest part of the run.
    user_templates: BTreeMap<usize, Template>,
    repeated: HashMap<(&'static str, usize, usize), Template>,
    next_user: usize,
    orgs: usize,
    memberships: Vec<(usize, usize)>,
}

impl State {
    fn any_user(&mut self) -> usize {
        if self.users_alive.is_empty() {
            return self.new_user();
        }
        self.users_alive[self.rng.random_range(0..self.users_alive.len())]
    }

    fn new_user(&mut self) -> usize {
        self.next_user += 1;
        self.users_alive.push(self.next_user);
        self.next_user
    }

    /// An event of an object seen before, from its cached template.
    fn again(&mut self, event_type: &'static str, u: usize, o: usize, t_ms: i64) -> (&'static str, Vec<u8>) {
        let template = self
            .repeated
            .entry((event_type, u, o))
            .or_insert_with(|| Template::new(event_type, &event(event_type, u, o), t_ms));
        (event_type, template.render(t_ms))
    }

    fn any_org(&mut self) -> usize {
        if self.orgs == 0 {
            self.orgs = 1;
        }
        self.rng.random_range(1..=self.orgs)
    }
}

/// `total` messages (duplicates included), the same for a given `seed`; svix-ids carry `run_id`.
pub fn generate(total: usize, seed: u64, run_id: &str) -> Workload {
    let start_ms = chrono::Utc::now().timestamp_millis() - STEP_MS * total as i64 - 60_000;
    let mut s = State {
        rng: StdRng::seed_from_u64(seed),
        users_alive: Vec::new(),
        user_templates: BTreeMap::new(),
        repeated: HashMap::new(),
        next_user: 0,
        orgs: 0,
        memberships: Vec::new(),
    };
    let mut messages: Vec<Message> = Vec::with_capacity(total);
    let mut shape = Shape::default();
    let mut serial = 0usize;
    while messages.len() < total {
        let t_ms = start_ms + STEP_MS * messages.len() as i64;
        let roll = s.rng.random_range(0..1000);
        if roll < 20 && messages.len() > 100 {
            let from = messages.len().saturating_sub(DUPLICATE_WINDOW);
            let original = messages[s.rng.random_range(from..messages.len())].clone();
            shape.duplicates += 1;
            messages.push(original);
            continue;
        }
        let (event_type, body) = match roll {
            0..100 => {
                let u = s.new_user();
                ("user.created", Template::new("user.created", &event("user.created", u, 0), t_ms).render(t_ms))
            }
            100..650 => {
                let u = s.any_user();
                let template = s
                    .user_templates
                    .entry(u)
                    .or_insert_with(|| Template::new("user.updated", &event("user.updated", u, 0), t_ms));
                ("user.updated", template.render(t_ms))
            }
            650..665 => {
                let u = s.any_user();
                s.users_alive.retain(|x| *x != u);
                s.user_templates.remove(&u);
                s.memberships.retain(|(mu, _)| *mu != u);
                fresh("user.deleted", u, 0, t_ms)
            }
            665..680 => {
                s.orgs += 1;
                fresh("organization.created", 0, s.orgs, t_ms)
            }
            680..710 => {
                let o = s.any_org();
                s.again("organization.updated", 0, o, t_ms)
            }
            710..790 => {
                let (u, o) = (s.any_user(), s.any_org());
                s.memberships.push((u, o));
                fresh("organizationMembership.created", u, o, t_ms)
            }
            790..815 if !s.memberships.is_empty() => {
                let i = s.rng.random_range(0..s.memberships.len());
                let (u, o) = s.memberships[i];
                if roll < 805 {
                    s.again("organizationMembership.updated", u, o, t_ms)
                } else {
                    s.memberships.swap_remove(i);
                    fresh("organizationMembership.deleted", u, o, t_ms)
                }
            }
            _ => {
                // These samples carry no per-user data: one template per type.
                let t = IGNORED[s.rng.random_range(0..IGNORED.len())];
                s.again(t, 0, 0, t_ms)
            }
        };
        serial += 1;
        *shape.by_type.entry(event_type).or_default() += 1;
        messages.push(Message::signed_at(format!("msg_w{run_id}{serial:09}"), event_type, body, t_ms));
    }
    shape.messages = messages.len();
    shape.distinct = serial;
    shape.users = s.next_user;
    shape.organizations = s.orgs;
    shape.mean_bytes = mean_bytes(&messages);
    Workload { messages, shape }
}

fn fresh(event_type: &'static str, u: usize, o: usize, t_ms: i64) -> (&'static str, Vec<u8>) {
    (event_type, Template::new(event_type, &event(event_type, u, o), t_ms).render(t_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_updated_several_times_and_duplicates_reuse_an_id() {
        let w = generate(20_000, 7, "test");
        assert_eq!(w.messages.len(), 20_000);
        assert_eq!(w.shape.distinct + w.shape.duplicates, 20_000);
        let ids: std::collections::HashSet<&str> = w.messages.iter().map(|m| m.svix_id.as_str()).collect();
        assert_eq!(ids.len(), w.shape.distinct);
        let updates = w.shape.by_type["user.updated"] as f64;
        assert!(updates / w.shape.users as f64 >= 4.0, "several updates per user");
        assert!(w.shape.by_type["user.deleted"] > 0 && w.shape.duplicates > 0);
        for m in w.messages.iter().step_by(97) {
            clerk_sync_store::event::parse(&m.svix_id, m.received_at_ms, &m.body).unwrap();
        }
    }
}

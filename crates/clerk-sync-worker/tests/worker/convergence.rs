//! Convergence: a generated history of users, organizations and memberships with updates and
//! deletes, delivered shuffled, with duplicates and with redeliveries (a worker killed part-way),
//! to three workers at once, ends in exactly the state of applying the history in order.
//!
//! The history has equal-version ties: updates that keep the previous `updated_at` (the envelope
//! time then decides), updates that keep both (the svix-id decides; ids are issued in history
//! order), and membership events whose nested organization has the same `updated_at` as the
//! organization's own latest event but other contents (the own event wins). Sessions ride along
//! (about as many events as the rest): final statuses, some stamped older than the session's
//! latest version, must end the same whatever the order, and a deleted user's sessions end.

use std::collections::BTreeMap;
use std::time::Duration;

use clerk_sync_core::samples::{envelope, membership, organization, sample, session, user};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::*;

const T: i64 = 1_716_883_200_000;

struct Org {
    version: Value,
    /// `updated_at` and envelope time of the latest version, for ties.
    at: (i64, i64),
}

/// The version stamp of an update: usually new, sometimes tied with the previous one.
fn stamp(rng: &mut StdRng, previous: Option<(i64, i64)>, t: i64) -> (i64, i64) {
    match (previous, rng.random_range(0..10)) {
        (Some((updated_at, _)), 0..=1) => (updated_at, t),
        (Some(both), 2) => both,
        _ => (t, t),
    }
}

/// A plausible history: every event is valid when it happens (no update after a delete), and
/// each carries a strictly later time than the one before.
fn history(rng: &mut StdRng, steps: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut users: BTreeMap<String, bool> = BTreeMap::new();
    let mut user_at: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut orgs: BTreeMap<String, Org> = BTreeMap::new();
    let mut members: BTreeMap<String, (String, String, &str)> = BTreeMap::new();
    let mut deleted_orgs: Vec<String> = Vec::new();
    // Session id -> (user, latest version stamp).
    let mut sessions: BTreeMap<String, (String, (i64, i64))> = BTreeMap::new();
    let mut others = Others::default();
    for step in 0..steps {
        let t = T + i64::try_from(step).unwrap() * 1_000;
        let live_users: Vec<String> = users.iter().filter(|(_, alive)| **alive).map(|(id, _)| id.clone()).collect();
        let live_orgs: Vec<String> = orgs.keys().cloned().collect();
        let event = match rng.random_range(0..100) {
            0..=14 => {
                let id = format!("user_{step:05}");
                users.insert(id.clone(), true);
                user_at.insert(id.clone(), (t, t));
                envelope("user.created", user(&id, "First", &format!("{id}@example.com"), t), t)
            }
            15..=39 if !live_users.is_empty() => {
                let id = live_users.choose(rng).unwrap();
                let (updated_at, at) = stamp(rng, user_at.get(id).copied(), t);
                user_at.insert(id.clone(), (updated_at, at));
                let data = user(id, &format!("N{step}"), &format!("{id}.{step}@example.com"), updated_at);
                envelope("user.updated", data, at)
            }
            40..=44 if !live_users.is_empty() => {
                let id = live_users.choose(rng).unwrap().clone();
                users.insert(id.clone(), false);
                members.retain(|_, (_, u, _)| *u != id);
                envelope(
                    "user.deleted",
                    json!({"id": id, "object": "user", "deleted": true, "external_id": format!("app-{id}")}),
                    t,
                )
            }
            45..=52 => {
                let id = format!("org_{step:05}");
                let version = organization(&id, &format!("Org {step}"), t);
                orgs.insert(id.clone(), Org { version: version.clone(), at: (t, t) });
                envelope("organization.created", version, t)
            }
            53..=62 if !live_orgs.is_empty() => {
                let id = live_orgs.choose(rng).unwrap();
                let (updated_at, at) = stamp(rng, Some(orgs[id].at), t);
                let mut version = organization(id, &format!("Org {id} v{step}"), updated_at);
                version["members_count"] = json!(step % 50);
                let org = orgs.get_mut(id).unwrap();
                (org.version, org.at) = (version.clone(), (updated_at, at));
                envelope("organization.updated", version, at)
            }
            63..=65 if !live_orgs.is_empty() => {
                let id = live_orgs.choose(rng).unwrap().clone();
                orgs.remove(&id);
                deleted_orgs.push(id.clone());
                members.retain(|_, (o, _, _)| *o != id);
                envelope("organization.deleted", json!({"id": id, "object": "organization", "deleted": true}), t)
            }
            66..=82 if !live_orgs.is_empty() && !live_users.is_empty() => {
                let id = format!("orgmem_{step:05}");
                let (o, u) = (live_orgs.choose(rng).unwrap().clone(), live_users.choose(rng).unwrap().clone());
                members.insert(id.clone(), (o.clone(), u.clone(), "org:member"));
                let mut m = membership(&id, &o, &u, "org:member", t);
                m["organization"] = nested_copy(&orgs[&o].version);
                envelope("organizationMembership.created", m, t)
            }
            83..=94 if !members.is_empty() => {
                let ids: Vec<String> = members.keys().cloned().collect();
                let id = ids.choose(rng).unwrap().clone();
                let role = if rng.random_bool(0.5) { "org:admin" } else { "org:member" };
                let (o, u, _) = members[&id].clone();
                members.insert(id.clone(), (o.clone(), u.clone(), role));
                let mut m = membership(&id, &o, &u, role, t);
                m["organization"] = nested_copy(&orgs[&o].version);
                envelope("organizationMembership.updated", m, t)
            }
            95..=99 if !members.is_empty() => {
                let ids: Vec<String> = members.keys().cloned().collect();
                let id = ids.choose(rng).unwrap().clone();
                let (o, u, role) = members.remove(&id).unwrap();
                let mut m = membership(&id, &o, &u, role, t);
                m["organization"] = nested_copy(&orgs[&o].version);
                envelope("organizationMembership.deleted", m, t)
            }
            _ => continue,
        };
        // Issued in history order, so that where everything else ties the later event sorts last.
        out.push((format!("msg_{:05}_{}", out.len(), &svix_id()[4..]), event));
        if let Some(event) = session_event(rng, &mut sessions, &live_users, step, t) {
            out.push((format!("msg_{:05}_{}", out.len(), &svix_id()[4..]), event));
        }
        if let Some(event) = others.event(rng, &live_users, step, t + 700) {
            out.push((format!("msg_{:05}_{}", out.len(), &svix_id()[4..]), event));
        }
    }
    out
}

/// Sessions, about as many events as everything else: new sessions of live users, updates (ties
/// included), and final statuses, some of them stamped older than the session's latest version
/// (they must still end it) and some followed by a newer `active` (which must not revive it).
fn session_event(
    rng: &mut StdRng,
    sessions: &mut BTreeMap<String, (String, (i64, i64))>,
    live_users: &[String],
    step: usize,
    t: i64,
) -> Option<Value> {
    let t = t + 500;
    match rng.random_range(0..100) {
        0..=29 if !live_users.is_empty() => {
            let id = format!("sess_{step:05}");
            let u = live_users.choose(rng).unwrap().clone();
            sessions.insert(id.clone(), (u.clone(), (t, t)));
            let status = if rng.random_bool(0.2) { "pending" } else { "active" };
            Some(envelope("session.created", session(&id, &u, status, t), t))
        }
        30..=84 if !sessions.is_empty() => {
            let ids: Vec<String> = sessions.keys().cloned().collect();
            let id = ids.choose(rng).unwrap().clone();
            let (u, previous) = sessions[&id].clone();
            let (updated_at, at) = stamp(rng, Some(previous), t);
            let (t_name, status) = match rng.random_range(0..10) {
                0 => ("session.ended", "ended"),
                1 => ("session.revoked", "revoked"),
                2 => ("session.removed", "removed"),
                _ => ("session.created", "active"),
            };
            // Now and then a final status stamped before the latest version.
            let (updated_at, at) = if status != "active" && rng.random_bool(0.3) {
                (previous.0 - 100, previous.1 - 100)
            } else {
                (updated_at, at)
            };
            let latest = sessions.get_mut(&id).unwrap();
            latest.1 = latest.1.max((updated_at, at));
            Some(envelope(t_name, session(&id, &u, status, updated_at), at))
        }
        _ => None,
    }
}

/// The other resources: invitations (accepted by live users, some acceptances stamped older than
/// the latest version), roles and domains (deleted, then possibly updated late by a redelivery),
/// waitlist entries and subscription items paid by live users (cascaded when the user goes).
/// Addresses never match a user's: an invitation matched only by the address of a user deleted
/// earlier is not recognised (migration 12's documented limit), so it would not converge.
#[derive(Default)]
struct Others {
    /// id -> latest (updated_at, envelope time), per kind.
    invitations: BTreeMap<String, (i64, i64)>,
    acceptors: BTreeMap<String, String>,
    roles: BTreeMap<String, (i64, i64)>,
    domains: BTreeMap<String, (i64, i64)>,
    items: BTreeMap<String, (String, (i64, i64))>,
}

impl Others {
    fn event(&mut self, rng: &mut StdRng, live_users: &[String], step: usize, t: i64) -> Option<Value> {
        let pick = |rng: &mut StdRng, m: &BTreeMap<String, (i64, i64)>| {
            m.keys().cloned().collect::<Vec<_>>().choose(rng).cloned()
        };
        let with = |t: &str, id: &str, at: (i64, i64), f: &dyn Fn(&mut Value)| {
            let mut e = sample(t, at.0).unwrap();
            e["data"]["id"] = json!(id);
            e["timestamp"] = json!(at.1);
            f(&mut e["data"]);
            e
        };
        match rng.random_range(0..100) {
            0..=7 if !live_users.is_empty() => {
                let id = format!("orginv_{step:05}");
                // Whoever accepts it is decided once: an invitation has one accepting user.
                self.invitations.insert(id.clone(), (t, t));
                self.acceptors.insert(id.clone(), live_users.choose(rng).unwrap().clone());
                Some(with("organizationInvitation.created", &id, (t, t), &|d| {
                    d["email_address"] = json!(format!("{id}@invitee.test"))
                }))
            }
            8..=17 if !self.invitations.is_empty() => {
                let id = pick(rng, &self.invitations).unwrap();
                let previous = self.invitations[&id];
                let mut at = stamp(rng, Some(previous), t);
                let (kind, user) = match rng.random_range(0..4) {
                    0 => ("organizationInvitation.accepted", Some(self.acceptors[&id].clone())),
                    1 => ("organizationInvitation.revoked", None),
                    _ => ("organizationInvitation.created", None),
                };
                if kind != "organizationInvitation.created" && rng.random_bool(0.3) {
                    at = (previous.0 - 100, previous.1 - 100);
                }
                let latest = self.invitations.get_mut(&id).unwrap();
                *latest = (*latest).max(at);
                Some(with(kind, &id, at, &|d| {
                    d["email_address"] = json!(format!("{id}@invitee.test"));
                    d["user_id"] = json!(user);
                }))
            }
            18..=23 => {
                let id = format!("role_{step:05}");
                self.roles.insert(id.clone(), (t, t));
                Some(with("role.created", &id, (t, t), &|d| d["key"] = json!(format!("org:{id}"))))
            }
            24..=29 if !self.roles.is_empty() => {
                let id = pick(rng, &self.roles).unwrap();
                if rng.random_bool(0.25) {
                    self.roles.remove(&id);
                    let mut e = sample("role.deleted", t).unwrap();
                    e["data"]["id"] = json!(id);
                    return Some(e);
                }
                let at = stamp(rng, Some(self.roles[&id]), t);
                self.roles.insert(id.clone(), at);
                Some(with("role.updated", &id, at, &|d| d["permissions"] = json!([format!("org:p{step}")])))
            }
            30..=33 => {
                let id = format!("orgdmn_{step:05}");
                self.domains.insert(id.clone(), (t, t));
                Some(with("organizationDomain.created", &id, (t, t), &|_| {}))
            }
            34..=37 if !self.domains.is_empty() => {
                let id = pick(rng, &self.domains).unwrap();
                self.domains.remove(&id);
                let mut e = sample("organizationDomain.deleted", t).unwrap();
                e["data"]["id"] = json!(id);
                Some(e)
            }
            38..=43 if !live_users.is_empty() => {
                let id = format!("csitem_{step:05}");
                let u = live_users.choose(rng).unwrap().clone();
                self.items.insert(id.clone(), (u.clone(), (t, t)));
                Some(with("subscriptionItem.active", &id, (t, t), &|d| d["payer"]["user_id"] = json!(u)))
            }
            44..=49 if !self.items.is_empty() => {
                let ids: Vec<String> = self.items.keys().cloned().collect();
                let id = ids.choose(rng).unwrap().clone();
                let (u, previous) = self.items[&id].clone();
                let at = stamp(rng, Some(previous), t);
                self.items.insert(id.clone(), (u.clone(), at));
                let kind = *["subscriptionItem.canceled", "subscriptionItem.updated", "subscriptionItem.pastDue"]
                    .choose(rng)
                    .unwrap();
                Some(with(kind, &id, at, &|d| d["payer"]["user_id"] = json!(u)))
            }
            50..=53 => {
                let id = format!("wle_{step:05}");
                Some(with("waitlistEntry.created", &id, (t, t), &|d| {
                    d["email_address"] = json!(format!("{id}@waitlist.test"))
                }))
            }
            _ => None,
        }
    }
}

/// An organization as a membership event nests it: same `updated_at` as its own latest event, but
/// partial (here: a stale member count), so it must never replace that event's version.
fn nested_copy(version: &Value) -> Value {
    let mut copy = version.clone();
    copy["members_count"] = json!(-1);
    copy
}

const TABLES: [&str; 9] = [
    "users",
    "organizations",
    "organization_memberships",
    "sessions",
    "organization_invitations",
    "roles",
    "organization_domains",
    "subscription_items",
    "waitlist_entries",
];

async fn tables(env: &TestEnv) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for name in TABLES {
        out.push(env.table(name).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_duplicated_and_redelivered_events_converge_to_the_in_order_state() {
    let seed: u64 = std::env::var("CONVERGENCE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("convergence seed: {seed} (set CONVERGENCE_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let events = history(&mut rng, 1_500);
    let unique = i64::try_from(events.len()).unwrap();

    // The reference: the history in order, one event at a time, one worker.
    let ordered = setup("conv-ref").await;
    for (id, event) in &events {
        ordered.publish_event(id, event).await;
    }
    let reference_worker = ordered
        .start_worker_with(|s| {
            s.with_env("CLERK_SYNC__WORKER__BATCH_SIZE", "1").with_env("CLERK_SYNC__WORKER__CONCURRENCY", "1")
        })
        .await;
    ordered.wait_processed(unique, Duration::from_secs(120)).await;
    reference_worker.stop().await;
    let expected = tables(&ordered).await;
    assert!(expected.iter().all(|t| !t.is_empty()), "the history touches every table");
    assert!(expected[0].iter().any(|u| !u["deleted_at"].is_null()), "and deletes some users");
    assert!(expected[3].iter().any(|s| s["status"] == "ended"), "and ends some sessions");
    assert!(expected[4].iter().any(|i| i["status"] == "accepted"), "and accepts some invitations");
    assert!(expected[5].iter().any(|r| !r["deleted_at"].is_null()), "and deletes some roles");

    // The real thing: shuffled, a quarter of the events twice, three workers, one killed.
    let chaos = setup("conv-chaos").await;
    let mut deliveries: Vec<&(String, Value)> = events.iter().collect();
    deliveries.extend(events.choose_multiple(&mut rng, events.len() / 4));
    deliveries.shuffle(&mut rng);
    let victim = chaos.spawn_worker_process();
    let workers = [chaos.start_worker().await, chaos.start_worker().await];
    let (first_half, second_half) = deliveries.split_at(deliveries.len() / 2);
    for (id, event) in first_half {
        chaos.publish_event(id, event).await;
    }
    victim.kill();
    let replacement = chaos.spawn_worker_process();
    for (id, event) in second_half {
        chaos.publish_event(id, event).await;
    }
    chaos.wait_processed(unique, Duration::from_secs(120)).await;
    clerk_sync_testkit::wait_until(Duration::from_secs(30), "the queue is drained", || async {
        chaos.probe.ready_count(&chaos.topology.queue()).await == 0
    })
    .await;
    drop(replacement);
    for w in workers {
        w.stop().await;
    }
    let actual = tables(&chaos).await;
    for (name, (a, e)) in TABLES.iter().zip(actual.iter().zip(&expected)) {
        assert_eq!(a.len(), e.len(), "{name}: row count (seed {seed})");
        for (ra, re) in a.iter().zip(e) {
            assert_eq!(ra, re, "{name}: row differs (seed {seed})");
        }
    }
    assert!(chaos.dead_letters(Duration::ZERO).await.is_empty(), "nothing dead-lettered (seed {seed})");
    ordered.cleanup().await;
    chaos.cleanup().await;
}

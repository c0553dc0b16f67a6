//! Realistic Clerk events for the load generator and the broker ceiling: a fixed set of
//! pre-serialised envelopes of varied types (users dominate, as in a real instance, at about 2 KB
//! each) whose timestamps are stamped at send time, and the signed request built from one.
//!
//! Serialising a `serde_json::Value` per request would cost the load generator more CPU than the
//! gateway spends verifying it, so each event is serialised once with a placeholder timestamp and
//! only those 13 digits are overwritten per request.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use serde_json::{Value, json};

use clerk_sync_core::samples;
use clerk_sync_core::signing::Key;

/// Stands for "the moment the event is sent" in a template (13 digits, like every ms timestamp
/// from 2001 to 2286, so overwriting it keeps the body's length).
pub const PLACEHOLDER_MS: i64 = 1_999_999_999_999;
/// Other timestamps in a template within this distance of the placeholder (`created_at =
/// updated_at - 60s`, ...) are rebased onto the build time once.
const REBASE_WINDOW_MS: i64 = 10_000_000_000;

/// One event serialised once; `stamps` are the offsets of the placeholder.
#[derive(Debug, Clone)]
pub struct Template {
    pub event_type: &'static str,
    body: Vec<u8>,
    stamps: Vec<usize>,
}

impl Template {
    /// Serialises `event` (built with [`PLACEHOLDER_MS`] as its time) and rebases the other
    /// nearby timestamps onto `base_ms`.
    pub fn new(event_type: &'static str, event: &Value, base_ms: i64) -> Self {
        let mut body = event.to_string().into_bytes();
        let mut stamps = Vec::new();
        let mut i = 0;
        while i < body.len() {
            if !body[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < body.len() && body[i].is_ascii_digit() {
                i += 1;
            }
            if i - start != 13 || (start > 0 && body[start - 1] == b'.') {
                continue;
            }
            let Some(n) = std::str::from_utf8(&body[start..i]).ok().and_then(|s| s.parse::<i64>().ok()) else {
                continue;
            };
            if n == PLACEHOLDER_MS {
                stamps.push(start);
            } else if (n - PLACEHOLDER_MS).abs() < REBASE_WINDOW_MS {
                write_ms(&mut body[start..i], base_ms + (n - PLACEHOLDER_MS));
            }
        }
        Self { event_type, body, stamps }
    }

    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// Appends the body with every placeholder set to `now_ms`.
    pub fn render_into(&self, now_ms: i64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.body);
        for &at in &self.stamps {
            write_ms(&mut out[start + at..start + at + 13], now_ms);
        }
    }

    pub fn render(&self, now_ms: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len());
        self.render_into(now_ms, &mut out);
        out
    }
}

/// Writes a 13-digit number into `slot` (clamped, so a body never changes length).
fn write_ms(slot: &mut [u8], value: i64) {
    let mut v = value.clamp(1_000_000_000_000, 9_999_999_999_999);
    for b in slot.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// The share of each type in the load: roughly what a busy Clerk instance sends. Sessions are
/// about half (every sign-in creates one and every sign-out or expiry ends it).
pub const MIX: &[(&str, u32)] = &[
    ("user.updated", 20),
    ("user.created", 6),
    ("user.deleted", 1),
    ("organization.created", 1),
    ("organization.updated", 2),
    ("organizationMembership.created", 4),
    ("organizationMembership.updated", 3),
    ("organizationMembership.deleted", 1),
    ("session.created", 30),
    ("session.ended", 15),
    ("session.revoked", 2),
    ("session.removed", 2),
    ("session.pending", 1),
    ("email.created", 3),
    ("sms.created", 1),
    ("organizationInvitation.created", 2),
    ("organizationInvitation.accepted", 1),
    ("role.updated", 1),
    ("permission.updated", 1),
    ("organizationDomain.updated", 1),
    ("waitlistEntry.created", 1),
    ("subscription.updated", 1),
    ("subscriptionItem.active", 1),
    ("paymentAttempt.updated", 1),
];

pub fn user_id(n: usize) -> String {
    format!("user_2bench{n:021}")
}

pub fn org_id(n: usize) -> String {
    format!("org_2bench{n:022}")
}

pub fn membership_id(user: usize, org: usize) -> String {
    format!("orgmem_2bench{user:010}x{org:08}")
}

const FIRST_NAMES: &[&str] = &["Ada", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances"];

/// The envelope of `event_type` about user `u` / organization `o`, at [`PLACEHOLDER_MS`].
pub fn event(event_type: &'static str, u: usize, o: usize) -> Value {
    let ts = PLACEHOLDER_MS;
    let (uid, oid) = (user_id(u), org_id(o));
    let data = match event_type {
        "user.created" | "user.updated" => {
            let name = FIRST_NAMES[u % FIRST_NAMES.len()];
            samples::user(&uid, name, &format!("{}.{u}@example.com", name.to_lowercase()), ts)
        }
        "user.deleted" => json!({"deleted": true, "external_id": format!("app-{uid}"), "id": uid, "object": "user"}),
        "organization.created" | "organization.updated" => samples::organization(&oid, &format!("Team {o}"), ts),
        "organization.deleted" => {
            json!({"deleted": true, "id": oid, "object": "organization", "slug": format!("team-{o}")})
        }
        t if t.starts_with("organizationMembership.") => {
            let role = if u.is_multiple_of(5) { "org:admin" } else { "org:member" };
            samples::membership(&membership_id(u, o), &oid, &uid, role, ts)
        }
        t => return samples::sample(t, ts).unwrap_or_else(|| samples::envelope(t, json!({"id": "x"}), ts)),
    };
    samples::envelope(event_type, data, ts)
}

/// Picks a type from [`MIX`].
pub fn pick_type(rng: &mut StdRng) -> &'static str {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (t, w) in MIX {
        if roll < *w {
            return t;
        }
        roll -= w;
    }
    MIX[0].0
}

/// Templates cycled through by the load generator.
#[derive(Debug)]
pub struct Corpus {
    templates: Vec<Template>,
}

impl Corpus {
    /// `count` events in the [`MIX`] about `users` users and `users / 20` organizations.
    pub fn realistic(count: usize, users: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let base = chrono::Utc::now().timestamp_millis();
        let orgs = (users / 20).max(1);
        let templates = (0..count.max(1))
            .map(|_| {
                let t = pick_type(&mut rng);
                let (u, o) = (rng.random_range(0..users.max(1)), rng.random_range(0..orgs));
                Template::new(t, &event(t, u, o), base)
            })
            .collect();
        Self { templates }
    }

    pub fn get(&self, seq: u64) -> &Template {
        &self.templates[(seq % self.templates.len() as u64) as usize]
    }

    pub fn mean_len(&self) -> f64 {
        self.templates.iter().map(|t| t.len() as f64).sum::<f64>() / self.templates.len() as f64
    }
}

/// Builds signed webhook requests, reusing its buffers from one request to the next.
///
/// Signs with the same keyed HMAC state as the gateway's verifier (SHA-NI when the CPU has it),
/// computed once: on two cores every microsecond the client spends is taken from the gateway it
/// measures.
#[derive(Clone)]
pub struct Signer {
    key: Key,
    host: String,
    path: String,
    out: Vec<u8>,
    body: Vec<u8>,
}

impl Signer {
    pub fn new(secret: &SecretString, host: &str, path: &str) -> anyhow::Result<Self> {
        let key = Key::new(secret).map_err(|e| anyhow::anyhow!("the signing secret is not whsec_<base64>: {e}"))?;
        Ok(Self { key, host: host.to_owned(), path: path.to_owned(), out: Vec::new(), body: Vec::new() })
    }

    /// The `svix-signature` value: `v1,` and the base64 HMAC of `{id}.{timestamp}.{body}`.
    pub fn signature(&self, svix_id: &str, timestamp: i64, body: &[u8]) -> String {
        self.key.signature(svix_id, timestamp, body)
    }

    /// The whole HTTP request for one event, signed as Svix would sign it at `now_ms`: head and
    /// body in one buffer, written with one syscall.
    pub fn request(&mut self, template: &Template, svix_id: &str, now_ms: i64) -> anyhow::Result<&[u8]> {
        use std::io::Write;
        self.body.clear();
        template.render_into(now_ms, &mut self.body);
        let ts = now_ms.div_euclid(1000);
        let signature = self.signature(svix_id, ts, &self.body);
        self.out.clear();
        write!(
            self.out,
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nsvix-id: {svix_id}\r\n\
             svix-timestamp: {ts}\r\nsvix-signature: {signature}\r\ncontent-length: {}\r\n\r\n",
            self.path,
            self.host,
            self.body.len()
        )?;
        self.out.extend_from_slice(&self.body);
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_keeps_the_length_and_sets_every_placeholder() {
        let base = 1_716_883_200_000;
        let t = Template::new("user.updated", &event("user.updated", 7, 1), base);
        let body = t.render(1_716_883_299_999);
        assert_eq!(body.len(), t.len());
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["timestamp"], 1_716_883_299_999_i64);
        assert_eq!(v["data"]["updated_at"], 1_716_883_299_999_i64);
        assert_eq!(v["data"]["created_at"], base - 60_000, "nearby timestamps are rebased");
        assert!((1500..3000).contains(&t.len()), "a user event is about 2 KB: {}", t.len());
    }

    #[test]
    fn the_signer_signs_exactly_as_svix_does() {
        let secret = crate::env::new_secret();
        let signer = Signer::new(&secret, "h", "/").unwrap();
        let body = Corpus::realistic(1, 1, 1).get(0).render(1_716_883_200_000);
        let raw = secrecy::ExposeSecret::expose_secret(&secret).to_owned();
        let expected = svix::webhooks::Webhook::new(&raw).unwrap().sign("msg_1", 1_716_883_200, &body).unwrap();
        assert_eq!(signer.signature("msg_1", 1_716_883_200, &body), expected);
    }

    #[test]
    fn the_corpus_parses_as_envelopes_of_its_types() {
        let corpus = Corpus::realistic(200, 50, 1);
        for i in 0..200 {
            let t = corpus.get(i);
            let body = t.render(1_716_883_200_000);
            let head = clerk_sync_core::envelope::parse_head(&body).unwrap();
            assert_eq!(head.event_type, t.event_type);
            clerk_sync_store::event::parse("msg_corpus", 0, &body).unwrap();
        }
    }
}

//! Turns the merged, untyped layers into typed values, one key at a time, collecting a [`Problem`]
//! for each bad value instead of stopping at the first, and flagging keys nobody reads (typos).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use super::{ENV_PREFIX, LogFormat, Problem};

pub(super) type RawMap = BTreeMap<String, BTreeMap<String, config::Value>>;

pub(super) struct Fields {
    map: RawMap,
    problems: Vec<Problem>,
}

/// `gateway.listen` -> `CLERK_SYNC__GATEWAY__LISTEN`.
pub(super) fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase())
}

/// How a key is named in problems: both its file and its environment spelling.
pub(super) fn describe_key(key: &str) -> String {
    format!("{key} ({})", env_name(key))
}

impl Fields {
    pub(super) fn new(map: RawMap) -> Self {
        Self { map, problems: Vec::new() }
    }

    fn problem(&mut self, section: &str, key: &str, message: impl Display) {
        self.problems.push(Problem { key: describe_key(&format!("{section}.{key}")), message: message.to_string() });
    }

    /// Removes the key, so whatever is left at the end was never read.
    fn take(&mut self, section: &str, key: &str) -> Option<String> {
        let value = self.map.get_mut(section).and_then(|s| s.remove(key));
        match value.map(|v| v.into_string()) {
            Some(Ok(s)) => Some(s.trim().to_owned()),
            Some(Err(e)) => {
                self.problem(section, key, format!("expected a single value: {e}"));
                None
            }
            None => {
                self.problem(section, key, "missing");
                None
            }
        }
    }

    pub(super) fn string(&mut self, section: &str, key: &str) -> String {
        self.take(section, key).unwrap_or_default()
    }

    pub(super) fn parse<T>(&mut self, section: &str, key: &str) -> T
    where
        T: FromStr + Default,
        T::Err: Display,
    {
        let Some(raw) = self.take(section, key) else { return T::default() };
        raw.parse().unwrap_or_else(|e| {
            self.problem(section, key, format!("{raw:?} is not valid: {e}"));
            T::default()
        })
    }

    pub(super) fn positive<T>(&mut self, section: &str, key: &str) -> T
    where
        T: FromStr + Default + PartialEq,
        T::Err: Display,
    {
        let value: T = self.parse(section, key);
        if value == T::default() && !self.problems.iter().any(|p| p.key.starts_with(&format!("{section}.{key} "))) {
            self.problem(section, key, "must be greater than zero");
        }
        value
    }

    pub(super) fn addr(&mut self, section: &str, key: &str) -> SocketAddr {
        let fallback = SocketAddr::from(([127, 0, 0, 1], 0));
        let Some(raw) = self.take(section, key) else { return fallback };
        raw.parse().unwrap_or_else(|_| {
            self.problem(section, key, format!("{raw:?} is not an IP:port socket address"));
            fallback
        })
    }

    pub(super) fn duration(&mut self, section: &str, key: &str) -> Duration {
        let Some(raw) = self.take(section, key) else { return Duration::ZERO };
        humantime::parse_duration(&raw).unwrap_or_else(|e| {
            self.problem(section, key, format!("{raw:?} is not a duration like \"5s\": {e}"));
            Duration::ZERO
        })
    }

    pub(super) fn durations(&mut self, section: &str, key: &str) -> Vec<Duration> {
        let Some(raw) = self.take(section, key) else { return Vec::new() };
        let mut out = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match humantime::parse_duration(part) {
                Ok(d) => out.push(d),
                Err(e) => self.problem(section, key, format!("{part:?} is not a duration: {e}")),
            }
        }
        if out.is_empty() {
            self.problem(section, key, "needs at least one duration, e.g. \"1s,10s,1m\"");
        }
        out
    }

    /// A name usable inside AMQP exchange and queue names.
    pub(super) fn name(&mut self, section: &str, key: &str) -> String {
        let raw = self.string(section, key);
        let ok = !raw.is_empty()
            && raw.len() <= 100
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.problem(section, key, format!("{raw:?} must be 1-100 characters of A-Z a-z 0-9 - _ ."));
        }
        raw
    }

    pub(super) fn secret_url(&mut self, section: &str, key: &str, schemes: &[&str]) -> SecretString {
        let raw = self.string(section, key);
        let scheme = raw.split_once("://").map(|(s, _)| s);
        if !scheme.is_some_and(|s| schemes.contains(&s)) {
            // Never echo the value: it may hold a password.
            self.problem(section, key, format!("must be a URL starting with {}://", schemes.join(":// or ")));
        }
        SecretString::from(raw)
    }

    /// A comma-separated list of AMQP node URLs, each one checked (`amqp::nodes::parse_list`).
    pub(super) fn amqp_urls(&mut self, section: &str, key: &str) -> SecretString {
        let raw = self.string(section, key);
        if let Err(problems) = crate::amqp::nodes::parse_list(&raw) {
            for problem in problems {
                self.problem(section, key, problem);
            }
        }
        SecretString::from(raw)
    }

    pub(super) fn http_url(&mut self, section: &str, key: &str) -> String {
        let raw = self.string(section, key).trim_end_matches('/').to_owned();
        if !(raw.starts_with("https://") || raw.starts_with("http://")) {
            self.problem(section, key, format!("{raw:?} must be an http(s) URL"));
        }
        raw
    }

    pub(super) fn signing_secrets(&mut self, section: &str, key: &str) -> Vec<SecretString> {
        let raw = self.string(section, key);
        let mut out = Vec::new();
        for (i, part) in raw.split([' ', ',', '\n', '\t']).filter(|p| !p.is_empty()).enumerate() {
            let valid = part.starts_with("whsec_") && svix::webhooks::Webhook::new(part).is_ok();
            if valid {
                out.push(SecretString::from(part.to_owned()));
            } else {
                // Say which one, never what it is.
                self.problem(section, key, format!("secret #{} is not a whsec_ secret followed by base64", i + 1));
            }
        }
        out
    }

    pub(super) fn log_format(&mut self, section: &str, key: &str) -> LogFormat {
        match self.string(section, key).to_ascii_lowercase().as_str() {
            "text" | "" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                self.problem(section, key, format!("{other:?} must be \"text\" or \"json\""));
                LogFormat::Text
            }
        }
    }

    /// Every problem, plus one per key that no setting read: usually a typo in a file or variable.
    pub(super) fn finish(mut self) -> Vec<Problem> {
        let leftovers: Vec<(String, String)> =
            self.map.iter().flat_map(|(s, keys)| keys.keys().map(move |k| (s.clone(), k.clone()))).collect();
        for (section, key) in leftovers {
            self.problem(&section, &key, "unknown setting");
        }
        self.problems
    }
}

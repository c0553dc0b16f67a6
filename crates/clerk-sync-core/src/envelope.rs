//! The outer shape of a Clerk webhook: `{"data": {...}, "object": "event", "type": "user.created",
//! "timestamp": 1716883200000, "instance_id": "ins_..."}`.
//!
//! The gateway only needs the `type` (the routing key) and proof that the body is an envelope at
//! all; it never re-serialises the body. The worker's typed event model builds on [`EventType`].

use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest event type accepted as a routing key (AMQP short strings hold 255 bytes).
pub const MAX_TYPE_LEN: usize = 255;

/// What the gateway reads from a body: borrowed, so parsing a 2 KB event allocates nothing.
#[derive(Debug, Deserialize)]
pub struct EnvelopeHead<'a> {
    #[serde(rename = "type", borrow)]
    pub event_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

/// Why a correctly signed body is still not a Clerk event envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a JSON object with string `type` and object `data`: {0}")]
    NotAnEnvelope(String),
    #[error("`data` is not a JSON object")]
    DataNotAnObject,
    #[error("`type` is empty, too long or has characters other than A-Z a-z 0-9 . _ -")]
    BadType,
}

impl EnvelopeError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotAnEnvelope(_) => "not_an_envelope",
            Self::DataNotAnObject => "data_not_an_object",
            Self::BadType => "bad_event_type",
        }
    }
}

/// Parses just enough to route the event, validating the type as a routing key.
pub fn parse_head(body: &[u8]) -> Result<EnvelopeHead<'_>, EnvelopeError> {
    let head: EnvelopeHead<'_> =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotAnEnvelope(e.to_string()))?;
    if !head.data.get().starts_with('{') {
        return Err(EnvelopeError::DataNotAnObject);
    }
    if !is_valid_type(&head.event_type) {
        return Err(EnvelopeError::BadType);
    }
    Ok(head)
}

/// A type usable as a topic routing key: `organizationMembership.created` and the like.
pub fn is_valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TYPE_LEN
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clerk_envelope_yields_its_type() {
        let body = br#"{"data":{"id":"user_1","object":"user"},"object":"event","type":"user.created","timestamp":1716883200000,"instance_id":"ins_1"}"#;
        assert_eq!(parse_head(body).unwrap().event_type, "user.created");
    }

    #[test]
    fn escaped_types_are_decoded_before_validation() {
        let body = br#"{"data":{},"type":"user\u002ecreated"}"#;
        assert_eq!(parse_head(body).unwrap().event_type, "user.created");
    }

    #[test]
    fn bodies_that_are_not_envelopes_are_told_apart() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "not_an_envelope"),
            (b"[]", "not_an_envelope"),
            (b"{\"type\":\"user.created\"}", "not_an_envelope"),
            (b"{\"type\":7,\"data\":{}}", "not_an_envelope"),
            (b"{\"type\":\"user.created\",\"data\":[1]}", "data_not_an_object"),
            (b"{\"type\":\"user created\",\"data\":{}}", "bad_event_type"),
            (b"{\"type\":\"\",\"data\":{}}", "bad_event_type"),
        ];
        for (body, kind) in cases {
            assert_eq!(parse_head(body).unwrap_err().kind(), kind, "{}", String::from_utf8_lossy(body));
        }
    }
}

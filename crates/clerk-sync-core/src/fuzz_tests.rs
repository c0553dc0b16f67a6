//! Property-based fuzzing of everything that reads untrusted input before authentication: the
//! signature headers and body, and the envelope head. Runs a bounded number of cases in `make test`;
//! set `PROPTEST_CASES` to run longer. Any failure found is kept below as a regression case.

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use secrecy::SecretString;

use crate::envelope::parse_head;
use crate::signing::{TOLERANCE_SECS, Verifier, sign};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn verifier() -> Verifier {
    Verifier::new(&[SecretString::from(SECRET.to_owned())]).unwrap()
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("(type|data|id|object|timestamp|[a-z]{1,6})", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn verification_never_panics_on_arbitrary_headers_and_bodies(
        id in prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        ts in prop::option::of(prop::collection::vec(any::<u8>(), 0..30)),
        sig in prop::option::of(prop::collection::vec(any::<u8>(), 0..600)),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in [("svix-id", id), ("svix-timestamp", ts), ("svix-signature", sig)] {
            if let Some(Ok(v)) = value.map(|v| HeaderValue::from_bytes(&v)) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        // Whatever comes in, the answer is an error (nobody can forge the HMAC), never a panic.
        prop_assert!(verifier().verify(&body, &headers).is_err());
    }

    #[test]
    fn a_correct_signature_passes_for_any_utf8_body_and_any_valid_id(
        id in "[A-Za-z0-9_]{1,64}",
        body in ".{0,400}",
    ) {
        let ts = chrono::Utc::now().timestamp();
        let signature = sign(&SecretString::from(SECRET.to_owned()), &id, ts, body.as_bytes()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("svix-id", HeaderValue::from_str(&id).unwrap());
        headers.insert("svix-timestamp", HeaderValue::from_str(&ts.to_string()).unwrap());
        headers.insert("svix-signature", HeaderValue::from_str(&signature).unwrap());
        prop_assert_eq!(verifier().verify(body.as_bytes(), &headers).map(|v| v.id), Ok(id));
    }

    /// Our HMAC path replaced `svix`'s for speed; `svix::Webhook::verify` stays the reference. Inputs
    /// mix real signatures (by the right or a wrong secret, for this or another body) with garbage,
    /// and timestamps on both sides of the tolerance.
    #[test]
    fn verification_agrees_with_the_svix_crate(
        id in "[A-Za-z0-9_]{1,40}",
        body in ".{0,300}",
        skew in prop_oneof![-TOLERANCE_SECS - 5..=-TOLERANCE_SECS + 5, -10i64..10, TOLERANCE_SECS - 5..=TOLERANCE_SECS + 5],
        signer in 0..4u8,
        extra in prop::option::of("v[0-9],[A-Za-z0-9+/=]{0,50}"),
    ) {
        let ts = chrono::Utc::now().timestamp() + skew;
        let good = SecretString::from(SECRET.to_owned());
        let other = SecretString::from("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_owned());
        let sig = match signer {
            0 => sign(&good, &id, ts, body.as_bytes()).unwrap(),
            1 => sign(&other, &id, ts, body.as_bytes()).unwrap(),
            2 => sign(&good, &id, ts, format!("{body}x").as_bytes()).unwrap(),
            _ => "v1,AAAA".to_owned(),
        };
        let sig = extra.map_or(sig.clone(), |e| format!("{e} {sig}"));
        let mut headers = HeaderMap::new();
        headers.insert("svix-id", HeaderValue::from_str(&id).unwrap());
        headers.insert("svix-timestamp", HeaderValue::from_str(&ts.to_string()).unwrap());
        headers.insert("svix-signature", HeaderValue::from_str(&sig).unwrap());
        // Both read the clock; skip the rare case where a second ticks over at the edge.
        let now = chrono::Utc::now().timestamp();
        let ours = verifier().verify_at(body.as_bytes(), &headers, now);
        let theirs = svix::webhooks::Webhook::new(SECRET).unwrap().verify(body.as_bytes(), &headers);
        prop_assume!(chrono::Utc::now().timestamp() == now);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "ours {:?}, svix {:?}", ours, theirs);
        if signer == 0 && skew.abs() <= 10 {
            prop_assert!(ours.is_ok());
        }
    }

    #[test]
    fn the_envelope_head_parser_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = parse_head(&body);
    }

    #[test]
    fn the_envelope_head_parser_never_panics_on_arbitrary_json(value in json_value()) {
        let body = value.to_string();
        if let Ok(head) = parse_head(body.as_bytes()) {
            prop_assert!(crate::envelope::is_valid_type(&head.event_type));
        }
    }
}

#[test]
fn deeply_nested_json_is_rejected_not_a_stack_overflow() {
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse_head(body.as_bytes()).is_err());
    let nested = format!(r#"{{"type":"user.created","data":{}{}}}"#, r#"{"a":"#.repeat(5_000), "}".repeat(5_000));
    assert!(parse_head(nested.as_bytes()).is_err(), "serde_json's recursion limit stops it");
}

//! Property-based fuzzing of the event parser: arbitrary bytes, arbitrary JSON, and every sample
//! event with one field replaced by a value of the wrong type. The parser must answer Ok or a
//! classified error, never panic. Bounded in `make test`; `PROPTEST_CASES` runs longer.

use clerk_sync_core::samples;
use proptest::prelude::*;
use serde_json::Value;

use super::*;

fn wrong_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(1e300)),
        ".{0,12}".prop_map(Value::from),
        Just(Value::Array(vec![Value::Null])),
        Just(serde_json::json!({"nested": {"deeper": []}})),
    ]
}

fn mutate(value: &mut Value, path: &[usize], replacement: Value) {
    let Some((first, rest)) = path.split_first() else {
        *value = replacement;
        return;
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(first % map.len()).cloned().unwrap_or_default();
            if let Some(child) = map.get_mut(&key) {
                mutate(child, rest, replacement);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let len = items.len();
            mutate(&mut items[first % len], rest, replacement);
        }
        other => *other = replacement,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parsing_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse("msg_fuzz", 0, &body);
    }

    #[test]
    fn a_sample_with_any_field_replaced_by_a_wrong_value_parses_or_fails_cleanly(
        type_index in 0..crate::catalogue::CATALOGUE.len(),
        path in prop::collection::vec(any::<usize>(), 1..5),
        replacement in wrong_value(),
    ) {
        let mut event = samples::sample(crate::catalogue::CATALOGUE[type_index].name, 1_716_883_200_000).unwrap();
        mutate(&mut event, &path, replacement);
        match parse("msg_fuzz", 0, event.to_string().as_bytes()) {
            Ok(parsed) => prop_assert!(!parsed.event_type.is_empty() || matches!(parsed.change, Change::Ignore)),
            Err(e) => prop_assert!(!e.kind().is_empty()),
        }
    }
}

#[test]
fn regression_a_huge_float_timestamp_is_refused_not_truncated() {
    let body = r#"{"type":"user.updated","timestamp":1e300,"data":{"id":"user_1","updated_at":1}}"#;
    assert_eq!(parse("msg_fuzz", 0, body.as_bytes()).unwrap_err().kind(), "invalid_envelope");
}

#[test]
fn regression_an_updated_at_beyond_the_calendar_is_refused() {
    let body = r#"{"type":"user.updated","data":{"id":"user_1","updated_at":9223372036854775807}}"#;
    assert_eq!(parse("msg_fuzz", 0, body.as_bytes()).unwrap_err().kind(), "missing_updated_at");
}

use clerk_sync_core::samples;

use super::*;

fn parse_value(v: serde_json::Value) -> Result<Event, ParseError> {
    parse("msg_test", 0, v.to_string().as_bytes())
}

#[test]
fn every_catalogue_type_is_recognised_and_parses_to_a_change_exactly_when_the_catalogue_stores_it() {
    for t in crate::catalogue::names() {
        let event = parse_value(samples::sample(t, 1_716_883_200_000).unwrap()).unwrap();
        assert_eq!(event.event_type, t);
        assert_eq!(crate::catalogue::label(t), t);
        let handling = crate::catalogue::find(t).unwrap().handling;
        let stored = matches!(handling, crate::catalogue::Handling::Stored(_));
        assert_eq!(!matches!(event.change, Change::Ignore), stored, "{t}");
    }
    for t in ["session.created", "session.pending", "session.ended", "session.removed", "session.revoked"] {
        assert!(matches!(crate::catalogue::find(t).unwrap().handling, crate::catalogue::Handling::Stored(_)), "{t}");
    }
    // Their bodies carry one-time codes: never stored.
    for t in ["email.created", "sms.created"] {
        assert_eq!(crate::catalogue::find(t).unwrap().handling, crate::catalogue::Handling::Ignored, "{t}");
    }
}

#[test]
fn a_session_without_updated_at_is_refused_and_one_with_nulls_parses() {
    let no_version = samples::envelope("session.ended", serde_json::json!({"id": "sess_1", "status": "ended"}), 1);
    assert!(matches!(parse_value(no_version), Err(ParseError::MissingUpdatedAt(_))));
    let nulls = serde_json::json!({"id": "sess_1", "user_id": null, "client_id": null, "status": null,
        "latest_activity": null, "last_active_at": null, "expire_at": null, "updated_at": 5});
    assert!(matches!(
        parse_value(samples::envelope("session.created", nulls, 1)).unwrap().change,
        Change::UpsertSession(_)
    ));
    let hostile = samples::envelope("session.revoked", serde_json::json!({"id": 7, "updated_at": 5}), 1);
    assert!(matches!(parse_value(hostile), Err(ParseError::Data { .. })));
}

#[test]
fn an_unknown_future_type_is_ignored_not_rejected() {
    let event = parse_value(samples::envelope("user.teleported", serde_json::json!({"id": "user_1"}), 1)).unwrap();
    assert!(matches!(event.change, Change::Ignore));
    assert_eq!(crate::catalogue::label("user.teleported"), "unknown");
}

#[test]
fn the_primary_email_is_resolved_through_its_id_not_the_first_entry() {
    let event = parse_value(samples::sample("user.created", 1_716_883_200_000).unwrap()).unwrap();
    let Change::UpsertUser(user) = event.change else { panic!("a user") };
    assert_eq!(user.primary_email(), Some("sam@example.com"));
    assert_eq!(user.primary_phone(), Some("+15555550100"));
}

#[test]
fn an_envelope_timestamp_in_seconds_is_normalised_to_milliseconds() {
    assert_eq!(envelope_ms(1_716_883_200), 1_716_883_200_000);
    assert_eq!(envelope_ms(1_716_883_200_123), 1_716_883_200_123);
    let event = parse_value(samples::sample("user.deleted", 1_716_883_200).unwrap()).unwrap();
    assert_eq!(event.occurred_at_ms, Some(1_716_883_200_000));
}

#[test]
fn a_membership_carries_its_user_id_and_nested_organization() {
    let event = parse_value(samples::sample("organizationMembership.updated", 1_716_883_200_000).unwrap()).unwrap();
    let Change::UpsertMembership { membership, organization } = event.change else { panic!("a membership") };
    assert_eq!(membership.public_user_data.and_then(|p| p.user_id).as_deref(), Some("user_2sampleUser0000000000"));
    assert_eq!(organization.map(|o| o.id).as_deref(), Some("org_2sampleOrg00000000000"));
}

#[test]
fn unknown_fields_and_missing_optional_fields_are_fine() {
    let data = serde_json::json!({"id": "user_1", "updated_at": 5, "brand_new_field": {"x": [1]}});
    let event = parse_value(samples::envelope("user.updated", data, 1)).unwrap();
    assert!(matches!(event.change, Change::UpsertUser(_)));
    let no_instance =
        serde_json::json!({"type": "user.deleted", "data": {"id": "user_1", "deleted": true}, "object": "event"});
    assert!(matches!(parse_value(no_instance).unwrap().change, Change::DeleteUser(_)));
}

#[test]
fn malformed_payloads_are_permanent_errors_with_a_kind() {
    let cases = [
        (serde_json::json!({"type": "user.created"}), "invalid_envelope"),
        (
            samples::envelope("user.created", serde_json::json!({"first_name": "no id", "updated_at": 1}), 1),
            "invalid_payload",
        ),
        (samples::envelope("user.updated", serde_json::json!({"id": 42, "updated_at": 1}), 1), "invalid_payload"),
        (
            samples::envelope("user.updated", serde_json::json!({"id": "user_1", "updated_at": "yesterday"}), 1),
            "invalid_payload",
        ),
        (samples::envelope("user.updated", serde_json::json!({"id": "user_1"}), 1), "missing_updated_at"),
        (samples::envelope("organization.deleted", serde_json::json!({"deleted": true}), 1), "invalid_payload"),
        (samples::envelope("user.created", serde_json::Value::Null, 1), "invalid_payload"),
    ];
    for (body, kind) in cases {
        assert_eq!(parse_value(body.clone()).unwrap_err().kind(), kind, "{body}");
    }
    assert_eq!(parse("msg_test", 0, b"\xff not json").unwrap_err().kind(), "invalid_envelope");
}

#[test]
fn explicit_nulls_in_optional_fields_are_accepted() {
    let data = serde_json::json!({"id": "user_1", "updated_at": 5, "email_addresses": null, "first_name": null, "public_metadata": null});
    let Change::UpsertUser(user) = parse_value(samples::envelope("user.updated", data, 1)).unwrap().change else {
        panic!("a user")
    };
    assert_eq!(user.primary_email(), None);
}

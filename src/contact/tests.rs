use super::*;
use serde_json::Value;

const LIST: &str = "c2a2b8b4-0000-4000-8000-000000000001";

fn defaults() -> Vec<Uuid> {
    vec![Uuid::parse_str("c2a2b8b4-0000-4000-8000-0000000000ff").unwrap()]
}

fn msg(contact: Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "contact.upsert", "version": 1, "id": "m-1",
        "occurred_at": "2026-11-23T10:00:00Z", "contact": contact,
    }))
    .unwrap()
}

fn code(body: &[u8]) -> &'static str {
    decode(body, &defaults()).unwrap_err().code
}

#[test]
fn design_example_decodes() {
    let body = br#"{
      "type": "contact.upsert", "version": 1, "id": "6f1c1f3e-6a53-4c3e-9a57-2b1f6f0c9e11",
      "occurred_at": "2026-11-23T10:00:00Z", "account": "default", "consent": "implicit",
      "unknown_top_level": {"ignored": true},
      "contact": {
        "email": "Ada@Example.com", "first_name": "Ada", "last_name": "Lovelace",
        "job_title": "Analyst", "company_name": "Engines Ltd", "phone": "+1 555 0100",
        "birthday_month": 12, "birthday_day": 10, "anniversary": "2020-06-01",
        "address": { "street": "1 Main St", "city": "London", "state": "", "postal_code": "N1", "country": "GB" },
        "custom_fields": { "loyalty_tier": "gold" },
        "list_ids": ["c2a2b8b4-0000-4000-8000-000000000001"]
      }
    }"#;
    let c = decode(body, &defaults()).unwrap();
    assert_eq!(c.email, "ada@example.com");
    assert_eq!(c.fields.birthday, Some((12, 10)));
    assert_eq!(c.fields.address().postal_code.as_deref(), Some("N1"));
    assert_eq!(c.fields.custom_fields["loyalty_tier"], "gold");
    assert_eq!(c.list_ids, vec![Uuid::parse_str(LIST).unwrap()]);
    assert_eq!(c.consent, Consent::Implicit);
    assert_eq!(c.account, "default");
}

#[test]
fn defaults_apply_for_lists_account_consent() {
    let c = decode(&msg(serde_json::json!({"email": "a@b.co"})), &defaults()).unwrap();
    assert_eq!(c.list_ids, defaults());
    let e = decode(&msg(serde_json::json!({"email": "a@b.co"})), &[]).unwrap_err();
    assert_eq!(e.code, "no_lists");
}

#[test]
fn malformed_input_has_a_reason_each() {
    assert_eq!(code(b"not json"), "invalid_json");
    assert_eq!(code(b"[1,2]"), "invalid_json");
    assert_eq!(code(&[0xff, 0xfe, b'{']), "invalid_json");
    let deep = "[".repeat(5_000) + &"]".repeat(5_000);
    assert_eq!(code(deep.as_bytes()), "invalid_json");
    assert_eq!(code(&vec![b' '; 1 << 20]), "message_too_large");
    assert_eq!(
        code(br#"{"type":"contact.delete","version":1,"id":"x","occurred_at":"2026-11-23T10:00:00Z","contact":{"email":"a@b.co"}}"#),
        "unknown_type"
    );
    assert_eq!(
        code(br#"{"type":"contact.upsert","version":2,"id":"x","occurred_at":"2026-11-23T10:00:00Z","contact":{"email":"a@b.co"}}"#),
        "unsupported_version"
    );
    assert_eq!(
        code(br#"{"type":"contact.upsert","version":"1","id":"x","occurred_at":"2026-11-23T10:00:00Z","contact":{"email":"a@b.co"}}"#),
        "wrong_type"
    );
    assert_eq!(
        code(br#"{"type":"contact.upsert","version":1,"occurred_at":"2026-11-23T10:00:00Z","contact":{"email":"a@b.co"}}"#),
        "missing_field"
    );
    assert_eq!(
        code(&msg(serde_json::json!({"first_name": "A"}))),
        "missing_field"
    );
    assert_eq!(code(&msg(serde_json::json!({"email": 5}))), "wrong_type");
    assert_eq!(
        code(&msg(serde_json::json!({"email": "nope"}))),
        "invalid_email"
    );
    assert_eq!(
        code(&msg(serde_json::json!({"email": "a@localhost"}))),
        "invalid_email"
    );
    let long = format!("{}@example.com", "a".repeat(45));
    assert_eq!(
        code(&msg(serde_json::json!({"email": long}))),
        "email_too_long"
    );
    assert_eq!(
        code(&msg(
            serde_json::json!({"email": "a@b.co", "first_name": "x".repeat(51)})
        )),
        "field_too_long"
    );
    assert_eq!(
        code(&msg(
            serde_json::json!({"email": "a@b.co", "birthday_month": 13, "birthday_day": 1})
        )),
        "invalid_field"
    );
    assert_eq!(
        code(&msg(
            serde_json::json!({"email": "a@b.co", "birthday_month": 3})
        )),
        "invalid_field"
    );
    assert_eq!(
        code(&msg(
            serde_json::json!({"email": "a@b.co", "list_ids": ["not-a-uuid"]})
        )),
        "invalid_field"
    );
    let many: serde_json::Map<String, Value> = (0..26)
        .map(|i| (format!("f{i}"), Value::from("v")))
        .collect();
    assert_eq!(
        code(&msg(
            serde_json::json!({"email": "a@b.co", "custom_fields": many})
        )),
        "field_too_long"
    );
    assert_eq!(
        code(&msg(
            serde_json::json!({"email": "a@b.co", "address": {"city": "c".repeat(51)}})
        )),
        "field_too_long"
    );
}

#[test]
fn rejections_never_name_the_email() {
    let e = decode(
        &msg(
            serde_json::json!({"email": "secret.person@example.com", "first_name": "x".repeat(60)}),
        ),
        &defaults(),
    )
    .unwrap_err();
    assert!(!e.detail.contains("secret.person"));
}

fn at(ts: &str, fields: Value) -> Contact {
    let mut c = serde_json::json!({"email": "a@b.co"});
    c.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let body = serde_json::to_vec(&serde_json::json!({
        "type": "contact.upsert", "version": 1, "id": ts, "occurred_at": ts, "contact": c,
    }))
    .unwrap();
    decode(&body, &defaults()).unwrap()
}

#[test]
fn merge_is_field_by_field_newest_wins() {
    let old = at(
        "2026-11-23T10:00:00Z",
        serde_json::json!({"first_name": "Old", "last_name": "Keep", "custom_fields": {"a": "1", "b": "1"}}),
    );
    let new = at(
        "2026-11-23T11:00:00Z",
        serde_json::json!({"first_name": "New", "custom_fields": {"b": "2"}}),
    );
    // Arrival order must not matter.
    for (first, second) in [(old.clone(), new.clone()), (new.clone(), old.clone())] {
        let mut m = first;
        m.merge(second);
        assert_eq!(m.fields.first_name.as_deref(), Some("New"));
        assert_eq!(m.fields.last_name.as_deref(), Some("Keep"));
        assert_eq!(m.fields.custom_fields["a"], "1");
        assert_eq!(m.fields.custom_fields["b"], "2");
        assert_eq!(m.id, "2026-11-23T11:00:00Z");
    }
    // Equal timestamps: the later delivery wins.
    let mut a = at(
        "2026-11-23T10:00:00Z",
        serde_json::json!({"first_name": "A"}),
    );
    a.merge(at(
        "2026-11-23T10:00:00Z",
        serde_json::json!({"first_name": "B"}),
    ));
    assert_eq!(a.fields.first_name.as_deref(), Some("B"));
}

#[test]
fn addresses_merge_field_by_field() {
    let old = at(
        "2026-11-23T10:00:00Z",
        serde_json::json!({"address": {"street": "1 Old St", "city": "Leeds", "country": "GB"}}),
    );
    let new = at(
        "2026-11-23T11:00:00Z",
        serde_json::json!({"address": {"city": "York", "postal_code": "YO1"}}),
    );
    let plain = at(
        "2026-11-23T12:00:00Z",
        serde_json::json!({"first_name": "A"}),
    );
    // Boxing the address must not turn the per-field merge into a whole-address replace.
    for (first, second) in [(old.clone(), new.clone()), (new.clone(), old.clone())] {
        let mut m = first;
        m.merge(second);
        let a = m.fields.address();
        assert_eq!(a.street.as_deref(), Some("1 Old St"));
        assert_eq!(a.city.as_deref(), Some("York"));
        assert_eq!(a.postal_code.as_deref(), Some("YO1"));
        assert_eq!(a.country.as_deref(), Some("GB"));
        assert_eq!(a.state, None);
    }
    // A newer event without an address keeps the older one, in either order.
    for (first, second) in [(old.clone(), plain.clone()), (plain.clone(), old.clone())] {
        let mut m = first;
        m.merge(second);
        assert_eq!(m.fields.address, old.fields.address);
        assert_eq!(m.fields.first_name.as_deref(), Some("A"));
    }
}

#[test]
fn an_address_without_fields_is_no_address() {
    for address in [serde_json::json!({}), serde_json::json!({"city": null})] {
        let c = at(
            "2026-11-23T10:00:00Z",
            serde_json::json!({"address": address}),
        );
        assert_eq!(c.fields.address, None);
        assert!(c.fields.is_empty());
    }
    // Dropping every address field a newer event set frees the box; names round-trip.
    let mut c = at(
        "2026-11-23T10:00:00Z",
        serde_json::json!({"first_name": "A", "address": {"street": "1 Main", "city": "Leeds"}}),
    );
    assert_eq!(c.fields.names(), ["first_name", "street", "city"]);
    c.fields.drop_named(&["street".to_string()]);
    assert_eq!(c.fields.address().city.as_deref(), Some("Leeds"));
    assert_eq!(c.fields.address().street, None);
    c.fields
        .drop_named(&["city".to_string(), "first_name".to_string()]);
    assert_eq!(c.fields.address, None);
    assert!(c.fields.is_empty());
}

/// One decoded `Contact` is held per unacked delivery, up to 65,535 at once (BENCHMARKS.md,
/// figure 4: heaptrack put the struct alone at 416 bytes, mostly empty `Option<String>` slots).
/// The address is boxed and the text fields are `Box<str>` to keep it small; this fails if a new
/// inline field or a switch back to `String` quietly grows it again.
#[test]
fn a_held_contact_stays_small() {
    let size = std::mem::size_of::<Contact>();
    // 256 bytes when this was written (416 before).
    assert!(size <= 256, "Contact is {size} bytes; keep it at most 256");
}

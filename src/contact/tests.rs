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

fn code(body: &[u8]) -> crate::contact::Reason {
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
        code(br#"{"type":"contact.merge","version":1,"id":"x","occurred_at":"2026-11-23T10:00:00Z","contact":{"email":"a@b.co"}}"#),
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

/// Issue 15: the consent message types share the envelope; each has its own required parts.
#[test]
fn consent_messages_decode_with_their_own_rules() {
    let lists = [Uuid::nil()];
    let msg = |t: &str, extra: serde_json::Value| {
        let mut v = serde_json::json!({
            "type": t, "version": 1, "id": "m1", "occurred_at": "2026-11-23T10:00:00Z",
            "account": "acme", "contact": {"email": "Ada@Example.com", "first_name": "ignored"}
        });
        for (k, x) in extra.as_object().unwrap() {
            if k == "list_ids" {
                v["contact"]["list_ids"] = x.clone();
            } else {
                v[k] = x.clone();
            }
        }
        decode(&serde_json::to_vec(&v).unwrap(), &lists)
    };
    let u = msg(
        "contact.unsubscribe",
        serde_json::json!({"reason": " moved away "}),
    )
    .unwrap();
    assert_eq!(u.action, Action::Unsubscribe);
    assert_eq!(u.email, "ada@example.com");
    assert_eq!(u.account, "acme");
    assert_eq!(u.reason.as_deref().map(|r| &**r), Some("moved away"));
    assert!(
        u.fields.is_empty() && u.list_ids.is_empty(),
        "no fields, no default lists"
    );
    assert_eq!(
        msg(
            "contact.unsubscribe",
            serde_json::json!({"reason": "r".repeat(256)})
        )
        .unwrap_err()
        .code,
        "field_too_long"
    );
    let d = msg("contact.delete", serde_json::json!({})).unwrap();
    assert_eq!(d.action, Action::Delete);
    assert!(d.list_ids.is_empty());
    let l = Uuid::new_v4();
    let r = msg(
        "contact.remove_lists",
        serde_json::json!({"list_ids": [l, l]}),
    )
    .unwrap();
    assert_eq!(
        (r.action, r.list_ids.clone()),
        (Action::RemoveLists, vec![l])
    );
    // No default lists for a removal: it must name them.
    assert_eq!(
        msg("contact.remove_lists", serde_json::json!({}))
            .unwrap_err()
            .code,
        "no_lists"
    );
    assert_eq!(
        msg(
            "contact.remove_lists",
            serde_json::json!({"list_ids": ["x"]})
        )
        .unwrap_err()
        .code,
        "invalid_field"
    );
    // The envelope rules hold for every type.
    let mut bad = serde_json::json!({"type": "contact.delete", "version": 2, "id": "m",
        "occurred_at": "2026-11-23T10:00:00Z", "contact": {"email": "a@b.co"}});
    assert_eq!(
        decode(&serde_json::to_vec(&bad).unwrap(), &lists)
            .unwrap_err()
            .code,
        "unsupported_version"
    );
    bad["version"] = 1.into();
    bad["contact"]["email"] = "nope".into();
    assert_eq!(
        decode(&serde_json::to_vec(&bad).unwrap(), &lists)
            .unwrap_err()
            .code,
        "invalid_email"
    );
}

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
        assert_eq!(&*m.id, "2026-11-23T11:00:00Z");
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
    // 256 bytes when this was written (416 before); 264 since issue 15 (the action, in padding,
    // and an unsubscribe's reason, a thin boxed slot).
    assert!(size <= 264, "Contact is {size} bytes; keep it at most 264");
}

/// The issue-11 case inside one replica: t1 {first v0, last Turing} and t3 {first v1} coalesce,
/// and the merged entry keeps last_name's own time (t1), not t3.
#[test]
fn a_merged_entry_keeps_each_fields_own_time() {
    let t1 = at(
        "2026-11-23T10:01:00Z",
        serde_json::json!({"first_name": "v0", "last_name": "Turing"}),
    );
    let t3 = at(
        "2026-11-23T10:03:00Z",
        serde_json::json!({"first_name": "v1"}),
    );
    let mut m = t1.clone();
    m.merge(t3.clone());
    let ms = |c: &Contact| unix_ms(c.occurred_at);
    let stamps = m.field_stamps();
    assert_eq!(
        stamps,
        [
            ("first_name".to_string(), ms(&t3)),
            ("last_name".to_string(), ms(&t1))
        ]
    );
    assert_eq!(m.occurred_at, t3.occurred_at);
    // A single event carries no per-field map (it costs nothing on the common path).
    assert_eq!(t1.stamps, None);
}

mod merge_property {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 5] = ["first_name", "last_name", "city", "cf:a", "birthday"];

    /// One event: its minute (its `occurred_at`) and which of `NAMES` it sets.
    fn event(minute: usize, sets: &[bool]) -> Contact {
        let mut c = serde_json::Map::new();
        let v = format!("m{minute}");
        for (name, set) in NAMES.iter().zip(sets) {
            if !set {
                continue;
            }
            match *name {
                "city" => {
                    c.insert("address".into(), serde_json::json!({"city": v}));
                }
                "cf:a" => {
                    c.insert("custom_fields".into(), serde_json::json!({"a": v}));
                }
                "birthday" => {
                    c.insert("birthday_month".into(), serde_json::json!(1 + minute % 12));
                    c.insert("birthday_day".into(), serde_json::json!(1 + minute % 28));
                }
                n => {
                    c.insert(n.into(), serde_json::json!(v));
                }
            }
        }
        at(
            &format!("2026-11-23T10:{minute:02}:00Z"),
            serde_json::Value::Object(c),
        )
    }

    proptest! {
        /// However events are split into coalesced groups and in whatever order the groups
        /// meet, the result equals folding every event in `occurred_at` order, field by field.
        #[test]
        fn merging_equals_a_fold_in_time_order(
            sets in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 5), 1..8),
            order in any::<u64>(),
            cuts in proptest::collection::vec(any::<bool>(), 8),
        ) {
            let events: Vec<Contact> =
                sets.iter().enumerate().map(|(i, s)| event(i, s)).collect();
            // Reference: in time order, each event's set fields replace the previous value.
            let mut reference = Fields::default();
            for e in &events {
                for name in e.fields.names() {
                    let mut from = e.fields.clone();
                    reference.move_named(&mut from, &name);
                }
            }
            // Delivery order: a permutation of the events, cut into groups.
            let mut shuffled = events.clone();
            let mut seed = order;
            for i in (1..shuffled.len()).rev() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (seed >> 33) as usize % (i + 1));
            }
            let mut groups: Vec<Contact> = Vec::new();
            let mut current: Option<Contact> = None;
            for (i, e) in shuffled.into_iter().enumerate() {
                match current.as_mut() {
                    Some(c) => c.merge(e),
                    None => current = Some(e),
                }
                if cuts[i] {
                    groups.extend(current.take());
                }
            }
            groups.extend(current.take());
            // The groups meet in reverse (another replica, another batch).
            let mut merged = groups.pop().unwrap();
            while let Some(g) = groups.pop() {
                merged.merge(g);
            }
            prop_assert_eq!(&merged.fields.first_name, &reference.first_name);
            prop_assert_eq!(&merged.fields.last_name, &reference.last_name);
            prop_assert_eq!(&merged.fields.birthday, &reference.birthday);
            prop_assert_eq!(&merged.fields.address().city, &reference.address().city);
            prop_assert_eq!(&merged.fields.custom_fields, &reference.custom_fields);
            let newest = events.last().unwrap();
            prop_assert_eq!(merged.occurred_at, newest.occurred_at);
            prop_assert_eq!(&merged.id, &newest.id);
            // Every field's time is that of the newest event that set it.
            for (name, t) in merged.field_stamps() {
                let want = events
                    .iter()
                    .rev()
                    .find(|e| e.fields.names().contains(&name))
                    .map(|e| unix_ms(e.occurred_at));
                prop_assert_eq!(Some(t), want, "{}", name);
            }
        }
    }
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

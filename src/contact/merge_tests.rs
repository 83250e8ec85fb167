//! Merging: newest wins field by field, within one replica (the coalescing batcher) and as a
//! property against a fold in time order.

use super::*;
use serde_json::Value;

fn defaults() -> Vec<Uuid> {
    vec![Uuid::parse_str("c2a2b8b4-0000-4000-8000-0000000000ff").unwrap()]
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

//! Message bodies as producers publish them (the contract in `schemas/`).

use serde_json::{Value, json};
use uuid::Uuid;

/// A `contact.upsert` body: `email` plus the fields of `contact` (an object; anything else adds
/// nothing), with a fresh message id.
pub fn message(email: &str, occurred_at: &str, contact: Value) -> Vec<u8> {
    upsert(email, occurred_at, None, contact)
}

/// [`message`] with a top-level `consent` (`implicit` or `explicit`) when given.
pub fn upsert(email: &str, occurred_at: &str, consent: Option<&str>, contact: Value) -> Vec<u8> {
    let mut c = json!({ "email": email });
    if let Value::Object(extra) = contact {
        c.as_object_mut().expect("an object").extend(extra);
    }
    let mut v = json!({
        "type": "contact.upsert",
        "version": 1,
        "id": Uuid::new_v4().to_string(),
        "occurred_at": occurred_at,
    });
    if let Some(consent) = consent {
        v["consent"] = json!(consent);
    }
    v["contact"] = c;
    serde_json::to_vec(&v).expect("JSON of JSON values")
}

/// A consent message body (`contact.unsubscribe`, `contact.remove_lists`, `contact.delete`):
/// `kind` for `email`, with a fresh message id. `extra`'s `list_ids` goes into `contact`; its
/// other keys are top-level.
pub fn action(kind: &str, email: &str, occurred_at: &str, extra: Value) -> Vec<u8> {
    let mut v = json!({
        "type": kind, "version": 1, "id": Uuid::new_v4().to_string(),
        "occurred_at": occurred_at, "contact": {"email": email},
    });
    if let Value::Object(m) = extra {
        for (k, x) in m {
            if k == "list_ids" {
                v["contact"]["list_ids"] = x;
            } else {
                v[k] = x;
            }
        }
    }
    serde_json::to_vec(&v).expect("JSON of JSON values")
}

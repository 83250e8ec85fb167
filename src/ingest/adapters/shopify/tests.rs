use super::*;
use axum::http::{HeaderMap, HeaderValue};

const SECRET: &str = "shpss_test_secret";

/// The customer resource as Shopify's webhooks send it (shape of the REST reference example).
fn customer() -> Value {
    serde_json::from_str(include_str!(
        "../../../../tests/fixtures/shopify_customer.json"
    ))
    .unwrap()
}

fn adapter(pairs: &[(&str, &str)]) -> Shopify {
    let mut all = vec![("CCSYNC_INGEST__SHOPIFY_SECRET", SECRET)];
    all.extend_from_slice(pairs);
    let s = crate::config::Settings::from_pairs(all).unwrap();
    Shopify::new(SecretString::from(SECRET.to_string()), &s.ingest)
}

fn headers(topic: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-shopify-topic", HeaderValue::from_str(topic).unwrap());
    h.insert(
        "x-shopify-webhook-id",
        HeaderValue::from_static("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
    );
    h.insert(
        "x-shopify-shop-domain",
        HeaderValue::from_static("Example-Shop.myshopify.com"),
    );
    h
}

fn map_with(a: &Shopify, h: &HeaderMap, c: &Value) -> Mapped {
    let body = serde_json::to_vec(c).unwrap();
    let w = Webhook {
        headers: h,
        body: &body,
        now: time::macros::datetime!(2026-03-01 12:00 UTC),
    };
    a.map(&w).unwrap()
}

/// The published message, decoded back as JSON (and checked with the worker's decoder).
fn message(a: &Shopify, c: &Value) -> Value {
    match map_with(a, &headers("customers/create"), c) {
        Mapped::Publish { id, body } => {
            assert_eq!(id, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
            crate::contact::decode(&body, &[Uuid::from_u128(7)]).expect("decodable");
            serde_json::from_slice(&body).unwrap()
        }
        other => panic!("not published: {other:?}"),
    }
}

#[test]
fn the_signature_is_checked_on_the_raw_body() {
    let a = adapter(&[]);
    let body = br#"{"id":1}"#;
    let mut h = headers("customers/create");
    h.insert(
        "x-shopify-hmac-sha256",
        HeaderValue::from_str(&sign::shopify_header(SECRET, body)).unwrap(),
    );
    let w = Webhook {
        headers: &h,
        body,
        now: OffsetDateTime::UNIX_EPOCH,
    };
    assert_eq!(a.verify(&w), Ok(()));
    let w = Webhook {
        headers: &h,
        body: b"{\"id\":2}",
        now: OffsetDateTime::UNIX_EPOCH,
    };
    assert_eq!(a.verify(&w), Err(SignatureError::Bad));
}

#[test]
fn id_type_and_time_come_from_the_headers_and_updated_at() {
    let m = message(&adapter(&[]), &customer());
    assert_eq!(m["type"], "contact.upsert");
    assert_eq!(m["version"], 1);
    assert_eq!(m["id"], "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
    // updated_at 2026-02-27T10:15:00-05:00, in UTC.
    assert_eq!(m["occurred_at"], "2026-02-27T15:15:00Z");
    let mut c = customer();
    c.as_object_mut().unwrap().remove("updated_at");
    let m = message(&adapter(&[]), &c);
    assert_eq!(m["occurred_at"], "2026-03-01T12:00:00Z", "arrival time");
}

#[test]
fn email_names_phone_and_company() {
    let m = message(&adapter(&[]), &customer());
    let c = &m["contact"];
    assert_eq!(c["email"], "bob.norman@example.com");
    assert_eq!(c["first_name"], "Bob");
    assert_eq!(c["last_name"], "Norman");
    assert_eq!(c["phone"], "+16136120707");
    assert_eq!(c["company_name"], "Norman Fences");
    // No customer phone: the default address's.
    let mut cu = customer();
    cu["phone"] = Value::Null;
    let m = message(&adapter(&[]), &cu);
    assert_eq!(m["contact"]["phone"], "555-625-1199");
    // Over-long names are cut to CC's 50 characters, not refused.
    cu["first_name"] = "x".repeat(80).into();
    let m = message(&adapter(&[]), &cu);
    assert_eq!(m["contact"]["first_name"].as_str().unwrap().len(), 50);
}

#[test]
fn the_default_address_becomes_the_address() {
    let m = message(&adapter(&[]), &customer());
    assert_eq!(
        m["contact"]["address"],
        json!({
            "street": "Chestnut Street 92, Suite 3",
            "city": "Louisville",
            "state": "Kentucky",
            "postal_code": "40202",
            "country": "US",
        })
    );
    let mut c = customer();
    c.as_object_mut().unwrap().remove("default_address");
    let m = message(&adapter(&[]), &c);
    assert!(m["contact"].get("address").is_none());
}

/// Issue 16: an unsubscribed customer becomes a `contact.unsubscribe` (issue 15's type), with
/// the email only, so CC's contact ends unsubscribed and an older upsert cannot revive it.
#[test]
fn an_unsubscribed_customer_becomes_an_unsubscribe() {
    let mut c = customer();
    c["email_marketing_consent"] =
        json!({"state": "unsubscribed", "opt_in_level": null, "consent_updated_at": null});
    let m = message(&adapter(&[]), &c);
    assert_eq!(m["type"], "contact.unsubscribe");
    assert_eq!(m["id"], "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
    assert_eq!(m["occurred_at"], "2026-02-27T15:15:00Z");
    assert_eq!(m["contact"], json!({"email": "bob.norman@example.com"}));
    let body = serde_json::to_vec(&m).unwrap();
    let decoded = crate::contact::decode(&body, &[]).expect("decodable without lists");
    assert_eq!(decoded.action, crate::contact::Action::Unsubscribe);
}

#[test]
fn consent_is_explicit_only_for_an_opt_in() {
    let consent = |state: &str, level: Value| {
        let mut c = customer();
        c["email_marketing_consent"] =
            json!({"state": state, "opt_in_level": level, "consent_updated_at": null});
        message(&adapter(&[]), &c)["consent"].clone()
    };
    assert_eq!(consent("subscribed", "single_opt_in".into()), "explicit");
    assert_eq!(consent("subscribed", "confirmed_opt_in".into()), "explicit");
    assert_eq!(consent("subscribed", "unknown".into()), "implicit");
    assert_eq!(
        consent("not_subscribed", "single_opt_in".into()),
        "implicit"
    );
    assert_eq!(consent("pending", "confirmed_opt_in".into()), "implicit");
    // 2025-01 and later: no consent object at all.
    let mut c = customer();
    c.as_object_mut().unwrap().remove("email_marketing_consent");
    assert_eq!(message(&adapter(&[]), &c)["consent"], "implicit");
    // Older versions: accepts_marketing with marketing_opt_in_level.
    c["accepts_marketing"] = true.into();
    c["marketing_opt_in_level"] = "confirmed_opt_in".into();
    assert_eq!(message(&adapter(&[]), &c)["consent"], "explicit");
}

#[test]
fn the_shop_picks_the_account_and_lists_and_tags_are_configurable() {
    let m = message(&adapter(&[]), &customer());
    assert_eq!(m["account"], "default");
    assert!(m["contact"].get("list_ids").is_none());
    assert!(
        m["contact"].get("custom_fields").is_none(),
        "tags dropped by default"
    );
    let list = "c2a2b8b4-0000-4000-8000-000000000001";
    let a = adapter(&[
        (
            "CCSYNC_INGEST__SHOPIFY_ACCOUNTS",
            "example-shop.myshopify.com=acme, other.myshopify.com=beta",
        ),
        ("CCSYNC_INGEST__SHOPIFY_LIST_IDS", list),
        ("CCSYNC_INGEST__SHOPIFY_TAGS_FIELD", "shopify_tags"),
    ]);
    let m = message(&a, &customer());
    assert_eq!(m["account"], "acme");
    assert_eq!(m["contact"]["list_ids"], json!([list]));
    assert_eq!(
        m["contact"]["custom_fields"],
        json!({"shopify_tags": "VIP, newsletter"})
    );
}

#[test]
fn other_topics_and_customers_without_email_are_skipped() {
    let a = adapter(&[]);
    assert!(matches!(
        map_with(&a, &headers("orders/create"), &customer()),
        Mapped::Skip {
            reason: "unknown_topic",
            ..
        }
    ));
    let mut c = customer();
    c["email"] = Value::Null;
    assert!(matches!(
        map_with(&a, &headers("customers/update"), &c),
        Mapped::Skip {
            reason: "no_email",
            ..
        }
    ));
    let mut h = headers("customers/create");
    h.remove("x-shopify-webhook-id");
    let body = serde_json::to_vec(&customer()).unwrap();
    let w = Webhook {
        headers: &h,
        body: &body,
        now: OffsetDateTime::UNIX_EPOCH,
    };
    assert!(a.map(&w).unwrap_err().contains("X-Shopify-Webhook-Id"));
}

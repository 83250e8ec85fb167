//! Shopify `customers/create` and `customers/update` webhooks → `contact.upsert`.
//!
//! Headers (Shopify's webhook documentation): `X-Shopify-Topic`, `X-Shopify-Hmac-Sha256` (base64
//! HMAC-SHA256 of the raw body keyed with the app's client secret), `X-Shopify-Shop-Domain`,
//! `X-Shopify-Webhook-Id` (the same on every retry of one delivery: our message id, so retries
//! are the same message) and `X-Shopify-Triggered-At`.
//!
//! Mapping (the customer resource as webhooks send it):
//!
//! | Shopify | message |
//! |---|---|
//! | `X-Shopify-Webhook-Id` | `id` |
//! | `updated_at` (else `X-Shopify-Triggered-At`, else arrival) | `occurred_at` (UTC) |
//! | `X-Shopify-Shop-Domain` through `ingest.shopify_accounts` | `account` (else `default`) |
//! | `email` (none: acknowledged, counted `no_email`, not published) | `contact.email` |
//! | `first_name`, `last_name` (cut to CC's 50 characters) | the same |
//! | `phone`, else `default_address.phone` (dropped above CC's 25 characters) | `contact.phone` |
//! | `default_address.company` | `contact.company_name` |
//! | `default_address.address1` + `, ` + `address2` | `contact.address.street` |
//! | `default_address.city`, `province`, `zip` | `address.city`, `state`, `postal_code` |
//! | `default_address.country_code`, else `country` | `address.country` |
//! | `tags` (only with `ingest.shopify_tags_field`) | `custom_fields.<that field>` |
//! | `email_marketing_consent` `{state: subscribed, opt_in_level: single_opt_in or confirmed_opt_in}` (older API versions: `accepts_marketing` with `marketing_opt_in_level`) | `consent: explicit`; anything else `implicit` |
//! | `ingest.shopify_list_ids` | `contact.list_ids` (empty: the account's default lists) |
//!
//! Since Shopify's API version 2025-01 customer webhooks carry neither `email_marketing_consent`
//! nor `tags` (consent moved to the `customers/email_marketing_consent_update` topic): with those
//! versions every customer is `implicit`. An unsubscribed customer is sent as an implicit upsert
//! (which never re-subscribes a contact in CC) until a `contact.unsubscribe` message exists.
//! Other topics are acknowledged (200) and counted as `unknown_topic`.

use secrecy::SecretString;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::{Adapter, Mapped, Webhook};
use crate::config::IngestSettings;
use crate::ingest::sign::{self, SignatureError};

/// The topics this adapter maps.
pub const TOPICS: &[&str] = &["customers/create", "customers/update"];

pub struct Shopify {
    secret: SecretString,
    accounts: std::collections::BTreeMap<String, String>,
    list_ids: Vec<Uuid>,
    tags_field: Option<String>,
}

impl Shopify {
    pub fn new(secret: SecretString, s: &IngestSettings) -> Shopify {
        Shopify {
            secret,
            accounts: s.shopify_accounts.clone(),
            list_ids: s.shopify_list_ids.clone(),
            tags_field: s.shopify_tags_field.clone(),
        }
    }
}

impl Adapter for Shopify {
    fn name(&self) -> &'static str {
        "shopify"
    }

    fn signature_header(&self) -> &'static str {
        "X-Shopify-Hmac-Sha256"
    }

    fn verify(&self, w: &Webhook<'_>) -> Result<(), SignatureError> {
        sign::verify_shopify(w.header("x-shopify-hmac-sha256"), w.body, &self.secret)
    }

    fn map(&self, w: &Webhook<'_>) -> Result<Mapped, String> {
        let topic = w
            .header("x-shopify-topic")
            .ok_or("missing X-Shopify-Topic header")?;
        if !TOPICS.contains(&topic) {
            return Ok(Mapped::Skip {
                reason: "unknown_topic",
                detail: format!(
                    "topic {topic:?} is not mapped (only {}); acknowledged so Shopify does not retry it",
                    TOPICS.join(", ")
                ),
            });
        }
        let id = w
            .header("x-shopify-webhook-id")
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 200)
            .ok_or("missing X-Shopify-Webhook-Id header")?
            .to_string();
        let customer: Map<String, Value> = serde_json::from_slice(w.body)
            .map_err(|e| format!("the body is not a JSON customer object: {e}"))?;
        let Some(email) = text(customer.get("email"), usize::MAX) else {
            return Ok(Mapped::Skip {
                reason: "no_email",
                detail: "the customer has no email address; CC contacts need one".into(),
            });
        };
        let account = w
            .header("x-shopify-shop-domain")
            .map(str::to_ascii_lowercase)
            .and_then(|shop| self.accounts.get(&shop).cloned())
            .unwrap_or_else(|| "default".to_string());
        let occurred_at = [
            customer.get("updated_at").and_then(Value::as_str),
            w.header("x-shopify-triggered-at"),
        ]
        .into_iter()
        .flatten()
        .find_map(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
        .unwrap_or(w.now)
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| e.to_string())?;

        let empty = Map::new();
        let addr = customer
            .get("default_address")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut contact = Map::new();
        contact.insert("email".into(), email.into());
        put(
            &mut contact,
            "first_name",
            text(customer.get("first_name"), 50),
        );
        put(
            &mut contact,
            "last_name",
            text(customer.get("last_name"), 50),
        );
        let phone = [customer.get("phone"), addr.get("phone")]
            .into_iter()
            .find_map(|v| text(v, usize::MAX))
            .filter(|p| p.chars().count() <= 25);
        put(&mut contact, "phone", phone);
        put(&mut contact, "company_name", text(addr.get("company"), 50));
        let street = match (
            text(addr.get("address1"), usize::MAX),
            text(addr.get("address2"), usize::MAX),
        ) {
            (Some(a), Some(b)) => Some(format!("{a}, {b}")),
            (a, b) => a.or(b),
        }
        .map(|s| cut(&s, 255));
        let mut address = Map::new();
        put(&mut address, "street", street);
        put(&mut address, "city", text(addr.get("city"), 50));
        put(&mut address, "state", text(addr.get("province"), 50));
        put(&mut address, "postal_code", text(addr.get("zip"), 50));
        put(
            &mut address,
            "country",
            text(addr.get("country_code"), 50).or_else(|| text(addr.get("country"), 50)),
        );
        if !address.is_empty() {
            contact.insert("address".into(), Value::Object(address));
        }
        if let (Some(field), Some(tags)) = (&self.tags_field, text(customer.get("tags"), 255)) {
            contact.insert("custom_fields".into(), json!({ field: tags }));
        }
        if !self.list_ids.is_empty() {
            let ids: Vec<String> = self.list_ids.iter().map(Uuid::to_string).collect();
            contact.insert("list_ids".into(), ids.into());
        }
        let message = json!({
            "type": "contact.upsert",
            "version": 1,
            "id": id,
            "occurred_at": occurred_at,
            "account": account,
            "consent": if opted_in(&customer) { "explicit" } else { "implicit" },
            "contact": contact,
        });
        Ok(Mapped::Publish {
            id,
            body: serde_json::to_vec(&message).map_err(|e| e.to_string())?,
        })
    }
}

/// Explicit consent only for a customer Shopify records as having opted in (single or
/// confirmed opt-in); `unknown` opt-in levels (imported lists) and every other state are implicit.
fn opted_in(customer: &Map<String, Value>) -> bool {
    let level_ok = |v: Option<&Value>| {
        matches!(
            v.and_then(Value::as_str),
            Some("single_opt_in" | "confirmed_opt_in")
        )
    };
    match customer.get("email_marketing_consent") {
        Some(Value::Object(c)) => {
            c.get("state").and_then(Value::as_str) == Some("subscribed")
                && level_ok(c.get("opt_in_level"))
        }
        _ => {
            customer.get("accepts_marketing").and_then(Value::as_bool) == Some(true)
                && level_ok(customer.get("marketing_opt_in_level"))
        }
    }
}

/// A trimmed, non-empty string cut to `max` characters.
fn text(v: Option<&Value>, max: usize) -> Option<String> {
    let s = v?.as_str()?.trim();
    (!s.is_empty()).then(|| cut(s, max))
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<String>) {
    if let Some(v) = v {
        m.insert(key.into(), v.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    const SECRET: &str = "shpss_test_secret";

    /// The customer resource as Shopify's webhooks send it (shape of the REST reference example).
    fn customer() -> Value {
        serde_json::from_str(include_str!(
            "../../../tests/fixtures/shopify_customer.json"
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
        assert_eq!(consent("unsubscribed", Value::Null), "implicit");
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
}

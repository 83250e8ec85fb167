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
//! versions every customer is `implicit`, and that topic is not mapped (acknowledged as
//! `unknown_topic`). A customer whose `email_marketing_consent.state` is `unsubscribed` becomes a
//! `contact.unsubscribe` (issue 15's message type: CC's contact ends unsubscribed, and an older
//! upsert never re-creates it) instead of an upsert; `not_subscribed`, `pending` and the rest stay
//! implicit upserts, which never re-subscribe a contact in CC.
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
pub(crate) const TOPICS: &[&str] = &["customers/create", "customers/update"];

pub(crate) struct Shopify {
    secret: SecretString,
    accounts: std::collections::BTreeMap<String, String>,
    list_ids: Vec<Uuid>,
    tags_field: Option<String>,
}

impl Shopify {
    pub(crate) fn new(secret: SecretString, s: &IngestSettings) -> Shopify {
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

        if unsubscribed(&customer) {
            let message = json!({
                "type": "contact.unsubscribe",
                "version": 1,
                "id": id,
                "occurred_at": occurred_at,
                "account": account,
                "reason": "unsubscribed in Shopify",
                "contact": { "email": email },
            });
            return Ok(Mapped::Publish {
                id,
                body: serde_json::to_vec(&message).map_err(|e| e.to_string())?,
            });
        }
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

/// Shopify records the customer as having withdrawn email consent (`state: unsubscribed`; only
/// API versions before 2025-01 send the field on customer webhooks).
fn unsubscribed(customer: &Map<String, Value>) -> bool {
    customer
        .get("email_marketing_consent")
        .and_then(|c| c.get("state"))
        .and_then(Value::as_str)
        == Some("unsubscribed")
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
mod tests;

//! `GET /v3/contacts` (reference §5.1) and the `ContactResource` JSON; the writes,
//! `POST /v3/contacts/sign_up_form` and `PUT /v3/contacts/{contact_id}` (§5.3, §5.4), are in
//! `contact_writes.rs`.
//!
//! All of them see and write only the token's account's store (`store.rs`): its contacts, lists and
//! custom fields.
//!
//! Choices where the reference is silent:
//! - `GET /contacts` supports `email` (exact, case-insensitive), `status` (one or more,
//!   comma-separated), `lists`, `optout_after` / `optout_before` (RFC 3339, strictly after /
//!   before the contact's `opt_out_date`), `include`, `include_count`, `limit` (1–500, default
//!   50) and an opaque `cursor` for the `_links.next` page. Without `status`, every non-deleted
//!   contact (Swagger's default); `all` adds deleted ones, `deleted` lists only those, `active`
//!   leaves out deleted and unsubscribed ones, a permission value (`unsubscribed`, `implicit`,
//!   `explicit`, …) filters non-deleted contacts on it. Contacts come in email order.
//! - `PUT /contacts/{contact_id}` (reference §5.3) replaces the contact: top-level properties
//!   left out (`first_name`, `last_name`, `job_title`, `company_name`, `birthday_*`,
//!   `anniversary`) are cleared; sub-resources left out (`custom_fields`, `list_memberships`,
//!   `phone_numbers`, `street_addresses`) are kept, sent ones replace the old. `email_address`
//!   is required by the simulator (a contact without one is not simulated); its
//!   `permission_to_send: unsubscribed` opts the contact out with `opt_out_source` =
//!   `update_source` and the `opt_out_reason` sent; another permission on an unsubscribed
//!   contact opts it back in (CC allows it with the person's consent; the Swagger's warning).
//!   A deleted contact is revived, only with `update_source: Account` (else 400). A new address
//!   another contact has → 409. An unknown id → 404.
//! - `sign_up_form` without `email_address` (SMS-only contacts) is refused with 400 (not
//!   simulated). Unknown list or custom-field ids → 400. `birthday_month` and `birthday_day` must
//!   come together. `street_address` (any `kind`) maps onto the primary address columns.
//! - Fault `signup_conflict_rate`: that share of valid `sign_up_form` calls answer 409
//!   `[{"error_key":"contacts.api.conflict","error_message":"Conflict. You sent simultaneous
//!   requests…"}]` and write nothing (CC's concurrent-modification 409, reference §5.1).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::activity::settle;
use super::api::{cc_error, limit_param};
use super::faults::Ctx;
use super::jwt::Claims;
use super::state::{Shared, lock};
use super::store::{SimContact, Store};

type Sh = State<Arc<Shared>>;

const INCLUDES: &[&str] = &[
    "custom_fields",
    "list_memberships",
    "phone_numbers",
    "street_addresses",
    "taggings",
    "notes",
];
const STATUSES: &[&str] = &[
    "all",
    "active",
    "deleted",
    "not_set",
    "pending_confirmation",
    "temp_hold",
    "unsubscribed",
];

fn ts(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A `ContactResource` (Swagger) for `c`, with the requested sub-resources.
pub fn contact_json(c: &SimContact, store: &Store, include: &BTreeSet<&str>) -> Value {
    let f = |k: &str| c.fields.get(k).cloned();
    let mut v = json!({
        "contact_id": c.contact_id,
        "email_address": {
            "address": c.email,
            "permission_to_send": c.permission_to_send,
            "created_at": ts(c.created_at),
            "updated_at": ts(c.updated_at),
            "opt_in_source": c.opt_in_source,
            "opt_in_date": ts(c.created_at),
            "confirm_status": "off",
        },
        "create_source": c.opt_in_source,
        "update_source": "Account",
        "created_at": ts(c.created_at),
        "updated_at": ts(c.updated_at),
    });
    // Shown only once the contact opted out (Swagger `EmailAddressPut`).
    if let (Some(src), Some(at)) = (&c.opt_out_source, c.opt_out_date) {
        v["email_address"]["opt_out_source"] = src.clone().into();
        v["email_address"]["opt_out_date"] = ts(at).into();
        if let Some(r) = &c.opt_out_reason {
            v["email_address"]["opt_out_reason"] = r.clone().into();
        }
    }
    if let Some(d) = c.deleted_at {
        v["deleted_at"] = d.date().to_string().into();
    }
    for k in [
        "first_name",
        "last_name",
        "job_title",
        "company_name",
        "anniversary",
    ] {
        if let Some(x) = f(k) {
            v[k] = x.into();
        }
    }
    for k in ["birthday_month", "birthday_day"] {
        if let Some(n) = f(k).and_then(|x| x.parse::<i64>().ok()) {
            v[k] = n.into();
        }
    }
    if include.contains("custom_fields") {
        let cfs: Vec<Value> = c
            .fields
            .iter()
            .filter_map(|(k, val)| {
                let field = store.field_by_name(k.strip_prefix("cf:")?)?;
                Some(json!({"custom_field_id": field.id, "value": val}))
            })
            .collect();
        v["custom_fields"] = cfs.into();
    }
    if include.contains("list_memberships") {
        v["list_memberships"] = json!(c.list_ids);
    }
    if include.contains("phone_numbers") {
        let kinds = [
            ("phone", "other"),
            ("home_phone", "home"),
            ("work_phone", "work"),
            ("mobile_phone", "mobile"),
            ("other_phone", "other"),
        ];
        let phones: Vec<Value> = kinds
            .iter()
            .filter_map(|(k, kind)| f(k).map(|p| json!({"phone_number": p, "kind": kind})))
            .take(3)
            .collect();
        v["phone_numbers"] = phones.into();
    }
    if include.contains("street_addresses") {
        let mut out = Vec::new();
        for (prefix, kind) in [
            ("", "home"),
            ("home_", "home"),
            ("work_", "work"),
            ("other_", "other"),
        ] {
            let g = |k: &str| {
                f(&format!("{prefix}{k}")).or_else(|| {
                    if k == "country" && prefix == "home_" {
                        f("home country")
                    } else {
                        None
                    }
                })
            };
            let mut a = json!({"kind": kind});
            let street = match (g("street"), g("street2")) {
                (Some(s), Some(s2)) => Some(format!("{s} {s2}")),
                (s, s2) => s.or(s2),
            };
            let parts = [
                ("street", street),
                ("city", g("city")),
                ("state", g("state")),
                ("postal_code", g("zip")),
                ("country", g("country")),
            ];
            if parts.iter().all(|(_, x)| x.is_none()) {
                continue;
            }
            for (k, x) in parts {
                if let Some(x) = x {
                    a[k] = x.into();
                }
            }
            out.push(a);
        }
        out.truncate(3);
        v["street_addresses"] = out.into();
    }
    for k in ["taggings", "notes"] {
        if include.contains(k) {
            v[k] = json!([]);
        }
    }
    v
}

pub async fn contacts(
    State(sh): Sh,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let bad = |m: &str| {
        cc_error(
            &sh,
            &ctx,
            StatusCode::BAD_REQUEST,
            "contacts.api.validation.error",
            m,
        )
    };
    let limit = match limit_param(&sh, &ctx, q.get("limit"), 50, 500) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let include: BTreeSet<&str> = q
        .get("include")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(x) = include.iter().find(|i| !INCLUDES.contains(i)) {
        return bad(&format!("include does not have a valid value: {x}"));
    }
    let statuses: Vec<&str> = match q.get("status") {
        None => vec![],
        Some(s) => s.split(',').map(str::trim).collect(),
    };
    if let Some(x) = statuses.iter().find(|s| !STATUSES.contains(s)) {
        return bad(&format!("status does not have a valid value: {x}"));
    }
    let mut optout = [None, None];
    for (i, k) in ["optout_after", "optout_before"].iter().enumerate() {
        if let Some(raw) = q.get(*k) {
            match time::OffsetDateTime::parse(raw, &Rfc3339) {
                Ok(t) => optout[i] = Some(t),
                Err(_) => return bad(&format!("{k} is not a valid ISO-8601 date-time: {raw}")),
            }
        }
    }
    let [optout_after, optout_before] = optout;
    let mut lists = BTreeSet::new();
    for l in q
        .get("lists")
        .map(|s| s.split(',').collect::<Vec<_>>())
        .unwrap_or_default()
    {
        match Uuid::parse_str(l.trim()) {
            Ok(u) => lists.insert(u),
            Err(_) => return bad(&format!("lists does not have a valid value: {l}")),
        };
    }
    let offset = match q.get("cursor").map(|c| c.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return bad("cursor is not valid."),
    };
    let email = q.get("email").map(|e| e.to_lowercase());
    let mut all = lock(&sh.stores);
    let s = all.account(&claims.platform_user_id);
    settle(s);
    let s = &*s;
    let matching: Vec<&SimContact> = s
        .contacts
        .iter()
        .filter(|(k, _)| email.as_ref().is_none_or(|e| e == *k))
        .map(|(_, c)| c)
        .filter(|c| {
            if statuses.is_empty() {
                c.deleted_at.is_none()
            } else {
                statuses.iter().any(|st| c.has_status(st))
            }
        })
        .filter(|c| {
            // Opt-out bounds match only contacts that opted out, strictly after / before.
            (optout_after.is_none() && optout_before.is_none())
                || c.opt_out_date.is_some_and(|d| {
                    optout_after.is_none_or(|a| d > a) && optout_before.is_none_or(|b| d < b)
                })
        })
        .filter(|c| lists.is_empty() || c.list_ids.iter().any(|l| lists.contains(l)))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| contact_json(c, s, &include))
        .collect();
    let mut v = json!({"contacts": page, "_links": {}});
    if offset + limit < matching.len() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (k, val) in q.iter().filter(|(k, _)| *k != "cursor") {
            next.append_pair(k, val);
        }
        next.append_pair("cursor", &(offset + limit).to_string());
        v["_links"] = json!({"next": {"href": format!("/v3/contacts?{}", next.finish())}});
    }
    if q.get("include_count").is_some_and(|x| x == "true") {
        v["contacts_count"] = matching.len().into();
    }
    Json(v).into_response()
}

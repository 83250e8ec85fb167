//! `GET /v3/contacts` and `POST /v3/contacts/sign_up_form` (reference §5.1, §5.4).
//!
//! Both see and write only the token's account's store (`store.rs`): its contacts, lists and
//! custom fields.
//!
//! Choices where the reference is silent:
//! - `GET /contacts` supports `email` (exact, case-insensitive), `status`, `lists`, `include`,
//!   `include_count`, `limit` (1–500, default 50) and an opaque `cursor` for the `_links.next`
//!   page. The simulator never deletes or unsubscribes, so `status=all|active` list everyone and
//!   a permission value (`implicit`, `explicit`, …) filters on it.
//! - `sign_up_form` without `email_address` (SMS-only contacts) is refused with 400 (not
//!   simulated). Unknown list or custom-field ids → 400. `birthday_month` and `birthday_day` must
//!   come together. `street_address` (any `kind`) maps onto the primary address columns.
//! - Fault `signup_conflict_rate`: that share of valid `sign_up_form` calls answer 409
//!   `[{"error_key":"contacts.api.conflict","error_message":"Conflict. You sent simultaneous
//!   requests…"}]` and write nothing (CC's concurrent-modification 409, reference §5.1).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::activity::settle;
use super::api::{cc_error, json_body, limit_param};
use super::faults::Ctx;
use super::jwt::Claims;
use super::state::{Shared, lock};
use super::store::{SimContact, Source, Store};

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
    let status = q.get("status").map_or("active", String::as_str);
    if !STATUSES.contains(&status) {
        return bad(&format!("status does not have a valid value: {status}"));
    }
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
        .filter(|c| matches!(status, "all" | "active") || c.permission_to_send == status)
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

pub async fn sign_up_form(
    State(sh): Sh,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match json_body(&sh, &ctx, &headers, &body, "ContactCreateOrUpdateInput") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let bad = |m: &str| {
        cc_error(
            &sh,
            &ctx,
            StatusCode::BAD_REQUEST,
            "contacts.api.validation.error",
            m,
        )
    };
    let Some(email) = v["email_address"].as_str() else {
        return bad("email_address is required (SMS-only contacts are not simulated).");
    };
    if !email_address::EmailAddress::is_valid(email) {
        return bad("email_address is not a valid email address.");
    }
    if v.get("birthday_month").is_some() != v.get("birthday_day").is_some() {
        return bad("birthday_month and birthday_day must be provided together.");
    }
    if !v["birthday_month"]
        .as_i64()
        .is_none_or(|m| (1..=12).contains(&m))
        || !v["birthday_day"]
            .as_i64()
            .is_none_or(|d| (1..=31).contains(&d))
    {
        return bad("birthday_month must be 1-12 and birthday_day 1-31.");
    }
    let mut fields = BTreeMap::new();
    for (from, to) in [
        ("first_name", "first_name"),
        ("last_name", "last_name"),
        ("job_title", "job_title"),
        ("company_name", "company_name"),
        ("phone_number", "phone"),
        ("anniversary", "anniversary"),
    ] {
        if let Some(x) = v[from].as_str() {
            fields.insert(to.to_owned(), x.to_owned());
        }
    }
    for k in ["birthday_month", "birthday_day"] {
        if let Some(n) = v[k].as_i64() {
            fields.insert(k.to_owned(), n.to_string());
        }
    }
    if let Some(a) = v["street_address"].as_object() {
        for (from, to) in [
            ("street", "street"),
            ("city", "city"),
            ("state", "state"),
            ("postal_code", "zip"),
            ("country", "country"),
        ] {
            if let Some(x) = a.get(from).and_then(Value::as_str) {
                fields.insert(to.to_owned(), x.to_owned());
            }
        }
    }
    let mut all = lock(&sh.stores);
    let s = all.account(&claims.platform_user_id);
    settle(s);
    let mut lists = BTreeSet::new();
    for l in v["list_memberships"].as_array().into_iter().flatten() {
        match l
            .as_str()
            .and_then(|l| Uuid::parse_str(l).ok())
            .filter(|u| s.list_exists(u))
        {
            Some(u) => lists.insert(u),
            None => return bad(&format!("list_memberships contains an unknown list: {l}")),
        };
    }
    for cf in v["custom_fields"].as_array().into_iter().flatten() {
        let field = cf["custom_field_id"]
            .as_str()
            .and_then(|i| Uuid::parse_str(i).ok())
            .and_then(|i| s.field_by_id(&i));
        match field {
            Some(fr) => {
                fields.insert(
                    format!("cf:{}", fr.name),
                    cf["value"].as_str().unwrap_or("").to_owned(),
                );
            }
            None => {
                return bad(&format!(
                    "custom_fields contains an unknown custom_field_id: {}",
                    cf["custom_field_id"]
                ));
            }
        }
    }
    // Fault `signup_conflict_rate`: CC's 409 "simultaneous requests attempting to modify the
    // same contact" (reference §5.1, §7). Decided after validation, before anything is written.
    // The key is the one observed on POST /contacts' 409 (§5.2); the text is the Swagger's.
    if sh.chance(sh.faults().signup_conflict_rate) {
        sh.log_update(ctx.seq, |r| r.fault = Some("conflict".into()));
        return cc_error(
            &sh,
            &ctx,
            StatusCode::CONFLICT,
            "contacts.api.conflict",
            "Conflict. You sent simultaneous requests that are attempting to modify the same \
             contact.",
        );
    }
    let now = sh.clock.now();
    let (id, created) = s.upsert(email, fields, &lists, Source::SignUpForm, now);
    let (status, action) = if created {
        (StatusCode::CREATED, "created")
    } else {
        (StatusCode::OK, "updated")
    };
    (status, Json(json!({"contact_id": id, "action": action}))).into_response()
}

//! `POST /v3/contacts/sign_up_form` and `PUT /v3/contacts/{contact_id}` (reference §5.1, §5.3,
//! §5.4): the contact writes. The choices made where the reference is silent are listed in
//! `contacts.rs`'s module docs, next to `GET /contacts`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::activity::settle;
use super::api::{cc_error, json_body};
use super::contacts::contact_json;
use super::faults::Ctx;
use super::jwt::Claims;
use super::state::{Shared, lock};
use super::store::Source;

type Sh = State<Arc<Shared>>;

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

/// `PUT /contacts/{contact_id}`: replace the contact (see the module docs).
pub async fn put_contact(
    State(sh): Sh,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match json_body(&sh, &ctx, &headers, &body, "ContactPutRequest") {
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
    let not_found = || {
        cc_error(
            &sh,
            &ctx,
            StatusCode::NOT_FOUND,
            "contacts.api.not_found",
            "The requested resource was not found.",
        )
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found();
    };
    let source = match v["update_source"].as_str() {
        Some(s @ ("Contact" | "Account")) => s.to_owned(),
        _ => return bad("update_source must be Contact or Account."),
    };
    let Some(address) = v["email_address"]["address"].as_str() else {
        return bad("email_address is required (a contact without one is not simulated).");
    };
    if !email_address::EmailAddress::is_valid(address) {
        return bad("email_address.address is not a valid email address.");
    }
    if v.get("birthday_month").is_some() != v.get("birthday_day").is_some() {
        return bad("birthday_month and birthday_day must be provided together.");
    }
    let permission = v["email_address"]["permission_to_send"].as_str();
    if let Some(p) = permission.filter(|p| {
        ![
            "explicit",
            "implicit",
            "not_set",
            "pending_confirmation",
            "temp_hold",
            "unsubscribed",
        ]
        .contains(p)
    }) {
        return bad(&format!(
            "permission_to_send does not have a valid value: {p}"
        ));
    }
    let reason = v["email_address"]["opt_out_reason"]
        .as_str()
        .map(str::to_owned);
    let now = sh.clock.now();
    let mut all = lock(&sh.stores);
    let s = all.account(&claims.platform_user_id);
    settle(s);
    let Some(old_key) = s
        .contacts
        .iter()
        .find(|(_, c)| c.contact_id == id)
        .map(|(k, _)| k.clone())
    else {
        drop(all);
        return not_found();
    };
    let new_key = address.to_lowercase();
    if new_key != old_key && s.contacts.contains_key(&new_key) {
        drop(all);
        return cc_error(
            &sh,
            &ctx,
            StatusCode::CONFLICT,
            "contacts.api.conflict",
            "Validation failed: EmailAddress is not unique",
        );
    }
    // Sub-resources first (they name lists and custom fields that must exist).
    let mut lists = None;
    if let Some(ls) = v["list_memberships"].as_array() {
        let mut set = BTreeSet::new();
        for l in ls {
            match l
                .as_str()
                .and_then(|l| Uuid::parse_str(l).ok())
                .filter(|u| s.list_exists(u))
            {
                Some(u) => set.insert(u),
                None => {
                    drop(all);
                    return bad(&format!("list_memberships contains an unknown list: {l}"));
                }
            };
        }
        lists = Some(set);
    }
    let mut cfs = None;
    if let Some(items) = v["custom_fields"].as_array() {
        let mut m = BTreeMap::new();
        for cf in items {
            let field = cf["custom_field_id"]
                .as_str()
                .and_then(|i| Uuid::parse_str(i).ok())
                .and_then(|i| s.field_by_id(&i));
            match field {
                Some(fr) => {
                    m.insert(
                        format!("cf:{}", fr.name),
                        cf["value"].as_str().unwrap_or("").to_owned(),
                    );
                }
                None => {
                    drop(all);
                    return bad(&format!(
                        "custom_fields contains an unknown custom_field_id: {}",
                        cf["custom_field_id"]
                    ));
                }
            }
        }
        cfs = Some(m);
    }
    let mut c = s.contacts.remove(&old_key).expect("found above");
    if c.deleted_at.is_some() && source != "Account" {
        s.contacts.insert(old_key, c);
        drop(all);
        return bad("A deleted contact can only be restored with update_source Account.");
    }
    // Top-level properties: replaced, the ones left out cleared (reference §5.3, §8 point 7).
    for k in [
        "first_name",
        "last_name",
        "job_title",
        "company_name",
        "anniversary",
        "birthday_month",
        "birthday_day",
    ] {
        match &v[k] {
            Value::String(x) => {
                c.fields.insert(k.to_owned(), x.clone());
            }
            Value::Number(n) => {
                c.fields.insert(k.to_owned(), n.to_string());
            }
            _ => {
                c.fields.remove(k);
            }
        }
    }
    if let Some(m) = cfs {
        c.fields.retain(|k, _| !k.starts_with("cf:"));
        c.fields.extend(m);
    }
    if let Some(p) = v["phone_numbers"].as_array() {
        c.fields.remove("phone");
        if let Some(n) = p.first().and_then(|p| p["phone_number"].as_str()) {
            c.fields.insert("phone".into(), n.to_owned());
        }
    }
    if let Some(a) = v["street_addresses"].as_array() {
        for k in ["street", "city", "state", "zip", "country"] {
            c.fields.remove(k);
        }
        if let Some(a) = a.first() {
            for (from, to) in [
                ("street", "street"),
                ("city", "city"),
                ("state", "state"),
                ("postal_code", "zip"),
                ("country", "country"),
            ] {
                if let Some(x) = a[from].as_str() {
                    c.fields.insert(to.to_owned(), x.to_owned());
                }
            }
        }
    }
    if let Some(l) = lists {
        c.list_ids = l;
    }
    c.email = address.to_owned();
    c.deleted_at = None;
    match permission {
        Some("unsubscribed") if c.permission_to_send != "unsubscribed" => {
            c.opt_out(&source, reason, now);
            c.writes -= 1;
        }
        Some("unsubscribed") if reason.is_some() => c.opt_out_reason = reason,
        Some("unsubscribed") => {}
        Some(p) => {
            c.permission_to_send = p.to_owned();
            c.opt_out_source = None;
            c.opt_out_date = None;
            c.opt_out_reason = None;
        }
        None => {}
    }
    c.updated_at = now;
    c.writes += 1;
    let out = contact_json(
        &c,
        s,
        &BTreeSet::from(["list_memberships", "custom_fields"]),
    );
    s.contacts.insert(new_key, c);
    Json(out).into_response()
}

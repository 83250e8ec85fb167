//! The admin API under `/_sim/` (JSON; never logged, never faulted, no auth). It mirrors the
//! in-process handle for subprocess tests and the demo:
//!
//! | method & path | body / query | answer |
//! |---|---|---|
//! | `GET /_sim/faults` | | current [`Faults`] |
//! | `PUT` or `POST /_sim/faults` | a [`Faults`] (missing fields = off) | the new faults |
//! | `GET /_sim/clock` | | `{now, offset_secs}` |
//! | `POST /_sim/clock/advance` | `{"secs": N}` or `?secs=N` | `{now, offset_secs}` |
//! | `POST /_sim/revoke` | | 204; every token dead |
//! | `POST /_sim/sign_in` | `?account=..` | 204; `GET /authorize` without `account` approves for it |
//! | `GET`/`POST /_sim/device/approve` | `?user_code=..[&deny=true][&account=..]` | 200 `{approved}` / 404 unknown or not pending |
//! | `GET /_sim/device` | | instructions (the `verification_uri`) |
//! | `POST /_sim/tokens` | `{"client_id", "account"?}` | `{access_token, refresh_token}` |
//! | `GET /_sim/requests` | `?since=SEQ` | [`RequestRecord`]s with `seq >= since` |
//! | `GET /_sim/counters` | | [`Counters`] (activities and contacts over every account) |
//! | `GET /_sim/accounts` | | `[{account, contacts, lists, custom_fields, activities}]` |
//! | `GET /_sim/contacts` | `?account=` | [`SimContact`]s |
//! | `GET /_sim/contacts/{email}` | `?account=` | one [`SimContact`] or 404 |
//! | `POST /_sim/contacts/{email}/unsubscribe` | `?account=`, `{"reason"?}` | the [`SimContact`], opted out as through an email's unsubscribe link (source `Contact`, date = simulator clock) / 404 |
//! | `GET`/`POST /_sim/lists` | `?account=`, `{"name"}` | `[{list_id,name}]` / `{list_id}` |
//! | `GET`/`POST /_sim/custom_fields` | `?account=`, `{"name"}` | `[{custom_field_id,name}]` / `{custom_field_id}` |
//! | `GET /_sim/activities` | `?account=` | the account's activities (CC's `Activity` JSON) |
//!
//! The simulator keeps one store per CC account (`store.rs`); `?account=NAME` picks it and
//! defaults to `default`, the account of tokens issued without one. Reads of an account that
//! never called the API answer empty (404 for one contact) and create nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::activity::State as AState;
use super::config::Faults;
use super::state::{Shared, lock};
use super::store::DEFAULT_ACCOUNT;
use super::{Counters, DEFAULT_SCOPE, RequestRecord, SimContact};

type Sh = State<Arc<Shared>>;

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/faults", get(get_faults).put(set_faults).post(set_faults))
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance))
        .route("/revoke", post(revoke))
        .route("/sign_in", post(sign_in))
        .route("/device", get(device_page))
        .route("/device/approve", get(approve).post(approve))
        .route("/tokens", post(tokens))
        .route("/requests", get(requests))
        .route("/counters", get(get_counters))
        .route("/accounts", get(accounts))
        .route("/contacts", get(contacts))
        .route("/contacts/{email}", get(contact))
        .route("/contacts/{email}/unsubscribe", post(unsubscribe))
        .route("/lists", get(lists).post(create_list))
        .route("/custom_fields", get(fields).post(create_field))
        .route("/activities", get(activities))
}

async fn get_faults(State(sh): Sh) -> Json<Faults> {
    Json(sh.faults())
}

async fn set_faults(State(sh): Sh, Json(f): Json<Faults>) -> Json<Faults> {
    *lock(&sh.faults) = f.clone();
    Json(f)
}

fn clock_json(sh: &Shared) -> Json<serde_json::Value> {
    Json(json!({
        "now": sh.clock.now().format(&Rfc3339).unwrap_or_default(),
        "offset_secs": sh.clock.offset().as_secs_f64(),
    }))
}

async fn clock(State(sh): Sh) -> Json<serde_json::Value> {
    clock_json(&sh)
}

#[derive(Deserialize, Default)]
struct Secs {
    secs: Option<f64>,
}

async fn advance(State(sh): Sh, Query(q): Query<Secs>, body: Option<Json<Secs>>) -> Response {
    let secs = q.secs.or(body.and_then(|b| b.0.secs)).unwrap_or(0.0);
    if !(secs.is_finite() && secs >= 0.0) {
        return (
            StatusCode::BAD_REQUEST,
            "secs must be a non-negative number",
        )
            .into_response();
    }
    sh.clock.advance(Duration::from_secs_f64(secs));
    clock_json(&sh).into_response()
}

async fn revoke(State(sh): Sh) -> StatusCode {
    lock(&sh.auth).revoke_all();
    StatusCode::NO_CONTENT
}

async fn sign_in(State(sh): Sh, Query(q): Query<HashMap<String, String>>) -> StatusCode {
    match q.get("account").filter(|a| !a.is_empty()) {
        Some(a) => {
            *lock(&sh.signed_in) = a.clone();
            StatusCode::NO_CONTENT
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn device_page(State(sh): Sh) -> String {
    format!(
        "Constant Contact simulator: device verification.\n\
         Approve:  {0}/_sim/device/approve?user_code=XXXX-XXXX\n\
         Refuse:   {0}/_sim/device/approve?user_code=XXXX-XXXX&deny=true\n\
         Optional: &account=NAME (becomes the tokens' platform_user_id; default `default`).\n",
        sh.base_url
    )
}

async fn approve(State(sh): Sh, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(code) = q.get("user_code") else {
        return (StatusCode::BAD_REQUEST, "user_code is required").into_response();
    };
    let deny = q.get("deny").is_some_and(|d| d == "true" || d == "1");
    let account = q.get("account").map_or("default", String::as_str);
    let ok = lock(&sh.auth).decide(code, (!deny).then_some(account));
    if ok {
        Json(json!({"user_code": code, "approved": !deny})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown or already decided user_code"})),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct TokenReq {
    client_id: String,
    #[serde(default)]
    account: Option<String>,
}

async fn tokens(State(sh): Sh, Json(r): Json<TokenReq>) -> Json<serde_json::Value> {
    let account = r.account.unwrap_or_else(|| "default".into());
    let t = lock(&sh.auth).new_grant(
        &r.client_id,
        &account,
        DEFAULT_SCOPE,
        sh.clock.mono(),
        &sh.cfg,
        sh.key,
        sh.clock.now().unix_timestamp(),
    );
    Json(
        json!({"access_token": t.access_token, "refresh_token": t.refresh_token, "expires_in": t.expires_in}),
    )
}

async fn requests(
    State(sh): Sh,
    Query(q): Query<HashMap<String, u64>>,
) -> Json<Vec<RequestRecord>> {
    let since = q.get("since").copied().unwrap_or(0) as usize;
    Json(
        lock(&sh.log)
            .get(since..)
            .map(<[_]>::to_vec)
            .unwrap_or_default(),
    )
}

/// Counters over the request log and the store.
pub fn counters(sh: &Shared) -> Counters {
    let mut c = Counters::default();
    for r in lock(&sh.log).iter() {
        c.requests += 1;
        if r.path.starts_with("/v3/") {
            c.api_requests += 1;
        }
        if r.path.ends_with("/v1/token") {
            c.token_requests += 1;
        }
        match r.status {
            Some(s) => *c.by_status.entry(s).or_default() += 1,
            None => c.unanswered += 1,
        }
        if let Some(e) = &r.error {
            *c.by_error.entry(e.clone()).or_default() += 1;
        }
    }
    c.refreshes = lock(&sh.auth).refreshes;
    {
        let mut all = lock(&sh.stores);
        all.settle_all();
        for (account, s) in all.iter() {
            let n = s.activities.len() as u64;
            c.activities += n;
            c.activities_completed += s
                .activities
                .iter()
                .filter(|a| a.state == AState::Completed)
                .count() as u64;
            c.activities_failed += s
                .activities
                .iter()
                .filter(|a| a.state == AState::Failed)
                .count() as u64;
            c.contacts += s.contacts.len() as u64;
            c.contacts_by_account
                .insert(account.clone(), s.contacts.len() as u64);
            c.activities_by_account.insert(account.clone(), n);
        }
    }
    let day = sh.clock.now().date().to_julian_day() as i64;
    for (client, (d, n)) in lock(&sh.limits).daily_snapshot() {
        if d == day {
            c.quota_used_today.insert(client, n);
        }
    }
    c
}

async fn get_counters(State(sh): Sh) -> Json<Counters> {
    Json(counters(&sh))
}

/// `?account=NAME` of the per-account admin endpoints (default `default`).
#[derive(Deserialize)]
struct Account {
    #[serde(default = "default_account")]
    account: String,
}

fn default_account() -> String {
    DEFAULT_ACCOUNT.to_owned()
}

async fn accounts(State(sh): Sh) -> Json<serde_json::Value> {
    let mut all = lock(&sh.stores);
    all.settle_all();
    Json(
        all.iter()
            .map(|(a, s)| {
                json!({
                    "account": a,
                    "contacts": s.contacts.len(),
                    "lists": s.lists.len(),
                    "custom_fields": s.fields.len(),
                    "activities": s.activities.len(),
                })
            })
            .collect(),
    )
}

async fn contacts(State(sh): Sh, Query(q): Query<Account>) -> Json<Vec<SimContact>> {
    Json(sh.read_store(&q.account, |s| s.contacts.values().cloned().collect()))
}

async fn contact(State(sh): Sh, Path(email): Path<String>, Query(q): Query<Account>) -> Response {
    match sh.read_store(&q.account, |s| s.contact(&email).cloned()) {
        Some(c) => Json(c).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize, Default)]
struct Reason {
    reason: Option<String>,
}

async fn unsubscribe(
    State(sh): Sh,
    Path(email): Path<String>,
    Query(q): Query<Account>,
    body: Option<Json<Reason>>,
) -> Response {
    let reason = body.and_then(|b| b.0.reason);
    match unsubscribe_by_link(&sh, &q.account, &email, reason) {
        Some(c) => Json(c).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The person clicked the unsubscribe link of an email: opted out with source `Contact` at the
/// simulator's now. `None` when the account has no such (non-deleted) contact.
pub fn unsubscribe_by_link(
    sh: &Shared,
    account: &str,
    email: &str,
    reason: Option<String>,
) -> Option<SimContact> {
    let now = sh.clock.now();
    let mut all = lock(&sh.stores);
    let s = all.settled(account)?;
    let c = s
        .contacts
        .get_mut(&email.to_lowercase())
        .filter(|c| c.deleted_at.is_none())?;
    c.opt_out("Contact", reason, now);
    Some(c.clone())
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

async fn lists(State(sh): Sh, Query(q): Query<Account>) -> Json<serde_json::Value> {
    Json(sh.read_store(&q.account, |s| {
        s.lists
            .iter()
            .map(|l| json!({"list_id": l.id, "name": l.name}))
            .collect()
    }))
}

async fn create_list(State(sh): Sh, Query(q): Query<Account>, Json(n): Json<Named>) -> Response {
    let now = sh.clock.now();
    match sh.with_store(&q.account, |s| s.create_list(&n.name, None, false, now)) {
        Ok(id) => (StatusCode::CREATED, Json(json!({"list_id": id}))).into_response(),
        Err(_) => (
            StatusCode::CONFLICT,
            Json(json!({"error": "a list with this name exists"})),
        )
            .into_response(),
    }
}

async fn fields(State(sh): Sh, Query(q): Query<Account>) -> Json<serde_json::Value> {
    Json(sh.read_store(&q.account, |s| {
        s.fields
            .iter()
            .map(|f| json!({"custom_field_id": f.id, "name": f.name, "label": f.label}))
            .collect()
    }))
}

async fn create_field(State(sh): Sh, Query(q): Query<Account>, Json(n): Json<Named>) -> Response {
    let now = sh.clock.now();
    match sh.with_store(&q.account, |s| s.create_field(&n.name, "string", now)) {
        Ok(id) => (StatusCode::CREATED, Json(json!({"custom_field_id": id}))).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(json!({"error": format!("{e:?}")})),
        )
            .into_response(),
    }
}

async fn activities(State(sh): Sh, Query(q): Query<Account>) -> Json<Vec<serde_json::Value>> {
    Json(sh.read_store(&q.account, |s| {
        s.activities.iter().map(|a| a.to_json()).collect()
    }))
}

//! Contact lists, custom fields and activity status (reference §5.6, §6.5).
//!
//! Every call sees only the token's account (`store.rs`): its lists, its custom fields, its
//! activities. Another account's activity id is a 404 like an unknown one.
//!
//! Choices where the reference is silent:
//! - A duplicate list name or custom-field name → 409 `contacts.api.conflict` (names are unique within an account).
//! - The 101st custom field → 400 `contacts.api.validation.error` (CC documents the 100 limit,
//!   not its answer). `label` and `type` are required on create (Swagger `CustomField` requires
//!   them; `CustomFieldRequest` does not say).
//! - `GET /activities` lists newest first; `state` must be one of the Swagger enum values;
//!   activities are kept for the simulator's lifetime (CC keeps 10 days).
//! - An unknown or malformed activity id → 404 `activities.api.not_found`.
//! - Poll faults on `GET /activities/{id}` only (they pass the gate, so they are counted against
//!   the rate limits like CC's own answers): `activity_not_found_rate` answers that same 404 for
//!   an activity that exists (as after CC's 10-day retention, §6.5); `activity_poll_error_rate`
//!   answers 500 `server.error` or 503 `server.unavailable` (even odds) in the array form. The
//!   activity keeps running either way.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::api::{cc_error, json_body, limit_param, server_error};
use super::faults::Ctx;
use super::jwt::Claims;
use super::state::Shared;
use super::store::CreateError;

type Sh = State<Arc<Shared>>;

fn ts(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub async fn lists(
    State(sh): Sh,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = match limit_param(&sh, &ctx, q.get("limit"), 50, 1000) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let with_count = q
        .get("include_membership_count")
        .is_some_and(|x| x == "all" || x == "active");
    sh.read_store(&claims.platform_user_id, |s| {
        let out: Vec<Value> = s
            .lists
            .iter()
            .filter(|l| q.get("name").is_none_or(|n| *n == l.name))
            .take(limit)
            .map(|l| {
                let mut v = json!({
                    "list_id": l.id, "name": l.name, "favorite": l.favorite,
                    "created_at": ts(l.created_at), "updated_at": ts(l.updated_at),
                });
                if let Some(d) = &l.description {
                    v["description"] = d.clone().into();
                }
                if with_count {
                    v["membership_count"] = s
                        .contacts
                        .values()
                        .filter(|c| c.list_ids.contains(&l.id))
                        .count()
                        .into();
                }
                v
            })
            .collect();
        let mut v = json!({"lists": out, "_links": {}});
        if q.get("include_count").is_some_and(|x| x == "true") {
            v["lists_count"] = s.lists.len().into();
        }
        Json(v).into_response()
    })
}

pub async fn create_list(
    State(sh): Sh,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match json_body(&sh, &ctx, &headers, &body, "ListInput") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name = v["name"].as_str().unwrap_or_default();
    let now = sh.clock.now();
    let desc = v["description"].as_str().map(str::to_owned);
    let fav = v["favorite"].as_bool().unwrap_or(false);
    match sh.with_store(&claims.platform_user_id, |s| {
        s.create_list(name, desc.clone(), fav, now)
    }) {
        Ok(id) => {
            let mut out = json!({"list_id": id, "name": name, "favorite": fav, "created_at": ts(now), "updated_at": ts(now)});
            if let Some(d) = desc {
                out["description"] = d.into();
            }
            (StatusCode::CREATED, Json(out)).into_response()
        }
        Err(_) => cc_error(
            &sh,
            &ctx,
            StatusCode::CONFLICT,
            "contacts.api.conflict",
            &format!("A list named '{name}' already exists."),
        ),
    }
}

fn field_json(f: &super::store::FieldRec) -> Value {
    json!({
        "custom_field_id": f.id, "label": f.label, "name": f.name, "type": f.kind,
        "created_at": ts(f.created_at), "updated_at": ts(f.updated_at),
    })
}

pub async fn fields(
    State(sh): Sh,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = match limit_param(&sh, &ctx, q.get("limit"), 50, 100) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let out: Vec<Value> = sh.read_store(&claims.platform_user_id, |s| {
        s.fields.iter().take(limit).map(field_json).collect()
    });
    Json(json!({"custom_fields": out, "_links": {}})).into_response()
}

pub async fn create_field(
    State(sh): Sh,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match json_body(&sh, &ctx, &headers, &body, "CustomFieldRequest") {
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
    let (Some(label), Some(kind)) = (
        v["label"].as_str().filter(|l| !l.trim().is_empty()),
        v["type"].as_str(),
    ) else {
        return bad("label and type are required.");
    };
    let now = sh.clock.now();
    let made = sh.with_store(&claims.platform_user_id, |s| {
        s.create_field(label, kind, now)
            .map(|id| s.field_by_id(&id).map(field_json).unwrap_or_default())
    });
    match made {
        Ok(body) => (StatusCode::CREATED, Json(body)).into_response(),
        Err(CreateError::Conflict) => cc_error(
            &sh,
            &ctx,
            StatusCode::CONFLICT,
            "contacts.api.conflict",
            &format!("A custom field named '{label}' already exists."),
        ),
        Err(CreateError::Limit) => {
            bad("The maximum number of custom fields (100) has been reached.")
        }
    }
}

pub async fn activity(
    State(sh): Sh,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
) -> Response {
    // Poll faults (reference §6.5, §7): the answer is lost, the activity keeps running.
    let f = sh.faults();
    if sh.chance(f.activity_poll_error_rate) {
        sh.log_update(ctx.seq, |r| r.fault = Some("error".into()));
        let status = if sh.chance(0.5) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return server_error(&sh, &ctx, status);
    }
    if sh.chance(f.activity_not_found_rate) {
        sh.log_update(ctx.seq, |r| r.fault = Some("not_found".into()));
        return activity_not_found(&sh, &ctx);
    }
    // Only the caller's account's activities: another account's id is a 404 like an unknown one.
    let found = Uuid::parse_str(&id).ok().and_then(|u| {
        sh.read_store(&claims.platform_user_id, |s| {
            s.activities.iter().find(|a| a.id == u).map(|a| a.to_json())
        })
    });
    match found {
        Some(a) => Json(a).into_response(),
        None => activity_not_found(&sh, &ctx),
    }
}

fn activity_not_found(sh: &Shared, ctx: &Ctx) -> Response {
    cc_error(
        sh,
        ctx,
        StatusCode::NOT_FOUND,
        "activities.api.not_found",
        "Resource not found for the activity_id provided.",
    )
}

pub async fn activities(
    State(sh): Sh,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = match limit_param(&sh, &ctx, q.get("limit"), 50, 500) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let state = q.get("state").map(String::as_str);
    if let Some(st) = state.filter(|s| {
        ![
            "processing",
            "completed",
            "cancelled",
            "failed",
            "timed_out",
        ]
        .contains(s)
    }) {
        return cc_error(
            &sh,
            &ctx,
            StatusCode::BAD_REQUEST,
            "contacts.api.validation.error",
            &format!("state does not have a valid value: {st}"),
        );
    }
    let out: Vec<Value> = sh.read_store(&claims.platform_user_id, |s| {
        s.activities
            .iter()
            .rev()
            .filter(|a| state.is_none_or(|st| a.state.as_str() == st))
            .take(limit)
            .map(|a| a.to_json())
            .collect()
    });
    Json(json!({"activities": out, "_links": {}})).into_response()
}

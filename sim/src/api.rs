//! The `/v3` API gate and the shared request/answer helpers (reference §4, §5, §7).
//!
//! Every `/v3` request passes [`gate`]:
//! 1. **Bearer check**: signature (RS256, our `kid`), issuer, audience, `exp` against the simulator
//!    clock, and not revoked. Missing, unknown, expired or revoked → 401 with exactly
//!    `{"error_key":"unauthorized","error_message":"Unauthorized"}` (59 bytes) and
//!    `WWW-Authenticate: Bearer realm=api.cc.email`. A token without the `contact_data` scope →
//!    403 (array form). The `forbidden` fault answers every such call 403 the same way, with
//!    the Swagger's text ("…or the application is deactivated").
//! 2. **Limits** per client_id (the token's `cid`), see `limits.rs`: 429
//!    `{"error_key":"throttled","error_message":"Too Many Requests"}` or
//!    `{"error_key":"quota_exceeded","error_message":"Limit Exceeded"}`, no Retry-After.
//!
//! Bodies: a `Content-Type` other than `application/json` → 415; malformed JSON → 400
//! `contacts.api.bad.request`; a body that violates the operation's Swagger schema → 400 with
//! one `contacts.api.validation.error` entry per violation (at most 20). Other errors use CC's
//! array form `[{"error_key","error_message"}]`.

// Handlers return a ready `Response` as their early-exit error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::faults::Ctx;
use super::jwt::Claims;
use super::limits::Admission;
use super::state::{Shared, lock};
use super::{bulk, contact_writes, contacts, import, resources};

pub fn router(sh: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/activities/contacts_json_import",
            post(import::contacts_json_import),
        )
        .route("/activities", get(resources::activities))
        .route("/activities/{id}", get(resources::activity))
        .route("/contacts", get(contacts::contacts))
        .route("/contacts/sign_up_form", post(contact_writes::sign_up_form))
        .route(
            "/contacts/{contact_id}",
            axum::routing::put(contact_writes::put_contact),
        )
        .route("/activities/contact_delete", post(bulk::contact_delete))
        .route(
            "/activities/remove_list_memberships",
            post(bulk::remove_list_memberships),
        )
        .route(
            "/contact_lists",
            get(resources::lists).post(resources::create_list),
        )
        .route(
            "/contact_custom_fields",
            get(resources::fields).post(resources::create_field),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(sh, gate))
}

async fn not_found(State(sh): State<Arc<Shared>>, Extension(ctx): Extension<Ctx>) -> Response {
    cc_error(
        &sh,
        &ctx,
        StatusCode::NOT_FOUND,
        "contacts.api.not_found",
        "The requested resource was not found.",
    )
}

/// CC's array error form with one entry.
pub fn cc_error(sh: &Shared, ctx: &Ctx, status: StatusCode, key: &str, msg: &str) -> Response {
    cc_errors(sh, ctx, status, key, &[msg.to_owned()])
}

/// CC's array error form, one entry per message.
pub fn cc_errors(
    sh: &Shared,
    ctx: &Ctx,
    status: StatusCode,
    key: &str,
    msgs: &[String],
) -> Response {
    sh.log_update(ctx.seq, |r| r.error = Some(key.to_owned()));
    let body: Vec<Value> = msgs
        .iter()
        .take(20)
        .map(|m| json!({"error_key": key, "error_message": m}))
        .collect();
    (status, Json(body)).into_response()
}

/// CC's single-object error form (401, 429).
fn cc_object(sh: &Shared, ctx: &Ctx, status: StatusCode, key: &str, msg: &str) -> Response {
    sh.log_update(ctx.seq, |r| r.error = Some(key.to_owned()));
    // Serialized by hand so the bytes are exactly CC's (the 401 body is 59 bytes).
    let body = format!(r#"{{"error_key":"{key}","error_message":"{msg}"}}"#);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// 429 in CC's object form, no Retry-After.
pub fn too_many(sh: &Shared, ctx: &Ctx, key: &str, msg: &str) -> Response {
    cc_object(sh, ctx, StatusCode::TOO_MANY_REQUESTS, key, msg)
}

/// The Swagger's 403 description, used as the `forbidden` fault's message.
pub const FORBIDDEN_MSG: &str = "Forbidden request. You lack the necessary scopes, you lack the \
necessary user privileges, or the application is deactivated.";

/// A 5xx in CC's array form: 500 (`server.error`) or 503 (`server.unavailable`), texts from the
/// Swagger's response descriptions.
pub fn server_error(sh: &Shared, ctx: &Ctx, status: StatusCode) -> Response {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        sh.log_update(ctx.seq, |r| r.error = Some("server.unavailable".into()));
        return super::faults::unavailable();
    }
    cc_error(
        sh,
        ctx,
        StatusCode::INTERNAL_SERVER_ERROR,
        "server.error",
        "There was a problem with our internal service.",
    )
}

/// The UTC day number of the simulator clock (the quota day).
pub fn quota_day(sh: &Shared) -> i64 {
    sh.clock.now().date().to_julian_day() as i64
}

async fn gate(
    State(sh): State<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    mut req: Request,
    next: Next,
) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let wall = sh.clock.now().unix_timestamp();
    let claims = bearer.and_then(|t| lock(&sh.auth).check_access(t, sh.key, wall));
    let Some(claims) = claims else {
        let mut r = cc_object(
            &sh,
            &ctx,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=api.cc.email"),
        );
        return r;
    };
    sh.log_update(ctx.seq, |r| {
        r.client_id = Some(claims.cid.clone());
        r.account = Some(claims.platform_user_id.clone());
    });
    let day = quota_day(&sh);
    let adm = lock(&sh.limits).admit_api(
        &claims.cid,
        sh.clock.mono(),
        day,
        sh.cfg.per_second,
        sh.cfg.daily_quota,
    );
    match adm {
        Admission::Throttled => return too_many(&sh, &ctx, "throttled", "Too Many Requests"),
        Admission::QuotaExceeded => return too_many(&sh, &ctx, "quota_exceeded", "Limit Exceeded"),
        Admission::Ok => {}
    }
    if !claims.scp.iter().any(|s| s == "contact_data") {
        return cc_error(
            &sh,
            &ctx,
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden request. You lack the necessary scopes.",
        );
    }
    // Fault `forbidden`: the app was deactivated or the user lost a privilege (reference §7:
    // CC answers 403 for all three causes; the text is the Swagger's 403 description). Same
    // place and form as the scope 403 above, so it spends quota like any served error.
    if sh.faults().forbidden {
        sh.log_update(ctx.seq, |r| r.fault = Some("forbidden".into()));
        return cc_error(&sh, &ctx, StatusCode::FORBIDDEN, "forbidden", FORBIDDEN_MSG);
    }
    req.extensions_mut().insert::<Claims>(claims);
    next.run(req).await
}

/// Check the content type, parse, and validate a JSON body against Swagger definition `def`.
pub fn json_body(
    sh: &Shared,
    ctx: &Ctx,
    headers: &HeaderMap,
    body: &Bytes,
    def: &str,
) -> Result<Value, Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(cc_error(
            sh,
            ctx,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "contacts.api.unsupported.media.type",
            "Content-Type must be application/json.",
        ));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        cc_error(
            sh,
            ctx,
            StatusCode::BAD_REQUEST,
            "contacts.api.bad.request",
            &format!("The request body is not valid JSON: {e}"),
        )
    })?;
    super::schema::check(def, &v).map_err(|errs| {
        cc_errors(
            sh,
            ctx,
            StatusCode::BAD_REQUEST,
            "contacts.api.validation.error",
            &errs,
        )
    })?;
    Ok(v)
}

/// Parse the `limit` query parameter: default `default`, allowed `1..=max`.
pub fn limit_param(
    sh: &Shared,
    ctx: &Ctx,
    raw: Option<&String>,
    default: usize,
    max: usize,
) -> Result<usize, Response> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(cc_error(
                sh,
                ctx,
                StatusCode::BAD_REQUEST,
                "contacts.api.validation.error",
                &format!("limit must be an integer from 1 to {max}."),
            )),
        },
    }
}

//! The authorization server under `/oauth2/default/v1` (reference §1, §2, §3).
//!
//! - `POST /device/authorize`: parameters in the query string or a form body (both merged; the
//!   body wins); `client_id` required, `scope` kept, `response_type`/`state` accepted and ignored.
//!   Not rate limited (the 1 request/s is the *token* endpoint's limit).
//! - `POST /token`: grants `urn:ietf:params:oauth:grant-type:device_code`, `refresh_token`,
//!   `authorization_code`; parameters in the query or a form body. Client authentication by HTTP
//!   Basic or by `client_id` alone. When `SimConfig::client_secret` is set, Basic must carry it;
//!   a Basic user that differs from a `client_id` parameter is `invalid_client` (401).
//!   Every call counts toward `token_per_second` per client; over it → **429 with an OAuth-style
//!   body** `{"error":"too_many_requests","error_description":…}` (CC's real body is unknown,
//!   reference §3.6), no Retry-After. Other errors: 400 `{"error","error_description"}`.
//! - `GET /authorize`: `redirect_uri` must be registered (`SimConfig::redirect_uris`, exact
//!   match; else a 400 page, no redirect). With `auto_approve` the simulated user consents at once
//!   and is redirected to `redirect_uri` with `code` and `state`; otherwise a consent page offers
//!   approve / deny links (see [`authorize`]). Codes live `SimConfig::code_ttl` (CC: 5 minutes)
//!   and work once; PKCE S256 is checked at the exchange; a code without a challenge must be
//!   exchanged with HTTP Basic (confidential app). Sim-only `account` parameter chooses the
//!   `platform_user_id`; without it, the account signed in at the simulated browser
//!   ([`super::Sim::sign_in`], default `default`).
//! - `GET /keys`: the JWKS.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::faults::{Ctx, lose};
use super::state::{Shared, lock};
use super::tokens::{OAuthError, TokenSet};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Query-string parameters merged with a form body (the body wins).
pub fn params(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let mut p: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form || (!body.is_empty() && !headers.contains_key(header::CONTENT_TYPE)) {
        p.extend(url::form_urlencoded::parse(body).into_owned());
    }
    p
}

/// `(client_id, secret)` from an `Authorization: Basic` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    let dec = |x: &str| {
        url::form_urlencoded::parse(format!("a={x}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

fn oauth_error(sh: &Shared, ctx: &Ctx, e: &OAuthError) -> Response {
    sh.log_update(ctx.seq, |r| r.error = Some(e.code().into()));
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (
        status,
        Json(serde_json::json!({"error": e.code(), "error_description": e.description()})),
    )
        .into_response();
    if e.status() == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic"),
        );
    }
    resp
}

/// Identify the client (Basic or `client_id`), checking the secret when one is configured.
fn client(
    sh: &Shared,
    headers: &HeaderMap,
    p: &HashMap<String, String>,
) -> Result<String, OAuthError> {
    let param = p.get("client_id").filter(|s| !s.is_empty());
    match (basic(headers), param) {
        (Some((id, _)), Some(pid)) if &id != pid => Err(OAuthError::InvalidClient),
        (Some((id, secret)), _) => match &sh.cfg.client_secret {
            Some(want) if *want != secret => Err(OAuthError::InvalidClient),
            _ if id.is_empty() => Err(OAuthError::InvalidClient),
            _ => Ok(id),
        },
        (None, Some(pid)) => Ok(pid.clone()),
        (None, None) => Err(OAuthError::InvalidClient),
    }
}

pub async fn device_authorize(
    State(sh): State<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(&uri, &headers, &body);
    let client_id = match client(&sh, &headers, &p) {
        Ok(c) => c,
        Err(e) => return oauth_error(&sh, &ctx, &e),
    };
    sh.log_update(ctx.seq, |r| r.client_id = Some(client_id.clone()));
    let scope = p.get("scope").cloned().unwrap_or_default();
    let now = sh.clock.mono();
    let (code, dev) = lock(&sh.auth).device_authorize(&client_id, &scope, now, &sh.cfg);
    Json(serde_json::json!({
        "device_code": code,
        "user_code": dev.user_code,
        "verification_uri": format!("{}/_sim/device", sh.base_url),
        "verification_uri_complete": format!("{}/_sim/device/approve?user_code={}", sh.base_url, dev.user_code),
        "expires_in": sh.cfg.device_expires_secs,
        "interval": dev.interval,
    }))
    .into_response()
}

fn token_json(t: &TokenSet) -> Response {
    let mut v = serde_json::json!({
        "token_type": "Bearer",
        "expires_in": t.expires_in,
        "access_token": t.access_token,
        "scope": t.scope,
    });
    if let Some(r) = &t.refresh_token {
        v["refresh_token"] = r.clone().into();
    }
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(v),
    )
        .into_response()
}

pub async fn token(
    State(sh): State<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(&uri, &headers, &body);
    let grant_type = p.get("grant_type").cloned().unwrap_or_default();
    sh.log_update(ctx.seq, |r| {
        r.grant_type = Some(grant_type.clone()).filter(|g| !g.is_empty())
    });
    let client_id = match client(&sh, &headers, &p) {
        Ok(c) => c,
        Err(e) => return oauth_error(&sh, &ctx, &e),
    };
    sh.log_update(ctx.seq, |r| r.client_id = Some(client_id.clone()));
    let now = sh.clock.mono();
    if !lock(&sh.limits).admit_token(&client_id, now, sh.cfg.token_per_second) {
        return oauth_error(&sh, &ctx, &OAuthError::TooManyRequests);
    }
    let wall = sh.clock.now().unix_timestamp();
    let get = |k: &str| p.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let missing = |k: &str| OAuthError::InvalidRequest(format!("The '{k}' parameter is required."));
    let result = {
        let mut auth = lock(&sh.auth);
        match grant_type.as_str() {
            DEVICE_GRANT => match get("device_code") {
                Some(dc) => auth.poll_device(&client_id, dc, now, &sh.cfg, sh.key, wall),
                None => Err(missing("device_code")),
            },
            "refresh_token" => match get("refresh_token") {
                Some(rt) => auth.refresh(&client_id, rt, now, &sh.cfg, sh.key, wall),
                None => Err(missing("refresh_token")),
            },
            "authorization_code" => match get("code") {
                Some(code) => auth.exchange_code(
                    &client_id,
                    // `client()` has already checked the secret when one is configured.
                    basic(&headers).is_some(),
                    code,
                    get("redirect_uri"),
                    get("code_verifier"),
                    now,
                    &sh.cfg,
                    sh.key,
                    wall,
                ),
                None => Err(missing("code")),
            },
            "" => Err(missing("grant_type")),
            _ => Err(OAuthError::UnsupportedGrantType),
        }
    };
    match result {
        Ok(t) => {
            // The grant is committed; a lost-response fault now swallows the answer.
            if let Some(mode) = sh.take_lost(|f| &mut f.token_lost_response) {
                return lose(&sh, &ctx, mode).await;
            }
            token_json(&t)
        }
        Err(e) => oauth_error(&sh, &ctx, &e),
    }
}

/// A 400 page for an authorize request that cannot be redirected (unknown client, unregistered
/// redirect URI): the browser stays on the authorization server, as Okta does (RFC 6749
/// §4.1.2.1 forbids redirecting to an unverified URI).
fn authorize_page_error(sh: &Shared, ctx: &Ctx, e: &OAuthError) -> Response {
    sh.log_update(ctx.seq, |r| r.error = Some(e.code().into()));
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "Constant Contact simulator: authorization error\n{}: {}\n",
            e.code(),
            e.description()
        ),
    )
        .into_response()
}

/// `GET /authorize` (reference §2.4 step 1, https://developer.constantcontact.com/api_guide/server_flow.html
/// and https://developer.constantcontact.com/api_guide/pkce_flow.html): `client_id`,
/// `redirect_uri` (one of `SimConfig::redirect_uris`, exact match), `response_type=code`,
/// `scope`, `state`, and for PKCE `code_challenge` + `code_challenge_method=S256`.
///
/// The simulated person: with `SimConfig::auto_approve` they approve at once (302 to
/// `redirect_uri?code=…&state=…`); otherwise a plain page offers the same URL with the sim-only
/// `decision=approve` or `decision=deny` (deny → `?error=access_denied&state=…`). Sim-only
/// `account` chooses the `platform_user_id` (default: the account signed in, [`super::Sim::sign_in`]).
pub async fn authorize(
    State(sh): State<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    uri: Uri,
) -> Response {
    let p: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(client_id) = get("client_id").map(str::to_owned) else {
        return authorize_page_error(&sh, &ctx, &OAuthError::InvalidClient);
    };
    sh.log_update(ctx.seq, |r| r.client_id = Some(client_id.clone()));
    let Some(raw_redirect) = get("redirect_uri") else {
        return authorize_page_error(
            &sh,
            &ctx,
            &OAuthError::InvalidRequest("The 'redirect_uri' parameter is required.".into()),
        );
    };
    let registered = sh.cfg.redirect_uris.iter().any(|r| r == raw_redirect);
    let redirect = match url::Url::parse(raw_redirect) {
        Ok(u) if registered => u,
        _ => {
            // Okta's wording for an unregistered URI.
            return authorize_page_error(
                &sh,
                &ctx,
                &OAuthError::InvalidRequest(
                    "The 'redirect_uri' parameter must be a Login redirect URI in the client app settings.".into(),
                ),
            );
        }
    };
    // From here on errors go back to the client on the redirect URI (RFC 6749 §4.1.2.1).
    let state = get("state");
    let back = |pairs: &[(&str, &str)]| -> Response {
        let mut to = redirect.clone();
        {
            let mut q = to.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
            if let Some(s) = state {
                q.append_pair("state", s);
            }
        }
        (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
    };
    let refuse = |code: &str, desc: &str| -> Response {
        let c = code.to_string();
        sh.log_update(ctx.seq, |r| r.error = Some(c));
        back(&[("error", code), ("error_description", desc)])
    };
    if get("response_type") != Some("code") {
        return refuse(
            "unsupported_response_type",
            "The response type is not supported by the authorization server. Only response_type=code is simulated.",
        );
    }
    let challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (Some(c), Some("S256")) => Some(c.to_owned()),
        (Some(_), _) | (None, Some(_)) => {
            return refuse(
                "invalid_request",
                "PKCE requires a code_challenge with code_challenge_method=S256.",
            );
        }
        (None, None) => None,
    };
    match get("decision") {
        Some("deny") => {
            return refuse(
                "access_denied",
                "The resource owner or authorization server denied the request.",
            );
        }
        Some("approve") => {}
        _ if sh.cfg.auto_approve => {}
        _ => {
            // The consent page a person would see: approve or deny by following a link.
            let mut yes = format!(
                "{}/oauth2/default/v1/authorize?{}",
                sh.base_url,
                uri.query().unwrap_or("")
            );
            let mut no = yes.clone();
            yes.push_str("&decision=approve");
            no.push_str("&decision=deny");
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!(
                    "Constant Contact simulator: client {client_id} asks for {}.\nApprove: {yes}\nDeny:    {no}\nOptional: &account=NAME (the tokens' platform_user_id; default `default`).\n",
                    get("scope").unwrap_or("")
                ),
            )
                .into_response();
        }
    }
    let account = match get("account") {
        Some(a) => a.to_owned(),
        None => lock(&sh.signed_in).clone(),
    };
    let code = lock(&sh.auth).new_code(
        &client_id,
        Some(raw_redirect),
        get("scope").unwrap_or(""),
        &account,
        challenge,
        sh.clock.mono(),
        sh.cfg.code_ttl,
    );
    back(&[("code", code.as_str())])
}

pub async fn keys(State(sh): State<Arc<Shared>>) -> Response {
    Json(sh.key.jwks()).into_response()
}

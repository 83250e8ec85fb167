//! Connect links at `ccsync ingest` (issue 14): `GET /connect/<token>` sends the customer to CC's
//! authorize page, `GET /oauth/callback` takes CC's redirect and stores the account's token set.
//! Mounted only when `auth.invite_secret` and `ingest.public_url` are both set.
//!
//! 1. `/connect/<token>`: the link's tag and expiry ([`super::invite::open`]), then its
//!    single-use marker (a used link is refused here, before the customer signs in to CC for
//!    nothing); then a 302 to CC's authorize URL: the authorization code flow with the client
//!    secret, scope `auth.scope` (`contact_data offline_access`), redirect URI
//!    `<public URL>/oauth/callback`, and a `state` signed for this link (reference §2.4 step 1,
//!    https://developer.constantcontact.com/api_guide/server_flow.html).
//! 2. `/oauth/callback`: the `state` first (nothing else of an unauthenticated request is looked
//!    at), then CC's `error=` (the customer denied), then the link is claimed (`SET NX`, so two
//!    callbacks of one link cannot both store), the code exchanged at once (CC codes live 5
//!    minutes and work once, reference §2.4) and the set stored exactly as
//!    `auth login --flow code` stores it ([`crate::auth::connect`]). A callback that stores
//!    nothing gives the claim back, so the customer may open the link again while it is valid.
//!
//! Every outcome answers a short HTML page (4xx for the customer's side, 5xx for ours), is logged
//! with the account and the link's short id (never the link, the code, the state or a token) and
//! counted in `ccsync_ingest_connect_total{outcome}` ([`crate::telemetry::CONNECT_OUTCOMES`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::SecretString;

use super::invite::{self, CALLBACK_PATH, Refusal};
use crate::auth::connect::{ConnectSetupError, Connector, FailureKind};
use crate::config::Settings;
use crate::ratelimit::Gate;

/// What the two routes share.
pub(crate) struct Connect {
    secret: SecretString,
    redirect_uri: String,
    scope: String,
    connector: Connector,
}

impl Connect {
    /// `None` when connect links are off (`auth.invite_secret` or `ingest.public_url` unset).
    pub(crate) fn from_settings(
        settings: &Settings,
        gate: Arc<dyn Gate>,
    ) -> Result<Option<Connect>, ConnectSetupError> {
        let (Some(secret), Some(public)) = (
            settings.auth.invite_secret.clone(),
            settings.ingest.public_url.as_ref(),
        ) else {
            return Ok(None);
        };
        Ok(Some(Connect {
            secret,
            redirect_uri: invite::redirect_uri(public),
            scope: settings.auth.scope.clone(),
            connector: Connector::from_settings(settings, gate)?,
        }))
    }

    /// The two routes, with their state applied (mergeable into any router).
    pub(crate) fn router<S: Clone + Send + Sync + 'static>(self: Arc<Self>) -> Router<S> {
        Router::new()
            .route("/connect/{token}", get(open))
            .route(CALLBACK_PATH, get(callback))
            .with_state(self)
    }
}

/// Count an outcome and answer its page.
fn answer(outcome: &'static str, status: StatusCode, title: &str, text: &str) -> Response {
    crate::telemetry::metrics().connect_outcome(outcome);
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body><h1>{t}</h1>\n<p>{x}</p></body></html>\n",
        t = escape(title),
        x = escape(text),
    );
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(h);
    r
}

/// Links and callbacks carry credentials in their URLs: never cached, never sent on as a Referer.
fn no_store(h: &mut axum::http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const ASK_FOR_A_NEW_ONE: &str = "Ask whoever sent it to you for a new link (`ccsync auth invite`).";

fn unavailable(account: &str, link: &str, why: &str) -> Response {
    tracing::warn!(outcome = "unavailable", account, link, error = %why, "connect link: Redis or the token endpoint is unavailable; nothing was stored");
    let mut r = answer(
        "unavailable",
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again shortly",
        "The connection service is briefly unavailable and nothing was connected. Open your link again in a few minutes.",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    r
}

/// `GET /connect/<token>`.
async fn open(State(c): State<Arc<Connect>>, Path(token): Path<String>) -> Response {
    let now = crate::clock::now_unix();
    let inv = match invite::open(&c.secret, &token, now) {
        Ok(i) => i,
        Err(Refusal::Invalid) => {
            tracing::info!(
                outcome = "tampered",
                "connect link refused: not signed with CCSYNC_AUTH__INVITE_SECRET (altered, cut short, or made with another secret)"
            );
            return answer(
                "tampered",
                StatusCode::FORBIDDEN,
                "This link is not valid",
                &format!(
                    "This connect link is not valid: it may have been cut short or altered when it was copied. Open the link exactly as you received it. {ASK_FOR_A_NEW_ONE}"
                ),
            );
        }
        Err(Refusal::Expired(i)) => {
            tracing::info!(outcome = "expired", account = %i.account, link = i.short_id(), expired_at = i.expires_at, "connect link refused: expired; issue a new one with `ccsync auth invite`");
            return answer(
                "expired",
                StatusCode::GONE,
                "This link has expired",
                &format!(
                    "This link to connect the Constant Contact account \"{}\" has expired, so nothing was connected. {ASK_FOR_A_NEW_ONE}",
                    i.account
                ),
            );
        }
    };
    match c.connector.store().connect_used(&inv.id).await {
        Ok(false) => {}
        Ok(true) => return used(&inv),
        Err(e) => return unavailable(&inv.account, inv.short_id(), &e.to_string()),
    }
    let state = invite::state_for(&c.secret, &inv, now);
    let to = c.connector.authorize_url(&c.redirect_uri, &c.scope, &state);
    crate::telemetry::metrics().connect_outcome("opened");
    tracing::info!(outcome = "opened", account = %inv.account, link = inv.short_id(), "connect link opened; customer sent to CC's authorize page");
    let mut r = StatusCode::FOUND.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to.as_str()) {
        h.insert(header::LOCATION, v);
    }
    no_store(h);
    r
}

fn used(inv: &invite::Invite) -> Response {
    tracing::info!(outcome = "used", account = %inv.account, link = inv.short_id(), "connect link refused: already used (links are single-use)");
    answer(
        "used",
        StatusCode::GONE,
        "This link was already used",
        &format!(
            "This link already connected the Constant Contact account \"{}\" (links work once). If you need to connect it again: {ASK_FOR_A_NEW_ONE}",
            inv.account
        ),
    )
}

/// `GET /oauth/callback?code=…&state=…` (or `?error=…&state=…`).
async fn callback(State(c): State<Arc<Connect>>, RawQuery(q): RawQuery) -> Response {
    let p: HashMap<String, String> = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let now = crate::clock::now_unix();
    let checked = p
        .get("state")
        .ok_or(Refusal::Invalid)
        .and_then(|s| invite::check_state(&c.secret, s, now));
    let st = match checked {
        Ok(st) => st,
        Err(Refusal::Invalid) => {
            tracing::info!(
                outcome = "bad_state",
                "connect callback refused: its state is missing or not one ingest signed (not a redirect from one of our links); nothing stored"
            );
            return answer(
                "bad_state",
                StatusCode::BAD_REQUEST,
                "This page cannot be used directly",
                "This address only takes Constant Contact's answer to a connect link, and this request is not one. Nothing was connected. Open the connect link you received to start again.",
            );
        }
        Err(Refusal::Expired(i)) => {
            tracing::info!(outcome = "bad_state", account = %i.account, link = i.short_id(), "connect callback refused: more than an hour passed since the link was opened; nothing stored");
            return answer(
                "bad_state",
                StatusCode::BAD_REQUEST,
                "This approval took too long",
                "More than an hour passed between opening your link and Constant Contact's answer, so nothing was connected. Open your link again to start afresh.",
            );
        }
    };
    let inv = &st.invite;
    let (account, link) = (inv.account.as_str(), inv.short_id());
    if let Some(err) = p.get("error") {
        // CC's own words, cut short; never the state or a code.
        let desc: String = p
            .get("error_description")
            .map(|d| d.chars().take(200).collect())
            .unwrap_or_default();
        if err == "access_denied" {
            tracing::info!(
                outcome = "denied",
                account,
                link,
                "connect callback: the customer did not approve at CC; nothing stored"
            );
            return answer(
                "denied",
                StatusCode::FORBIDDEN,
                "Not connected",
                &format!(
                    "You did not approve the connection, so the Constant Contact account \"{account}\" was not connected. To connect it after all, open your link again."
                ),
            );
        }
        let err: String = err.chars().take(64).collect();
        tracing::warn!(outcome = "cc_error", account, link, error = %err, description = %desc, "connect callback: CC answered with an error; nothing stored");
        return answer(
            "cc_error",
            StatusCode::BAD_REQUEST,
            "Not connected",
            &format!(
                "Constant Contact answered with an error ({err}), so nothing was connected. Open your link again; if this keeps happening, tell whoever sent you the link."
            ),
        );
    }
    let Some(code) = p.get("code") else {
        tracing::warn!(
            outcome = "cc_error",
            account,
            link,
            "connect callback without a code or an error; nothing stored"
        );
        return answer(
            "cc_error",
            StatusCode::BAD_REQUEST,
            "Not connected",
            "Constant Contact's answer carried no authorization, so nothing was connected. Open your link again.",
        );
    };
    // The marker lives as long as the link or this state could still come back.
    let ttl = (inv.expires_at.max(st.state_expires_at) - now).max(1) as u64;
    let store = c.connector.store();
    match store.claim_connect(&inv.id, account, ttl).await {
        Ok(true) => {}
        Ok(false) => return used(inv),
        Err(e) => return unavailable(account, link, &e.to_string()),
    }
    match c.connector.complete(account, code, &c.redirect_uri).await {
        Ok(done) => {
            tracing::info!(
                outcome = "connected",
                account,
                link,
                generation = done.generation,
                refresh_token_mode = done.mode.as_str(),
                "connect link: token set stored; workers pick the account up within seconds"
            );
            if let Some(n) = done.note {
                tracing::warn!(account, "{n}");
            }
            answer(
                "connected",
                StatusCode::OK,
                "Connected",
                &format!(
                    "The Constant Contact account \"{account}\" is connected. You can close this page."
                ),
            )
        }
        Err(f) => {
            // Nothing was stored: give the link back so the customer can try again.
            if let Err(e) = store.release_connect(&inv.id).await {
                tracing::warn!(account, link, error = %e, "connect link: could not release the single-use marker; the link stays used until it expires");
            }
            match f.kind {
                FailureKind::Retry => {
                    tracing::info!(outcome = "rejected", account, link, error = %f.detail, "connect callback: CC refused the code; nothing stored");
                    answer(
                        "rejected",
                        StatusCode::BAD_REQUEST,
                        "Not connected",
                        "Constant Contact did not accept the approval (it may have taken too long, or been sent twice), so nothing was connected. Open your link again.",
                    )
                }
                FailureKind::Operator => {
                    tracing::error!(outcome = "misconfigured", account, link, error = %f.detail, "connect callback failed on ccsync's configuration; nothing stored");
                    answer(
                        "misconfigured",
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Not connected",
                        "The connection service is not set up correctly, so nothing was connected. Please tell whoever sent you the link; they can fix it and send a new one.",
                    )
                }
                FailureKind::Unavailable => unavailable(account, link, &f.detail),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            escape(r#"<b a="x">&'"#),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}

//! The only room that knows Constant Contact's URLs and JSON (reqwest lives here and nowhere else).
//!
//! * [`oauth`]: the authorization server: device authorization, token polling, refresh
//!   (reference §2–3, <https://developer.constantcontact.com/api_guide/device_flow.html>).
//! * [`api`]: the V3 REST calls the pipeline needs: `contacts_json_import`, activity polls,
//!   `sign_up_form`, contact look-ups, lists and custom fields (reference §5–6).
//!
//! Every call is timed and counted in `ccsync_api_requests_total{endpoint,status}`, and every
//! failure is classified into a [`CcError`] whose [`CcError::action`] says what the caller does next.

pub mod api;
pub mod oauth;

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::telemetry::metrics;

/// The `endpoint` label of the API metrics (DESIGN §5.4), one per CC endpoint ccsync calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ContactsJsonImport,
    Activities,
    SignUpForm,
    Contacts,
    ContactLists,
    ContactCustomFields,
    Token,
    DeviceAuthorize,
}

impl Endpoint {
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ContactsJsonImport => "contacts_json_import",
            Endpoint::Activities => "activities",
            Endpoint::SignUpForm => "sign_up_form",
            Endpoint::Contacts => "contacts",
            Endpoint::ContactLists => "contact_lists",
            Endpoint::ContactCustomFields => "contact_custom_fields",
            Endpoint::Token => "token",
            Endpoint::DeviceAuthorize => "device_authorize",
        }
    }
}

/// Record one finished call (status `None` = transport failure) in the API metrics.
pub fn record_call(endpoint: Endpoint, status: Option<u16>, started: Instant) {
    let m = metrics();
    let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
    m.api_requests
        .with_label_values(&[endpoint.label(), &status])
        .inc();
    m.api_request_duration
        .with_label_values(&[endpoint.label()])
        .observe(started.elapsed().as_secs_f64());
}

/// What the caller does after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// Transient (5xx, timeout, connection): try again later with backoff; ack nothing.
    Retry,
    /// The access token was refused: refresh once (after a 401) and retry.
    Reauthenticate,
    /// 429: report it to the rate limiter (which shares the cool-down or pause), then retry.
    RateLimited,
    /// CC refused this content (400 and friends): resubmitting it unchanged cannot succeed;
    /// dead-letter with CC's text.
    Reject,
    /// The connection is dead or the app lacks rights (403): pause and alert a human.
    Halt,
}

/// One entry of CC's error array `[{error_key, error_message}]` (or its single-object form).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    #[serde(default)]
    pub error_key: String,
    #[serde(default)]
    pub error_message: String,
}

/// A failed CC API call, classified.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CcError {
    #[error("CC refused the access token (401)")]
    Unauthorized,
    #[error("CC rate limit (429 {error_key})")]
    RateLimited { error_key: String },
    #[error("CC rejected the request ({status}): {}", summary(.errors))]
    Rejected { status: u16, errors: Vec<ApiError> },
    #[error("CC forbids this call (403): missing scope or privilege, or the app is deactivated")]
    Forbidden,
    #[error("CC server error ({status})")]
    Server { status: u16 },
    #[error("transport failure talking to CC: {0}")]
    Transport(String),
    #[error("unexpected answer from CC ({status}): {detail}")]
    Unexpected { status: u16, detail: String },
}

fn summary(errors: &[ApiError]) -> String {
    if errors.is_empty() {
        return "no detail".into();
    }
    errors
        .iter()
        .map(|e| format!("{}: {}", e.error_key, e.error_message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl CcError {
    pub fn action(&self) -> RetryAction {
        match self {
            CcError::Unauthorized => RetryAction::Reauthenticate,
            CcError::RateLimited { .. } => RetryAction::RateLimited,
            CcError::Rejected { .. } => RetryAction::Reject,
            CcError::Forbidden => RetryAction::Halt,
            CcError::Server { .. } | CcError::Transport(_) | CcError::Unexpected { .. } => {
                RetryAction::Retry
            }
        }
    }

    /// Classify a non-2xx answer from the API host from its status and body.
    pub fn from_response(status: u16, body: &[u8]) -> CcError {
        match status {
            401 => CcError::Unauthorized,
            403 => CcError::Forbidden,
            429 => {
                // CC answers 429 with a single object and no Retry-After (reference §4); an
                // unrecognizable body counts as `throttled`.
                let key = parse_errors(body)
                    .into_iter()
                    .next()
                    .map(|e| e.error_key)
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| "throttled".into());
                CcError::RateLimited { error_key: key }
            }
            500..=599 => CcError::Server { status },
            400 | 404 | 409 | 413 | 415 | 422 => CcError::Rejected {
                status,
                errors: parse_errors(body),
            },
            _ => CcError::Unexpected {
                status,
                detail: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            },
        }
    }
}

/// Parse both of CC's error shapes: the array and the bare object (reference §7).
pub fn parse_errors(body: &[u8]) -> Vec<ApiError> {
    if let Ok(v) = serde_json::from_slice::<Vec<ApiError>>(body) {
        return v;
    }
    if let Ok(e) = serde_json::from_slice::<ApiError>(body) {
        return vec![e];
    }
    Vec::new()
}

/// The HTTP client for CC: rustls (aws-lc-rs), a request timeout so a hanging CC cannot wedge a
/// worker, and no redirects (CC does not redirect API calls; a redirect is a misconfiguration).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ccsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("TLS backend available")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_cc_error_shapes() {
        let e = CcError::from_response(
            429,
            br#"{"error_key":"quota_exceeded","error_message":"Limit Exceeded"}"#,
        );
        assert!(
            matches!(e, CcError::RateLimited { ref error_key } if error_key == "quota_exceeded")
        );
        let e = CcError::from_response(429, b"");
        assert!(matches!(e, CcError::RateLimited { ref error_key } if error_key == "throttled"));
        let e = CcError::from_response(
            400,
            br#"[{"error_key":"contacts.api.validation.error","error_message":"bad"}]"#,
        );
        assert_eq!(e.action(), RetryAction::Reject);
        assert!(e.to_string().contains("contacts.api.validation.error"));
        assert_eq!(
            CcError::from_response(503, b"").action(),
            RetryAction::Retry
        );
        assert_eq!(
            CcError::from_response(401, b"").action(),
            RetryAction::Reauthenticate
        );
    }
}

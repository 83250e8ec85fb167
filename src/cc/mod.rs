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
    /// `PUT /contacts/{contact_id}`.
    ContactsPut,
    /// `POST /activities/contact_delete`.
    ContactDelete,
    /// `POST /activities/remove_list_memberships`.
    RemoveListMemberships,
    ContactLists,
    ContactCustomFields,
    Token,
    DeviceAuthorize,
}

impl Endpoint {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Endpoint::ContactsJsonImport => "contacts_json_import",
            Endpoint::Activities => "activities",
            Endpoint::SignUpForm => "sign_up_form",
            Endpoint::Contacts => "contacts",
            Endpoint::ContactsPut => "contacts_put",
            Endpoint::ContactDelete => "contact_delete",
            Endpoint::RemoveListMemberships => "remove_list_memberships",
            Endpoint::ContactLists => "contact_lists",
            Endpoint::ContactCustomFields => "contact_custom_fields",
            Endpoint::Token => "token",
            Endpoint::DeviceAuthorize => "device_authorize",
        }
    }
}

/// Record one finished call (status `None` = transport failure) in the API metrics.
pub(crate) fn record_call(endpoint: Endpoint, status: Option<u16>, started: Instant) {
    let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
    metrics().api_request(endpoint.label(), &status, started.elapsed());
}

/// What the caller does after a failed call: the second column of CC's answer table
/// ([`CcError::from_response`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryAction {
    /// Transient (5xx, timeout, connection, an unreadable answer): try again later with backoff;
    /// ack nothing. Several in a row mean CC is down: the caller pauses and probes.
    Retry,
    /// The access token was refused: refresh once (after a 401) and retry.
    Reauthenticate,
    /// 429: report it to the rate limiter (which shares the cool-down or pause), then retry.
    RateLimited,
    /// 409 on `sign_up_form`, CC's "simultaneous requests attempting to modify the same
    /// contact": retry after a short jittered delay, a bounded number of times, then give the
    /// message back to the queue (never dead-letter it).
    RetrySoon,
    /// CC refused this content (a row's values): resubmitting it unchanged cannot succeed;
    /// find the row and dead-letter it with CC's text.
    Reject,
    /// CC refused the import as a whole for something that is not in its rows (a list id it
    /// lacks, the content type): halving cannot help; check the configuration and the lists.
    RejectEnvelope,
    /// The activity is unknown to CC (404 after its 10-day retention, or a bad id): nothing
    /// says whether the import ran; send the batch again (imports are upserts).
    Forget,
    /// 403: missing scope or user privilege, or the app is deactivated. Pause (reason
    /// `forbidden`), probe slowly, resume by itself; a human fixes it in CC.
    Forbidden,
}

/// One entry of CC's error array `[{error_key, error_message}]` (or its single-object form).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    #[serde(default)]
    pub error_key: String,
    #[serde(default)]
    pub error_message: String,
}

/// The `error_key` of a CC 429 (reference §4): the keys ccsync acts on, and any other CC may
/// send (today `too_many_activities`: 1,000 queued activities for the account) kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CcErrorKey {
    /// "Too Many Requests": the per-second limit; clears within a second.
    Throttled,
    /// "Limit Exceeded": the daily quota, until 00:00 UTC.
    QuotaExceeded,
    /// Any other key, as CC wrote it.
    Other(String),
}

impl CcErrorKey {
    /// The key as CC writes it.
    pub fn as_str(&self) -> &str {
        match self {
            CcErrorKey::Throttled => "throttled",
            CcErrorKey::QuotaExceeded => "quota_exceeded",
            CcErrorKey::Other(k) => k,
        }
    }
}

impl From<&str> for CcErrorKey {
    fn from(k: &str) -> Self {
        match k {
            "throttled" => CcErrorKey::Throttled,
            "quota_exceeded" => CcErrorKey::QuotaExceeded,
            other => CcErrorKey::Other(other.to_string()),
        }
    }
}

impl From<String> for CcErrorKey {
    fn from(k: String) -> Self {
        match CcErrorKey::from(k.as_str()) {
            CcErrorKey::Other(_) => CcErrorKey::Other(k),
            known => known,
        }
    }
}

impl PartialEq<str> for CcErrorKey {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl std::fmt::Display for CcErrorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed CC API call, classified.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CcError {
    #[error("CC refused the access token (401)")]
    Unauthorized,
    #[error("CC rate limit (429 {error_key})")]
    RateLimited { error_key: CcErrorKey },
    #[error("CC rejected the request ({status}): {}", summary(.errors))]
    Rejected { status: u16, errors: Vec<ApiError> },
    #[error("CC rejected the import as a whole ({status}): {}", summary(.errors))]
    EnvelopeRejected { status: u16, errors: Vec<ApiError> },
    #[error("CC reports a simultaneous modification of the contact (409): {}", summary(.errors))]
    Conflict { errors: Vec<ApiError> },
    #[error("CC does not know this activity (404): past its 10-day retention, or a bad id")]
    UnknownActivity,
    #[error(
        "CC forbids this call (403): a scope or user privilege is missing, or the app is deactivated"
    )]
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
    pub(crate) fn action(&self) -> RetryAction {
        match self {
            CcError::Unauthorized => RetryAction::Reauthenticate,
            CcError::RateLimited { .. } => RetryAction::RateLimited,
            CcError::Rejected { .. } => RetryAction::Reject,
            CcError::EnvelopeRejected { .. } => RetryAction::RejectEnvelope,
            CcError::Conflict { .. } => RetryAction::RetrySoon,
            CcError::UnknownActivity => RetryAction::Forget,
            CcError::Forbidden => RetryAction::Forbidden,
            CcError::Server { .. } | CcError::Transport(_) | CcError::Unexpected { .. } => {
                RetryAction::Retry
            }
        }
    }

    /// True for the answers that mean CC itself is failing (counted by the outage breaker).
    pub(crate) fn is_outage(&self) -> bool {
        matches!(
            self,
            CcError::Server { .. } | CcError::Transport(_) | CcError::Unexpected { .. }
        )
    }

    /// CC's answer table: classify a non-2xx answer of `endpoint` from its status and body.
    ///
    /// | status | endpoint | CC's words (reference §4, §5.1, §6, §7) | what ccsync does |
    /// |---|---|---|---|
    /// | 401 | any | "access token invalid or expired" | refresh once, retry |
    /// | 403 | any | "missing scope, missing user privilege, or deactivated application" | pause `forbidden`, probe slowly |
    /// | 429 `throttled` | any | "Too Many Requests", clears within a second | shared cool-down |
    /// | 429 `quota_exceeded` | any | "Limit Exceeded", until 00:00 UTC | pause `quota` |
    /// | 429 other | bulk POSTs | "You exceeded 1,000 queued activities for this user account" | shared cool-down, retry |
    /// | 404 | `GET /activities/{id}` | "404 if the ID is unknown"; status kept 10 days | re-send the batch |
    /// | other 4xx | `GET /activities/{id}` | the poll, not the import, failed | retry the poll later |
    /// | 400 naming a list | `contacts_json_import` | `list_ids` "required, 1..50" existing lists | envelope: check lists, never halve |
    /// | 415 | any write | "Content-Type is not application/json" | envelope (a ccsync bug): never halve |
    /// | 409 | `sign_up_form`, `PUT /contacts/{id}` | "simultaneous requests attempting to modify the same contact" | retry soon, then requeue |
    /// | 400, 404, 409, 413, 422 | other | "malformed JSON or schema/validation failure; do not resubmit unchanged" | reject this content |
    /// | 5xx | any | "server problem / temporarily unavailable → retry with backoff" | retry; several in a row: outage pause |
    pub fn from_response(endpoint: Endpoint, status: u16, body: &[u8]) -> CcError {
        match (status, endpoint) {
            (401, _) => CcError::Unauthorized,
            (403, _) => CcError::Forbidden,
            (429, _) => {
                // CC answers 429 with a single object and no Retry-After (reference §4); an
                // unrecognizable body counts as `throttled`.
                let key = parse_errors(body)
                    .into_iter()
                    .next()
                    .map(|e| e.error_key)
                    .filter(|k| !k.is_empty())
                    .map_or(CcErrorKey::Throttled, CcErrorKey::from);
                CcError::RateLimited { error_key: key }
            }
            (500..=599, _) => CcError::Server { status },
            (404, Endpoint::Activities) => CcError::UnknownActivity,
            // A poll that fails says nothing about the import: try the poll again later.
            (400..=499, Endpoint::Activities) => CcError::Server { status },
            // A PUT that only changes the permission of the address it read meets a 409 only
            // when someone else changes the contact meanwhile (reference §7): retry soon.
            (409, Endpoint::SignUpForm | Endpoint::ContactsPut) => CcError::Conflict {
                errors: parse_errors(body),
            },
            (415, _) => CcError::EnvelopeRejected {
                status,
                errors: parse_errors(body),
            },
            (400, Endpoint::ContactsJsonImport) => {
                let errors = parse_errors(body);
                let names_lists = errors.iter().any(|e| {
                    let text = format!("{} {}", e.error_key, e.error_message).to_lowercase();
                    text.contains("list_id") || text.contains("list id") || text.contains("list ")
                });
                if names_lists {
                    CcError::EnvelopeRejected { status, errors }
                } else {
                    CcError::Rejected { status, errors }
                }
            }
            (400 | 404 | 409 | 413 | 422, _) => CcError::Rejected {
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
pub(crate) fn parse_errors(body: &[u8]) -> Vec<ApiError> {
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
    fn error_keys_keep_what_cc_wrote() {
        for k in ["throttled", "quota_exceeded", "too_many_activities"] {
            assert_eq!(CcErrorKey::from(k).as_str(), k);
        }
        assert_eq!(CcErrorKey::from("throttled"), CcErrorKey::Throttled);
        assert!(matches!(CcErrorKey::from("x".to_string()), CcErrorKey::Other(k) if k == "x"));
    }

    #[test]
    fn classifies_cc_error_shapes() {
        let e = CcError::from_response(
            Endpoint::Contacts,
            429,
            br#"{"error_key":"quota_exceeded","error_message":"Limit Exceeded"}"#,
        );
        assert!(
            matches!(e, CcError::RateLimited { ref error_key } if error_key == "quota_exceeded")
        );
        let e = CcError::from_response(Endpoint::Contacts, 429, b"");
        assert!(matches!(e, CcError::RateLimited { ref error_key } if error_key == "throttled"));
        let e = CcError::from_response(
            Endpoint::SignUpForm,
            400,
            br#"[{"error_key":"contacts.api.validation.error","error_message":"bad"}]"#,
        );
        assert_eq!(e.action(), RetryAction::Reject);
        assert!(e.to_string().contains("contacts.api.validation.error"));
        assert_eq!(
            CcError::from_response(Endpoint::Contacts, 503, b"").action(),
            RetryAction::Retry
        );
        assert_eq!(
            CcError::from_response(Endpoint::Contacts, 401, b"").action(),
            RetryAction::Reauthenticate
        );
    }

    /// The same status means different things on different endpoints (issue 12).
    #[test]
    fn the_answer_table_reads_each_answer_per_endpoint() {
        use Endpoint::*;
        let act = |e, s, b: &[u8]| CcError::from_response(e, s, b).action();
        // 403 is its own pause, on every endpoint.
        for e in [
            ContactsJsonImport,
            Activities,
            SignUpForm,
            ContactCustomFields,
        ] {
            assert_eq!(act(e, 403, b""), RetryAction::Forbidden);
        }
        // 409 on sign_up_form is transient; elsewhere it refuses the content.
        assert_eq!(act(SignUpForm, 409, b"[]"), RetryAction::RetrySoon);
        assert_eq!(act(Contacts, 409, b"[]"), RetryAction::Reject);
        // A poll's 404 means an unknown activity; its other 4xx are the poll's problem.
        assert_eq!(act(Activities, 404, b""), RetryAction::Forget);
        assert_eq!(act(Activities, 400, b""), RetryAction::Retry);
        assert_eq!(act(Activities, 503, b""), RetryAction::Retry);
        // An import refused for its lists is an envelope problem, never the rows'.
        let lists = br#"[{"error_key":"contacts.api.validation.error","error_message":"list_ids contains a list that does not exist: 6f1c"}]"#;
        assert_eq!(
            act(ContactsJsonImport, 400, lists),
            RetryAction::RejectEnvelope
        );
        let row = br#"[{"error_key":"contacts.api.validation.error","error_message":"import_data[3].first_name is too long"}]"#;
        assert_eq!(act(ContactsJsonImport, 400, row), RetryAction::Reject);
        assert_eq!(
            act(ContactsJsonImport, 415, b""),
            RetryAction::RejectEnvelope
        );
        // The 1,000-queued-activities 429 goes to the rate limiter like the others.
        let queued = br#"{"error_key":"too_many_activities","error_message":"You exceeded 1,000 queued activities"}"#;
        assert_eq!(
            act(ContactsJsonImport, 429, queued),
            RetryAction::RateLimited
        );
        assert!(CcError::from_response(Activities, 502, b"").is_outage());
        assert!(!CcError::from_response(Activities, 403, b"").is_outage());
    }
}

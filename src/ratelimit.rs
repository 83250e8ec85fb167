//! One request budget for every replica: a `governor` limiter per process in front of a GCRA in
//! Redis shared by all replicas, a daily quota counter keyed by the UTC date, and CC's 429s turned
//! into shared cool-downs and pauses (DESIGN §4).
//!
//! (The shared implementation lands with issue 4; this file holds the contract the other rooms use.)

use std::time::Duration;

/// What a call is for. Every CC call names its kind, so the daily reserve can keep polls and
/// look-ups alive while a backlog waits, and the token endpoint gets its own 1 request/s limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// `POST /activities/contacts_json_import`
    Import,
    /// `GET /activities/{id}`
    Poll,
    /// `POST /contacts/sign_up_form`
    Upsert,
    /// `GET /contacts`, `/contact_lists`, `/contact_custom_fields` and their POSTs.
    Lookup,
    /// The authorization server's token endpoint (1 request/s, not counted in the API quota).
    Token,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Import => "import",
            CallKind::Poll => "poll",
            CallKind::Upsert => "upsert",
            CallKind::Lookup => "lookup",
            CallKind::Token => "token",
        }
    }

    /// Polls, look-ups and token calls keep work already in flight moving; they may dip into the
    /// daily reserve, new imports and upserts may not.
    pub fn uses_reserve(self) -> bool {
        matches!(self, CallKind::Poll | CallKind::Lookup | CallKind::Token)
    }
}

/// Why a call may not go now. Each variant says what the caller does next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RateLimitError {
    /// The day's budget (for this kind of call) is spent: pause until 00:00 UTC, keep messages queued.
    #[error("daily quota spent; paused for {0:?} until 00:00 UTC")]
    QuotaPaused(Duration),
}

/// The face the other rooms call. Implemented by the shared limiter; test doubles implement it too.
#[async_trait::async_trait]
pub trait Gate: Send + Sync {
    /// Wait until a call of this kind may go (local smoothing, shared per-second limit, shared
    /// cool-down), and count it against the daily quota. Errs instead of waiting for the next day.
    async fn acquire(&self, kind: CallKind) -> Result<(), RateLimitError>;
    /// CC answered 429 with this `error_key` (`throttled`, `quota_exceeded`, or anything else,
    /// which counts as `throttled`). Shared with every replica.
    async fn report_429(&self, kind: CallKind, error_key: &str);
}

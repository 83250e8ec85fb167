//! One request budget for every replica: a `governor` limiter per process in front of a GCRA in
//! Redis shared by all replicas, a daily quota counter keyed by the UTC date, and CC's 429s turned
//! into shared cool-downs and pauses (DESIGN §4, reference `constant-contact-v3.md` §4).
//!
//! Other rooms see [`Gate`] (`acquire` before every CC call, `report_429` after a 429), and the
//! batcher sees [`SharedLimiter::budget`] + [`request_spacing`] (its one schedule for every group,
//! [`crate::batch::Pace`]).
//!
//! # The per-second limit: GCRA, burst 1, `T = (1 s + jitter) / per_second`
//!
//! CC allows 4 requests per second per API key, and the simulator (like the tests) reads that as
//! "never more than 4 requests in *any* sliding 1-second window". A GCRA with emission interval `T`
//! and burst `b` admits `b` requests at once and then one every `T`, so a 1-second window can hold
//! `b + ⌊1 s / T⌋` requests: with `b = 2` and `T = 250 ms` that is 5 within 750 ms (a unit test
//! shows it). So the shared GCRA uses **burst 1** (tolerance `τ = 0`) and spaces permits **`T =
//! (1 s + jitter_allowance) / per_second`** apart: 275 ms for 4/s with the default 100 ms
//! allowance (3.64 req/s, 91% of the nominal rate), 110 ms for a partner key's 10/s. Why the
//! allowance: CC counts a request when it *arrives*, not when we grant it; the first and the fifth
//! of five consecutive permits are `4 × 275 ms = 1.1 s` apart, so they still arrive more than a
//! second apart unless their network/scheduling delays differ by 100 ms or more. (A property test
//! checks exactly this with random request times and delays.) The per-second limit is rarely the
//! binding one anyway: 10,000/day is 0.12 req/s on average.
//!
//! The GCRA state (the *theoretical arrival time*, µs) lives in Redis and one Lua script
//! (`acquire.lua`) reads and updates it atomically, using Redis `TIME`, never the caller's clock,
//! so replicas with skewed clocks agree. A denied caller sleeps for the wait the script returns
//! and asks again; a permit is only taken when the script grants it, so a cancelled `acquire`
//! costs nothing, and the grant is as close as possible to the moment the request leaves (the
//! jitter allowance only has to cover the trip back from Redis and the trip to CC). One replica
//! alone gets the whole rate; three replicas share it first come, first served (no static split).
//! Every attempt starts after a random 0–4 ms so that "first come" is a fair coin toss between
//! replicas: without it the replica that won the last permit tends to win the next one too (its
//! local limiter releases its next caller exactly on time) and the others starve.
//!
//! In front of Redis each process has a `governor` limiter at the same rate and burst 1: a burst of
//! callers inside one process reaches Redis one at a time instead of all asking at once.
//!
//! Measured (`tests/ratelimit_multiprocess.rs`, 3 processes × 4 tasks against the simulator on one
//! 2-core machine): ~3.58 req/s together, 0 `throttled`, the tightest five requests 1.10 s apart on
//! arrival, splits such as 16/13/15 permits.
//!
//! # The daily quota
//!
//! The same script counts granted API calls in `…:day:{YYYY-MM-DD}` (the caller's UTC date from
//! [`crate::clock`], which honours the test-only clock offset; TTL: until midnight + 1 h) and
//! refuses a kind once the count reaches its limit: `daily_quota - daily_reserve` for imports,
//! upserts and the opt-out feed, `daily_quota` for polls and look-ups ([`CallKind::uses_reserve`]), so a backlog of
//! imports can never starve the polls that let in-flight work finish. A refused `acquire` returns
//! [`RateLimitError::QuotaPaused`] with the time to 00:00 UTC at once; it never waits a day. Token
//! calls are not counted (they go to the authorization host). The day is the caller's because the
//! quota follows CC's calendar and tests move it with the test-only offset; replicas whose clocks
//! disagree near 00:00 UTC may count on two day keys for that moment (keep NTP on; CC's own
//! `quota_exceeded` still pauses everyone, see below).
//!
//! # 429s (`report_429`)
//!
//! * `throttled`, `activities_queued`, or a body we cannot recognize → a shared cool-down key with
//!   `PX = throttle_cooldown_ms + 0..25%` jitter; every replica's `acquire` waits it out. A 429 from
//!   the token endpoint cools down the token limit only.
//! * `quota_exceeded` (CC counted more than we did: another app on the same key) → the day's
//!   counter is raised to the full quota, so every replica's next `acquire` of any API kind returns
//!   `QuotaPaused` until the date changes at 00:00 UTC; this replica also remembers it locally.
//!
//! `ccsync_rate_limited_total{error_key}` counts them (labels `throttled`, `quota_exceeded`,
//! `activities_queued`, `unrecognized`); `ccsync_paused{reason="quota"}` is 1 while imports cannot
//! go today and back to 0 once a count below the import limit is seen (the next day);
//! `ccsync_daily_quota_remaining` follows the shared count; `ccsync_ratelimit_wait_seconds`
//! observes every `acquire`.
//!
//! # Pacing the batcher
//!
//! Under trickle load, sending each batch after the minimum linger would spend the day's budget
//! early. [`pacing_linger`] spreads what is left over the time left, each replica taking its share:
//!
//! ```text
//! linger = clamp(until_reset × calls_per_batch × replicas / (remaining_today − reserve),
//!                linger_min, linger_max)
//! ```
//!
//! Worked example (standard key, reserve 300, one replica): at 12:00 UTC 4,700 requests are used,
//! so 5,300 remain and 5,000 are the imports'; 43,200 s remain; a batch costs about 4 calls
//! (1 import + 3 polls). `linger = 43,200 × 4 × 1 / 5,000 = 34.56 s`, inside `[2 s, 600 s]`: one
//! batch every 34.56 s spends exactly the 5,000 requests by midnight. With `expected_replicas = 3`
//! each replica lingers 103.68 s, and the three together again spend 5,000 by midnight. Under this
//! rule the ratio `remaining / until_reset` stays constant, so the linger is the same all day and
//! the budget lasts to the reset. `replicas` is the configured `expected_replicas`, not a live
//! count: with fewer replicas running the budget is under-used (one replica of three expected
//! still uses ~89% on a simulated trickle day), never over-used. Why the factor matters: without
//! it three replicas would each pace to the whole budget, spend three times the pace in the
//! morning and hit `linger_max` with the import budget gone hours before midnight (the paused-time
//! simulation showed 3.4 h). Under heavy load the batcher fills to its size limits before the
//! linger ends, so pacing never slows a real backlog.
//!
//! ## One plan for every group and every call (issue 11)
//!
//! The linger above is one batch's. With G groups (list sets, accounts, consent paths) each
//! lingering on its own, G imports would go per linger: G times the plan. So the batcher does not
//! linger groups on their own clocks; it releases them against **one schedule**
//! ([`crate::batch`] module docs): [`request_spacing`] says what one request is worth,
//!
//! ```text
//! spacing = until_reset × replicas / (remaining_today − reserve)
//! ```
//!
//! (the worked example: 43,200 × 1 / 5,000 = 8.64 s a request), and each batch handed out moves
//! the schedule's next slot by its cost × spacing: an import 1 + its typical polls
//! (`CALLS_PER_BATCH`, 4), an explicit-consent group one `sign_up_form` per contact. Due groups go
//! oldest first, one per slot; `linger_min` is the least a group waits, `linger_max` the most
//! while the budget affords it (the schedule may run ahead of its even pace by [`run_ahead`], a
//! twentieth of the time to the reset, which spends at most a twentieth of what is left); full
//! batches still go at once and are charged. The spacing is recomputed from the shared count every few
//! seconds, so polls, look-ups and 429s spent by anyone slow the schedule down too.
//! `ccsync_daily_quota_projected` = used + the shared count's pace over the last hour × the time
//! to 00:00 UTC ([`Projection`]): above the quota, the day will end paused.
//!
//! # Redis unreachable
//!
//! A failed or slow (`redis_timeout_ms`) Redis call switches the replica to a local fallback (one
//! `warn` line when it starts, one `info` line when Redis is back, nothing per call): an in-process
//! GCRA at `⌊per_second / expected_replicas⌋` per sliding second (4/s over 3 replicas: 1/s each,
//! 3/s together; if `per_second < expected_replicas`, the average share) and, for the day, a
//! `1/expected_replicas` share of what was left at the last count it saw. It never runs unlimited.
//! Once a second one caller probes Redis; when it answers, the permits granted meanwhile are added
//! to the shared counter and the shared limit applies again.
//!
//! # Redis keys (per API key; `{client_id}` is a hash tag, so Redis Cluster works)
//!
//! `{prefix}:rl:{client_id}:gcra`, `…:cooldown`, `…:token:gcra`, `…:token:cooldown`,
//! `…:day:{YYYY-MM-DD}`.

mod fair;
mod fallback;
mod gcra;
mod limits;
mod pacing;
mod shared;
mod store;

pub use fair::{FairTurns, Shares};
pub use gcra::{GcraDecision, GcraParams, LocalGcra, gcra_decide, max_in_sliding_window};
pub use pacing::{Budget, Projection, pacing_linger, request_spacing, run_ahead};
pub use shared::SharedLimiter;
pub use store::{LimiterError, SharedDecision};

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
    /// `GET /contacts?status=unsubscribed&optout_after=`: the opt-out feed's polls. Counted like
    /// any API call but kept out of the daily reserve: the feed moves no batch along, and its
    /// cursor lets it catch up after 00:00 UTC with nothing lost.
    Feed,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Import => "import",
            CallKind::Poll => "poll",
            CallKind::Upsert => "upsert",
            CallKind::Lookup => "lookup",
            CallKind::Token => "token",
            CallKind::Feed => "feed",
        }
    }

    /// Polls, look-ups and token calls keep work already in flight moving; they may dip into the
    /// daily reserve, new imports and upserts may not.
    pub(crate) fn uses_reserve(self) -> bool {
        matches!(self, CallKind::Poll | CallKind::Lookup | CallKind::Token)
    }
}

/// Why a call may not go now. Each variant says what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

//! The settings of each section that needs no cross-section validation: `[auth]`,
//! `[ratelimit]`, `[worker]`, `[testing]`, `[optouts]` and `[accounts.<name>]`.

use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

use super::load::{empty_is_none, millis, optional_http_url, optional_secret, secs, string_like};
use super::{ConfigError, invalid};
use secrecy::SecretString;

/// `[auth]`. Durations are written in the unit their key names (`refresh_before_secs`,
/// `lock_lease_ms`); `Debug` (what `config check` prints) shows them so.
#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    pub scope: String,
    /// `CCSYNC_AUTH__REFRESH_BEFORE_SECS`.
    #[serde(rename = "refresh_before_secs", deserialize_with = "secs")]
    pub refresh_before: Duration,
    /// `CCSYNC_AUTH__LOCK_LEASE_MS`.
    #[serde(rename = "lock_lease_ms", deserialize_with = "millis")]
    pub lock_lease: Duration,
    /// `CCSYNC_AUTH__WAIT_BOUND_SECS`.
    #[serde(rename = "wait_bound_secs", deserialize_with = "secs")]
    pub wait_bound: Duration,
    /// `CCSYNC_AUTH__KEEPALIVE_SECS`.
    #[serde(rename = "keepalive_secs", deserialize_with = "secs")]
    pub keepalive: Duration,
    /// `CCSYNC_AUTH__JWKS_URL` (http or https); `None` (empty): tokens are only decoded.
    #[serde(default, deserialize_with = "optional_http_url")]
    pub jwks_url: Option<url::Url>,
    /// `CCSYNC_AUTH__INVITE_SECRET`: the HMAC key of connect links (`ccsync auth invite`, served
    /// by `ccsync ingest`); at least 32 characters. `None`: no connect links.
    #[serde(default, deserialize_with = "optional_secret")]
    pub invite_secret: Option<SecretString>,
}

/// `[ratelimit]`.
#[derive(Clone, Deserialize)]
pub struct RateLimitSettings {
    pub per_second: u32,
    pub daily_quota: u64,
    pub daily_reserve: u64,
    pub token_per_second: u32,
    pub expected_replicas: u32,
    /// `CCSYNC_RATELIMIT__JITTER_ALLOWANCE_MS`: extra spacing (over 1 s / per_second) that
    /// absorbs network jitter between a permit and the moment CC counts the request (see
    /// `crate::ratelimit` docs).
    #[serde(rename = "jitter_allowance_ms", deserialize_with = "millis")]
    pub jitter_allowance: Duration,
    /// `CCSYNC_RATELIMIT__THROTTLE_COOLDOWN_MS`: shared cool-down after a `throttled` 429.
    #[serde(rename = "throttle_cooldown_ms", deserialize_with = "millis")]
    pub throttle_cooldown: Duration,
    /// `CCSYNC_RATELIMIT__REDIS_TIMEOUT_MS`: bound on one Redis round trip of the limiter
    /// before it falls back to local limits.
    #[serde(rename = "redis_timeout_ms", deserialize_with = "millis")]
    pub redis_timeout: Duration,
}

/// `[worker]`; each duration keeps its key's unit (`CCSYNC_WORKER__LINGER_MIN_MS` is
/// milliseconds, `CCSYNC_WORKER__MAX_HOLD_SECS` seconds).
#[derive(Clone, Deserialize)]
pub struct WorkerSettings {
    pub prefetch: u16,
    pub batch_max_contacts: usize,
    pub batch_max_bytes: usize,
    #[serde(rename = "linger_min_ms", deserialize_with = "millis")]
    pub linger_min: Duration,
    #[serde(rename = "linger_max_ms", deserialize_with = "millis")]
    pub linger_max: Duration,
    pub max_activities_in_flight: usize,
    #[serde(rename = "max_hold_secs", deserialize_with = "secs")]
    pub max_hold: Duration,
    #[serde(rename = "request_timeout_secs", deserialize_with = "secs")]
    pub request_timeout: Duration,
    #[serde(rename = "poll_initial_ms", deserialize_with = "millis")]
    pub poll_initial: Duration,
    #[serde(rename = "poll_max_ms", deserialize_with = "millis")]
    pub poll_max: Duration,
    #[serde(rename = "shutdown_deadline_secs", deserialize_with = "secs")]
    pub shutdown_deadline: Duration,
    pub create_custom_fields: bool,
    #[serde(rename = "custom_fields_refresh_secs", deserialize_with = "secs")]
    pub custom_fields_refresh: Duration,
    pub max_redeliveries: u32,
    #[serde(rename = "claim_lease_secs", deserialize_with = "secs")]
    pub claim_lease: Duration,
    pub max_held_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TestingSettings {
    /// TEST ONLY: added to the system clock (see [`crate::clock`]).
    pub clock_offset_secs: i64,
    /// TEST ONLY: the worker aborts when it reads a message for this email (a message that
    /// kills the worker, for the poison tests). Empty in production.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub abort_on_email: Option<String>,
}

/// `[optouts]` as written; validated into [`OptoutSettings`].
#[derive(Debug, Deserialize)]
pub(super) struct RawOptouts {
    pub(super) enabled: bool,
    pub(super) poll_secs: u64,
    #[serde(default, deserialize_with = "string_like")]
    pub(super) backfill_from: String,
}

/// The opt-out feed (issue 15): CC's own opt-outs published as `contact.unsubscribed` events.
#[derive(Clone)]
pub struct OptoutSettings {
    /// `CCSYNC_OPTOUTS__ENABLED`: false keeps the feed off (no poll, no lease).
    pub enabled: bool,
    /// `CCSYNC_OPTOUTS__POLL_SECS`: how often the feed asks CC, per account (one request a poll
    /// and account, plus one per further 500 opt-outs).
    pub poll: Duration,
    /// `CCSYNC_OPTOUTS__BACKFILL_FROM`: where an account's feed starts when it has no cursor
    /// yet; `None`: 5 minutes before it first runs (no history).
    pub backfill_from: Option<time::OffsetDateTime>,
}

/// Settings of one CC account (`[accounts.<name>]`, or `CCSYNC_ACCOUNTS__<NAME>__…`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSettings {
    /// This account's lists for messages that name none (CC list ids differ per account);
    /// empty: the global `default_list_ids`.
    pub default_list_ids: Vec<Uuid>,
    /// This account's weight in the key's fair shares (issue 13; default 1): with two busy
    /// accounts of weights 2 and 1, the first gets two requests for each of the second's.
    pub weight: f64,
}

impl Default for AccountSettings {
    fn default() -> Self {
        AccountSettings {
            default_list_ids: Vec::new(),
            weight: 1.0,
        }
    }
}

pub(super) fn validate_optouts(raw: RawOptouts) -> Result<OptoutSettings, ConfigError> {
    // At least a second (the tests' pace); at most a day, so an account's opt-outs reach
    // upstream systems the day they happen.
    if !(1..=86_400).contains(&raw.poll_secs) {
        return Err(invalid(
            "CCSYNC_OPTOUTS__POLL_SECS",
            "must be 1..=86400 seconds (each poll costs one request per account; 900 spends 96 a day per account)",
        ));
    }
    let backfill_from = match raw.backfill_from.trim() {
        "" => None,
        t => Some(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    invalid(
                        "CCSYNC_OPTOUTS__BACKFILL_FROM",
                        format!("'{t}' is not an RFC 3339 time such as 2026-01-01T00:00:00Z"),
                    )
                })?,
        ),
    };
    Ok(OptoutSettings {
        enabled: raw.enabled,
        poll: Duration::from_secs(raw.poll_secs),
        backfill_from,
    })
}

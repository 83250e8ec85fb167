//! The settings of each section that needs no cross-section validation: `[auth]`,
//! `[ratelimit]`, `[worker]`, `[testing]`, `[optouts]` and `[accounts.<name>]`.

use serde::Deserialize;
use uuid::Uuid;

use super::load::{empty_is_none, optional_secret, string_like};
use super::{ConfigError, invalid};
use secrecy::SecretString;

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub scope: String,
    pub refresh_before_secs: u64,
    pub lock_lease_ms: u64,
    pub wait_bound_secs: u64,
    pub keepalive_secs: u64,
    pub jwks_url: String,
    /// `CCSYNC_AUTH__INVITE_SECRET`: the HMAC key of connect links (`ccsync auth invite`, served
    /// by `ccsync ingest`); at least 32 characters. `None`: no connect links.
    #[serde(default, deserialize_with = "optional_secret")]
    pub invite_secret: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub per_second: u32,
    pub daily_quota: u64,
    pub daily_reserve: u64,
    pub token_per_second: u32,
    pub expected_replicas: u32,
    /// Extra spacing (over 1 s / per_second) that absorbs network jitter between a permit and
    /// the moment CC counts the request (see `crate::ratelimit` docs).
    pub jitter_allowance_ms: u64,
    /// Shared cool-down after a `throttled` 429.
    pub throttle_cooldown_ms: u64,
    /// Bound on one Redis round trip of the limiter before it falls back to local limits.
    pub redis_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub prefetch: u16,
    pub batch_max_contacts: usize,
    pub batch_max_bytes: usize,
    pub linger_min_ms: u64,
    pub linger_max_ms: u64,
    pub max_activities_in_flight: usize,
    pub max_hold_secs: u64,
    pub request_timeout_secs: u64,
    pub poll_initial_ms: u64,
    pub poll_max_ms: u64,
    pub shutdown_deadline_secs: u64,
    pub create_custom_fields: bool,
    pub custom_fields_refresh_secs: u64,
    pub max_redeliveries: u32,
    pub claim_lease_secs: u64,
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
#[derive(Debug, Clone)]
pub struct OptoutSettings {
    /// `CCSYNC_OPTOUTS__ENABLED`: false keeps the feed off (no poll, no lease).
    pub enabled: bool,
    /// `CCSYNC_OPTOUTS__POLL_SECS`: how often the feed asks CC, per account (one request a poll
    /// and account, plus one per further 500 opt-outs).
    pub poll_secs: u64,
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
        poll_secs: raw.poll_secs,
        backfill_from,
    })
}

//! The configured limits as GCRA parameters, the Redis key layout, and the calendar helpers
//! (UTC day, time to 00:00 UTC) on [`crate::clock`], which honours the test-only offset.

use std::time::Duration;

use super::CallKind;
use super::gcra::GcraParams;
use crate::clock::{now_utc, secs_until_utc_midnight, utc_day};
use crate::config::Settings;

/// The Redis keys of one API key (`client_id`). The `{client_id}` hash tag keeps them in one slot,
/// so the multi-key script also runs on Redis Cluster.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) base: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, client_id: &str) -> Keys {
        Keys {
            base: format!("{prefix}:rl:{{{client_id}}}"),
        }
    }
    pub(super) fn gcra(&self, kind: CallKind) -> String {
        match kind {
            CallKind::Token => format!("{}:token:gcra", self.base),
            _ => format!("{}:gcra", self.base),
        }
    }
    pub(super) fn cooldown(&self, kind: CallKind) -> String {
        match kind {
            CallKind::Token => format!("{}:token:cooldown", self.base),
            _ => format!("{}:cooldown", self.base),
        }
    }
    pub(super) fn day(&self, day: &str) -> String {
        format!("{}:day:{day}", self.base)
    }
}

/// The configured limits, turned into GCRA parameters once.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    pub(super) api: GcraParams,
    pub(super) token: GcraParams,
    pub(super) api_fallback: GcraParams,
    pub(super) token_fallback: GcraParams,
    pub(super) daily_quota: u64,
    pub(super) daily_reserve: u64,
    pub(super) replicas: u64,
    pub(super) cooldown: Duration,
    pub(super) redis_timeout: Duration,
}

impl Limits {
    pub(super) fn from_settings(s: &Settings) -> Limits {
        let r = &s.ratelimit;
        let jitter = r.jitter_allowance;
        Limits {
            api: GcraParams::sliding_window_safe(r.per_second, jitter),
            token: GcraParams::sliding_window_safe(r.token_per_second, jitter),
            api_fallback: GcraParams::fallback_share(r.per_second, r.expected_replicas, jitter),
            token_fallback: GcraParams::fallback_share(
                r.token_per_second,
                r.expected_replicas,
                jitter,
            ),
            daily_quota: r.daily_quota,
            daily_reserve: r.daily_reserve.min(r.daily_quota),
            replicas: u64::from(r.expected_replicas.max(1)),
            cooldown: r.throttle_cooldown,
            redis_timeout: r.redis_timeout.max(Duration::from_millis(1)),
        }
    }

    /// How many of today's requests a kind may see used before it must stop (0: not counted).
    pub(super) fn daily_limit(&self, kind: CallKind) -> u64 {
        match kind {
            CallKind::Token => 0,
            k if k.uses_reserve() => self.daily_quota,
            _ => self.daily_quota - self.daily_reserve,
        }
    }

    pub(super) fn params(&self, kind: CallKind) -> GcraParams {
        if kind == CallKind::Token {
            self.token
        } else {
            self.api
        }
    }
}

/// Today's UTC date, `YYYY-MM-DD`, the day counter's key.
pub(super) fn today() -> String {
    utc_day(now_utc())
}

pub(super) fn until_midnight() -> Duration {
    Duration::from_secs(secs_until_utc_midnight(now_utc()))
}

/// The day counter outlives its day by an hour, so a replica whose clock runs a little behind
/// still finds it; after that Redis forgets it.
pub(super) fn day_ttl_secs() -> u64 {
    secs_until_utc_midnight(now_utc()) + 3_600
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_the_default_configuration() {
        let l = Limits::from_settings(&Settings::from_pairs([]).unwrap());
        assert_eq!(l.api.interval_us, 275_000);
        assert_eq!(l.token.interval_us, 1_100_000);
        assert_eq!(l.api_fallback.interval_us, 1_100_000);
        assert_eq!(l.daily_limit(CallKind::Import), 9_700);
        assert_eq!(l.daily_limit(CallKind::Upsert), 9_700);
        assert_eq!(l.daily_limit(CallKind::Poll), 10_000);
        assert_eq!(l.daily_limit(CallKind::Lookup), 10_000);
        assert_eq!(l.daily_limit(CallKind::Token), 0);
        let k = Keys::new("ccsync", "abc");
        assert_eq!(k.gcra(CallKind::Import), "ccsync:rl:{abc}:gcra");
        assert_eq!(
            k.cooldown(CallKind::Token),
            "ccsync:rl:{abc}:token:cooldown"
        );
        assert_eq!(k.day("2026-11-23"), "ccsync:rl:{abc}:day:2026-11-23");
    }

    #[test]
    fn partner_limits_and_bad_values() {
        let s = Settings::from_pairs([
            ("CCSYNC_RATELIMIT__PER_SECOND", "10"),
            ("CCSYNC_RATELIMIT__DAILY_QUOTA", "250000"),
        ])
        .unwrap();
        let l = Limits::from_settings(&s);
        assert_eq!(l.api.interval_us, 110_000);
        assert_eq!(l.daily_limit(CallKind::Import), 249_700);
        for (key, value) in [
            ("CCSYNC_RATELIMIT__JITTER_ALLOWANCE_MS", "0"),
            ("CCSYNC_RATELIMIT__JITTER_ALLOWANCE_MS", "1000"),
            ("CCSYNC_RATELIMIT__REDIS_TIMEOUT_MS", "0"),
        ] {
            let e = Settings::from_pairs([(key, value)]).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
    }
}

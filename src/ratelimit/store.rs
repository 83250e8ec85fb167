//! The Redis side of the shared limiter: one pool, two scripts, every call bounded by
//! `redis_timeout_ms` (a slow Redis counts as unreachable, so the caller can fall back).

use std::time::Duration;

use redis::Script;

use super::CallKind;
use super::limits::{Keys, Limits, day_ttl_secs};

/// The GCRA + daily counter + cool-down check, atomically, on the Redis clock.
const ACQUIRE_LUA: &str = include_str!("acquire.lua");

/// `quota_exceeded` from CC: mark the day's counter spent for every kind of call (raise it to the
/// quota, never lower it).
const SPEND_DAY_LUA: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return used
";

/// Why a limiter could not be built or could not reach Redis.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// Fatal at start: fix the Redis settings the message names and restart.
    #[error("ratelimit: the Redis settings are not usable for the limiter ({0})")]
    InvalidRedisUrl(String),
    /// Transient: the limiter keeps going on its local fallback share and retries Redis by itself.
    #[error("ratelimit: Redis is unreachable ({0}); using the local fallback share meanwhile")]
    RedisUnavailable(String),
}

/// What one evaluation of the shared script decided (see `SharedLimiter::try_shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedDecision {
    /// Go now; `used_today` counts this call (0 for the token endpoint, which is not counted).
    Granted { used_today: u64 },
    /// The shared per-second limit says: ask again after this long.
    Wait(Duration),
    /// A shared cool-down (after a `throttled` 429) runs for this long.
    CoolingDown(Duration),
    /// Today's budget for this kind of call is spent.
    Spent { used_today: u64 },
}

pub(super) struct Store {
    pool: crate::redis::Redis,
    pub(super) keys: Keys,
    timeout: Duration,
    acquire: Script,
    spend: Script,
}

impl Store {
    /// Build the pool (no connection is made yet). The error never carries the URL: it may hold
    /// a password.
    pub(super) fn new(
        settings: &crate::config::Settings,
        keys: Keys,
        timeout: Duration,
    ) -> Result<Store, LimiterError> {
        let pool = crate::redis::Redis::from_settings(settings)
            .map_err(|e| LimiterError::InvalidRedisUrl(e.to_string()))?;
        Ok(Store {
            pool,
            keys,
            timeout,
            acquire: Script::new(ACQUIRE_LUA),
            spend: Script::new(SPEND_DAY_LUA),
        })
    }

    /// Run one Redis operation within the configured bound.
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, LimiterError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(LimiterError::RedisUnavailable(e)),
            Err(_) => Err(LimiterError::RedisUnavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn conn(&self) -> Result<crate::redis::Conn, String> {
        self.pool.get().await.map_err(|e| e.to_string())
    }

    pub(super) async fn ping(&self) -> Result<(), LimiterError> {
        self.bounded(async {
            redis::cmd("PING")
                .query_async::<String>(&mut self.conn().await?)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// One evaluation of `acquire.lua`: the decision and the day's count it saw (0 for the
    /// token endpoint).
    pub(super) async fn acquire(
        &self,
        kind: CallKind,
        today: &str,
        limits: &Limits,
    ) -> Result<(SharedDecision, u64), LimiterError> {
        let p = limits.params(kind);
        let mut inv = self.acquire.prepare_invoke();
        inv.key(self.keys.gcra(kind))
            .key(self.keys.cooldown(kind))
            .key(self.keys.day(today))
            .arg(p.interval_us)
            .arg(p.tolerance_us)
            .arg(limits.daily_limit(kind))
            .arg(day_ttl_secs());
        let (status, value, used): (i64, i64, i64) = self
            .bounded(async {
                inv.invoke_async(&mut self.conn().await?)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
        let used = used.max(0) as u64;
        let value = value.max(0) as u64;
        let decision = match status {
            0 => SharedDecision::Granted { used_today: used },
            1 => SharedDecision::Wait(Duration::from_micros(value)),
            2 => SharedDecision::CoolingDown(Duration::from_millis(value)),
            _ => SharedDecision::Spent { used_today: used },
        };
        Ok((decision, used))
    }

    /// Today's count of API requests.
    pub(super) async fn used(&self, today: &str) -> Result<u64, LimiterError> {
        let key = self.keys.day(today);
        self.bounded(async {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<u64>>(&mut self.conn().await?)
                .await
                .map(|v| v.unwrap_or(0))
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Add permits granted while Redis was away; returns the new count.
    pub(super) async fn add_used(&self, today: &str, n: u64) -> Result<u64, LimiterError> {
        let key = self.keys.day(today);
        self.bounded(async {
            let (total, _): (u64, i64) = redis::pipe()
                .cmd("INCRBY")
                .arg(&key)
                .arg(n)
                .cmd("EXPIRE")
                .arg(&key)
                .arg(day_ttl_secs())
                .query_async(&mut self.conn().await?)
                .await
                .map_err(|e| e.to_string())?;
            Ok(total)
        })
        .await
    }

    /// Raise today's count to the full quota (CC said `quota_exceeded`).
    pub(super) async fn spend_day(&self, today: &str, quota: u64) -> Result<(), LimiterError> {
        let mut inv = self.spend.prepare_invoke();
        inv.key(self.keys.day(today)).arg(quota).arg(day_ttl_secs());
        self.bounded(async {
            inv.invoke_async::<i64>(&mut self.conn().await?)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Start (or restart) the shared cool-down of `kind`'s limit.
    pub(super) async fn cool_down(&self, kind: CallKind, ms: u64) -> Result<(), LimiterError> {
        let key = self.keys.cooldown(kind);
        self.bounded(async {
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("PX")
                .arg(ms.max(1))
                .query_async::<()>(&mut self.conn().await?)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }
}

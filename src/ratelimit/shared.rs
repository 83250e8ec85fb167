//! [`SharedLimiter`]: the [`Gate`] every replica uses. The design is in the module docs of
//! [`crate::ratelimit`]; this file is the Redis plumbing, the fallback and the metrics.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool_redis::{Pool, Runtime};
use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng as _;
use redis::Script;
use secrecy::ExposeSecret as _;
use tokio::time::Instant;

use super::gcra::{GcraParams, LocalGcra};
use super::pacing::Budget;
use super::{CallKind, Gate, RateLimitError};
use crate::clock::{now_utc, secs_until_utc_midnight, utc_day};
use crate::config::Settings;
use crate::telemetry::metrics;

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

/// How often a replica in fallback mode asks Redis whether it is back.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Why a limiter could not be built or could not reach Redis.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// Fatal at start: fix `CCSYNC_REDIS_URL` and restart.
    #[error("ratelimit: CCSYNC_REDIS_URL is not usable for the limiter ({0})")]
    InvalidRedisUrl(String),
    /// Transient: the limiter keeps going on its local fallback share and retries Redis by itself.
    #[error("ratelimit: Redis is unreachable ({0}); using the local fallback share meanwhile")]
    RedisUnavailable(String),
}

/// What one evaluation of the shared script decided (see [`SharedLimiter::try_shared`]).
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

/// The Redis keys of one API key (`client_id`). The `{client_id}` hash tag keeps them in one slot,
/// so the multi-key script also runs on Redis Cluster.
#[derive(Debug, Clone)]
struct Keys {
    base: String,
}

impl Keys {
    fn new(prefix: &str, client_id: &str) -> Keys {
        Keys {
            base: format!("{prefix}:rl:{{{client_id}}}"),
        }
    }
    fn gcra(&self, kind: CallKind) -> String {
        match kind {
            CallKind::Token => format!("{}:token:gcra", self.base),
            _ => format!("{}:gcra", self.base),
        }
    }
    fn cooldown(&self, kind: CallKind) -> String {
        match kind {
            CallKind::Token => format!("{}:token:cooldown", self.base),
            _ => format!("{}:cooldown", self.base),
        }
    }
    fn day(&self, day: &str) -> String {
        format!("{}:day:{day}", self.base)
    }
}

/// The configured limits, turned into GCRA parameters once.
#[derive(Debug, Clone)]
struct Limits {
    api: GcraParams,
    token: GcraParams,
    api_fallback: GcraParams,
    token_fallback: GcraParams,
    daily_quota: u64,
    daily_reserve: u64,
    replicas: u64,
    cooldown: Duration,
    redis_timeout: Duration,
}

impl Limits {
    fn from_settings(s: &Settings) -> Limits {
        let r = &s.ratelimit;
        let jitter = Duration::from_millis(r.jitter_allowance_ms);
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
            cooldown: Duration::from_millis(r.throttle_cooldown_ms),
            redis_timeout: Duration::from_millis(r.redis_timeout_ms.max(1)),
        }
    }

    /// How many of today's requests a kind may see used before it must stop (0: not counted).
    fn daily_limit(&self, kind: CallKind) -> u64 {
        match kind {
            CallKind::Token => 0,
            k if k.uses_reserve() => self.daily_quota,
            _ => self.daily_quota - self.daily_reserve,
        }
    }

    fn params(&self, kind: CallKind) -> GcraParams {
        if kind == CallKind::Token {
            self.token
        } else {
            self.api
        }
    }
}

/// The local share used while Redis is unreachable.
#[derive(Debug)]
struct Fallback {
    api: LocalGcra,
    token: LocalGcra,
}

/// What this replica knows without asking Redis.
#[derive(Debug)]
struct LocalState {
    /// `Some` while Redis is unreachable: the local share applies.
    fallback: Option<Fallback>,
    /// In fallback, the earliest moment one caller tries Redis again.
    next_probe: Instant,
    /// The last count of the day's requests seen in Redis: (UTC day, used).
    known: (String, u64),
    /// Permits granted in fallback and not yet added to the shared counter: (UTC day, count).
    unsynced: (String, u64),
    /// Local cool-downs (api, token), used while Redis cannot hold the shared one.
    cooldown_until: [Option<Instant>; 2],
    /// The UTC day on which CC answered `quota_exceeded` to this replica.
    quota_exceeded_day: Option<String>,
}

impl LocalState {
    fn known_used(&self, today: &str) -> u64 {
        if self.known.0 == today {
            self.known.1
        } else {
            0
        }
    }
    fn unsynced_today(&self, today: &str) -> u64 {
        if self.unsynced.0 == today {
            self.unsynced.1
        } else {
            0
        }
    }
}

/// One step of the fallback path.
enum LocalStep {
    Granted,
    Wait(Duration),
    Spent,
}

/// The shared request budget of one API key: a `governor` limiter in this process in front of a
/// GCRA, a daily counter and shared cool-downs in Redis. Cheap to share (`Arc`), cancel-safe (a
/// dropped `acquire` has taken nothing).
pub struct SharedLimiter {
    pool: Pool,
    keys: Keys,
    limits: Limits,
    /// Local smoothing, one per limit: a burst of callers in this process reaches Redis one at a
    /// time, at the shared rate (one replica alone can still use the whole budget).
    local_api: DefaultDirectRateLimiter,
    local_token: DefaultDirectRateLimiter,
    acquire_script: Script,
    spend_script: Script,
    state: Mutex<LocalState>,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool holds the Redis URL (with its password): never print it.
        f.debug_struct("SharedLimiter")
            .field("keys", &self.keys.base)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn today() -> String {
    utc_day(now_utc())
}

fn until_midnight() -> Duration {
    Duration::from_secs(secs_until_utc_midnight(now_utc()))
}

/// The day counter outlives its day by an hour, so a replica whose clock runs a little behind
/// still finds it; after that Redis forgets it.
fn day_ttl_secs() -> u64 {
    secs_until_utc_midnight(now_utc()) + 3_600
}

fn lock(m: &Mutex<LocalState>) -> MutexGuard<'_, LocalState> {
    // The state is plain data updated in single statements: a panic elsewhere cannot leave it
    // half-written, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn governor_for(p: GcraParams) -> DefaultDirectRateLimiter {
    // with_period(T) has burst 1, like the shared GCRA.
    let quota = Quota::with_period(p.interval())
        .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN));
    RateLimiter::direct(quota)
}

impl SharedLimiter {
    /// Build the limiter for `client_id` (the API key) from `settings`: its own Redis pool on
    /// `settings.redis_url`, keys under `settings.redis.key_prefix`. Pings Redis once; an
    /// unreachable Redis is not an error (the limiter starts on its fallback share, logs it once,
    /// and switches to the shared limit when Redis answers). Errs only for an unusable URL.
    pub async fn connect(
        settings: &Settings,
        client_id: &str,
    ) -> Result<Arc<SharedLimiter>, LimiterError> {
        let cfg = deadpool_redis::Config::from_url(settings.redis_url.expose_secret());
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| LimiterError::InvalidRedisUrl(e.to_string()))?;
        let limits = Limits::from_settings(settings);
        let limiter = Arc::new(SharedLimiter {
            pool,
            keys: Keys::new(&settings.redis.key_prefix, client_id),
            local_api: governor_for(limits.api),
            local_token: governor_for(limits.token),
            limits,
            acquire_script: Script::new(ACQUIRE_LUA),
            spend_script: Script::new(SPEND_DAY_LUA),
            state: Mutex::new(LocalState {
                fallback: None,
                next_probe: Instant::now(),
                known: (String::new(), 0),
                unsynced: (String::new(), 0),
                cooldown_until: [None, None],
                quota_exceeded_day: None,
            }),
        });
        if let Err(e) = limiter.ping().await {
            limiter.enter_fallback(&e);
        }
        Ok(limiter)
    }

    /// `true` while Redis is unreachable and this replica runs on its local fallback share.
    pub fn is_degraded(&self) -> bool {
        lock(&self.state).fallback.is_some()
    }

    /// Today's budget as the shared counter sees it (a local, conservative estimate while Redis
    /// is unreachable). Also refreshes `ccsync_daily_quota_remaining` and `ccsync_paused{quota}`.
    pub async fn budget(&self) -> Budget {
        let today = today();
        let used = if self.is_degraded() {
            None
        } else {
            match self.read_used(&today).await {
                Ok(used) => {
                    lock(&self.state).known = (today.clone(), used);
                    Some(used)
                }
                Err(e) => {
                    self.enter_fallback(&e);
                    None
                }
            }
        };
        let mut used = used.unwrap_or_else(|| self.estimated_used(&today));
        if lock(&self.state).quota_exceeded_day.as_deref() == Some(today.as_str()) {
            used = used.max(self.limits.daily_quota);
        }
        self.note_used(used);
        let until_reset = until_midnight();
        let import_limit = self.limits.daily_limit(CallKind::Import);
        Budget {
            remaining_today: self.limits.daily_quota.saturating_sub(used),
            reserve: self.limits.daily_reserve,
            until_reset,
            replicas: self.limits.replicas as u32,
            paused_until: (used >= import_limit).then(|| now_utc() + until_reset),
        }
    }

    /// One evaluation of the shared script for `kind`: no local smoothing, no waiting, no
    /// fallback. [`Gate::acquire`] is built on it; it is public for diagnostics and tests.
    pub async fn try_shared(&self, kind: CallKind) -> Result<SharedDecision, LimiterError> {
        self.try_shared_on(kind, &today()).await.map(|(d, _)| d)
    }

    /// The decision and the day's count the script saw (0 for the token endpoint).
    async fn try_shared_on(
        &self,
        kind: CallKind,
        today: &str,
    ) -> Result<(SharedDecision, u64), LimiterError> {
        let p = self.limits.params(kind);
        let mut inv = self.acquire_script.prepare_invoke();
        inv.key(self.keys.gcra(kind))
            .key(self.keys.cooldown(kind))
            .key(self.keys.day(today))
            .arg(p.interval_us)
            .arg(p.tolerance_us)
            .arg(self.limits.daily_limit(kind))
            .arg(day_ttl_secs());
        let (status, value, used): (i64, i64, i64) = self
            .bounded(async {
                let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
                inv.invoke_async(&mut conn).await.map_err(|e| e.to_string())
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

    /// Run one Redis operation within the configured bound.
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, LimiterError> {
        match tokio::time::timeout(self.limits.redis_timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(LimiterError::RedisUnavailable(e)),
            Err(_) => Err(LimiterError::RedisUnavailable(format!(
                "no answer within {:?}",
                self.limits.redis_timeout
            ))),
        }
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        self.bounded(async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn read_used(&self, today: &str) -> Result<u64, LimiterError> {
        let key = self.keys.day(today);
        self.bounded(async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<u64>>(&mut conn)
                .await
                .map(|v| v.unwrap_or(0))
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// What this replica believes was used today when it cannot ask Redis: the last shared count
    /// plus its own fallback permits as if every expected replica had taken as many.
    fn estimated_used(&self, today: &str) -> u64 {
        let st = lock(&self.state);
        st.known_used(today) + self.limits.replicas * st.unsynced_today(today)
    }

    /// Export the day's count: remaining quota, and the quota pause while imports cannot go.
    fn note_used(&self, used: u64) {
        let m = metrics();
        m.daily_quota_remaining
            .set(self.limits.daily_quota.saturating_sub(used) as i64);
        let paused = used >= self.limits.daily_limit(CallKind::Import);
        m.paused
            .with_label_values(&["quota"])
            .set(i64::from(paused));
    }

    fn quota_paused(&self) -> RateLimitError {
        metrics().paused.with_label_values(&["quota"]).set(1);
        RateLimitError::QuotaPaused(until_midnight())
    }

    fn enter_fallback(&self, e: &LimiterError) {
        let mut st = lock(&self.state);
        st.next_probe = Instant::now() + PROBE_EVERY;
        if st.fallback.is_none() {
            tracing::warn!(
                error = %e,
                per_second = self.limits.api_fallback.rate_per_second(),
                "rate limiter: Redis unreachable; this replica now limits itself to its local share \
                 (per_second / expected_replicas and a share of the day's remaining quota) until Redis answers"
            );
            st.fallback = Some(Fallback {
                api: LocalGcra::new(self.limits.api_fallback),
                token: LocalGcra::new(self.limits.token_fallback),
            });
        }
    }

    /// Redis answered: leave fallback (once), hand the permits granted meanwhile to the shared
    /// counter, and remember the count.
    async fn on_redis_ok(&self, today: &str, kind: CallKind, used: u64) {
        let unsynced = {
            let mut st = lock(&self.state);
            let was_degraded = st.fallback.take().is_some();
            if was_degraded {
                tracing::info!("rate limiter: Redis is back; the shared limit applies again");
            }
            let n = st.unsynced_today(today);
            st.unsynced = (today.to_string(), 0);
            n
        };
        let mut used = used;
        if unsynced > 0 {
            let key = self.keys.day(today);
            let synced = self
                .bounded(async {
                    let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
                    let (n, _): (u64, i64) = redis::pipe()
                        .cmd("INCRBY")
                        .arg(&key)
                        .arg(unsynced)
                        .cmd("EXPIRE")
                        .arg(&key)
                        .arg(day_ttl_secs())
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(n)
                })
                .await;
            match synced {
                Ok(n) => used = used.max(n),
                // Keep them for the next time Redis answers.
                Err(_) => lock(&self.state).unsynced = (today.to_string(), unsynced),
            }
        }
        if kind != CallKind::Token {
            lock(&self.state).known = (today.to_string(), used);
            self.note_used(used);
        }
    }

    /// In fallback and no probe due: decide locally.
    fn fallback_step(&self, kind: CallKind, today: &str) -> Option<LocalStep> {
        let mut st = lock(&self.state);
        let now = Instant::now();
        if st.fallback.is_none() || now >= st.next_probe {
            if st.fallback.is_some() {
                // This caller probes Redis; the others stay local for another second.
                st.next_probe = now + PROBE_EVERY;
            }
            return None;
        }
        let slot = usize::from(kind == CallKind::Token);
        if let Some(until) = st.cooldown_until[slot].filter(|u| *u > now) {
            return Some(LocalStep::Wait(until - now));
        }
        let limit = self.limits.daily_limit(kind);
        if limit > 0 {
            // This replica's share of what was left when Redis went away.
            let share = limit.saturating_sub(st.known_used(today)) / self.limits.replicas;
            if st.unsynced_today(today) >= share {
                return Some(LocalStep::Spent);
            }
        }
        let fb = st.fallback.as_mut()?;
        let gcra = if kind == CallKind::Token {
            &mut fb.token
        } else {
            &mut fb.api
        };
        match gcra.try_take() {
            Err(wait) => Some(LocalStep::Wait(wait)),
            Ok(()) => {
                if limit > 0 {
                    let n = st.unsynced_today(today) + 1;
                    st.unsynced = (today.to_string(), n);
                }
                Some(LocalStep::Granted)
            }
        }
    }

    /// Wait for this process's own smoothing limiter (on tokio's timer, so it is cancel-safe).
    async fn smooth(&self, kind: CallKind) {
        let lim = if kind == CallKind::Token {
            &self.local_token
        } else {
            &self.local_api
        };
        loop {
            match lim.check() {
                Ok(()) => return,
                Err(not_until) => {
                    tokio::time::sleep(not_until.wait_time_from(lim.clock().now())).await
                }
            }
        }
    }

    async fn acquire_inner(&self, kind: CallKind) -> Result<(), RateLimitError> {
        let mut smoothed = false;
        loop {
            let today = today();
            if kind != CallKind::Token
                && lock(&self.state).quota_exceeded_day.as_deref() == Some(today.as_str())
            {
                return Err(self.quota_paused());
            }
            if let Some(step) = self.fallback_step(kind, &today) {
                match step {
                    LocalStep::Granted => {
                        if kind != CallKind::Token {
                            self.note_used(self.estimated_used(&today));
                        }
                        return Ok(());
                    }
                    LocalStep::Wait(d) => tokio::time::sleep(d).await,
                    LocalStep::Spent => return Err(self.quota_paused()),
                }
                continue;
            }
            // A probe while degraded skips the local smoothing: probes already come at most once
            // a second, and the shared GCRA still decides.
            if !smoothed && !self.is_degraded() {
                self.smooth(kind).await;
                smoothed = true;
            }
            // Fairness between replicas: every attempt (first or retry) starts after a random
            // 0–4 ms, so whoever reaches Redis first at a permit's due time is a coin toss.
            // Without it the replica that got the last permit wins the next one too (its local
            // limiter releases its next caller exactly on time, while the others sleep a wait that
            // was measured a round trip earlier) and the other replicas starve (seen: 35/4/5
            // permits over 12 s; with it the split is near even).
            let j = rand::rng().random_range(0..=4_000u64);
            tokio::time::sleep(Duration::from_micros(j)).await;
            let decision = match self.try_shared_on(kind, &today).await {
                Ok((decision, used)) => {
                    self.on_redis_ok(&today, kind, used).await;
                    decision
                }
                Err(e) => {
                    self.enter_fallback(&e);
                    continue;
                }
            };
            match decision {
                SharedDecision::Granted { .. } => return Ok(()),
                SharedDecision::Wait(d) => tokio::time::sleep(d).await,
                SharedDecision::CoolingDown(d) => {
                    let j = rand::rng().random_range(0..=50u64);
                    tokio::time::sleep(d + Duration::from_millis(j)).await;
                }
                SharedDecision::Spent { .. } => return Err(self.quota_paused()),
            }
        }
    }

    /// CC said `quota_exceeded`: stop every replica's calls until 00:00 UTC.
    async fn pause_for_today(&self) {
        let today = today();
        {
            let mut st = lock(&self.state);
            if st.quota_exceeded_day.as_deref() != Some(today.as_str()) {
                tracing::warn!(
                    day = %today,
                    resume_in_secs = until_midnight().as_secs(),
                    "Constant Contact answered quota_exceeded: every replica pauses CC calls until 00:00 UTC; messages stay queued"
                );
                st.quota_exceeded_day = Some(today.clone());
            }
        }
        let mut inv = self.spend_script.prepare_invoke();
        inv.key(self.keys.day(&today))
            .arg(self.limits.daily_quota)
            .arg(day_ttl_secs());
        let res = self
            .bounded(async {
                let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
                inv.invoke_async::<i64>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        if let Err(e) = res {
            self.enter_fallback(&e);
        }
        lock(&self.state).known = (today, self.limits.daily_quota);
        self.note_used(self.limits.daily_quota);
    }

    /// CC said `throttled` (or something unrecognized): every replica cools down ~1 s + jitter.
    async fn cool_down(&self, kind: CallKind) {
        let base = self.limits.cooldown.as_millis() as u64;
        let ms = base + rand::rng().random_range(0..=base / 4);
        let key = self.keys.cooldown(kind);
        let res = self
            .bounded(async {
                let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(ms.max(1))
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        if let Err(e) = res {
            // Redis cannot carry it: at least this replica backs off.
            let slot = usize::from(kind == CallKind::Token);
            lock(&self.state).cooldown_until[slot] =
                Some(Instant::now() + Duration::from_millis(ms));
            self.enter_fallback(&e);
        }
    }
}

/// The fixed label set of `ccsync_rate_limited_total{error_key}`.
fn error_key_label(error_key: &str) -> &'static str {
    match error_key {
        "throttled" => "throttled",
        "quota_exceeded" => "quota_exceeded",
        "activities_queued" => "activities_queued",
        _ => "unrecognized",
    }
}

#[async_trait::async_trait]
impl Gate for SharedLimiter {
    async fn acquire(&self, kind: CallKind) -> Result<(), RateLimitError> {
        let started = Instant::now();
        let res = self.acquire_inner(kind).await;
        metrics()
            .ratelimit_wait
            .observe(started.elapsed().as_secs_f64());
        res
    }

    async fn report_429(&self, kind: CallKind, error_key: &str) {
        let label = error_key_label(error_key);
        metrics().rate_limited.with_label_values(&[label]).inc();
        if label == "quota_exceeded" && kind != CallKind::Token {
            self.pause_for_today().await;
        } else {
            // `throttled`, a queued-activities 429, an unrecognizable body, or any 429 from the
            // token endpoint (which has no daily quota): a short shared back-off.
            tracing::debug!(
                kind = kind.as_str(),
                error_key = label,
                "429: shared cool-down"
            );
            self.cool_down(kind).await;
        }
    }
}

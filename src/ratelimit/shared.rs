//! [`SharedLimiter`]: the [`Gate`] every replica uses. The design is in the module docs of
//! [`crate::ratelimit`]; Redis calls live in `store.rs`, the local fallback in `fallback.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng as _;
use tokio::time::Instant;

use super::fallback::{Fallback, LocalState, LocalStep, PROBE_EVERY, lock, slot};
use super::gcra::GcraParams;
use super::limits::{Keys, Limits, today, until_midnight};
use super::pacing::{Budget, Projection};
use super::store::{LimiterError, SharedDecision, Store};
use super::{CallKind, Gate, RateLimitError};
use crate::cc::CcErrorKey;
use crate::clock::now_utc;
use crate::config::Settings;
use crate::telemetry::{Metrics, metrics};

/// The shared request budget of one API key: a `governor` limiter in this process in front of a
/// GCRA, a daily counter and shared cool-downs in Redis. Cheap to share (`Arc`), cancel-safe (a
/// dropped `acquire` has taken nothing).
pub struct SharedLimiter {
    store: Store,
    limits: Limits,
    /// Local smoothing, one per limit: a burst of callers in this process reaches Redis one at a
    /// time, at the shared rate (one replica alone can still use the whole budget).
    local_api: DefaultDirectRateLimiter,
    local_token: DefaultDirectRateLimiter,
    state: Mutex<LocalState>,
    /// The day's projection from the shared count (`ccsync_daily_quota_projected`).
    projection: Mutex<Projection>,
    /// Where this limiter records: the process-wide registry, unless a test gave it its own.
    metrics: &'static Metrics,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool holds the Redis URL (with its password): never print it.
        f.debug_struct("SharedLimiter")
            .field("keys", &self.store.keys.base)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
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
        Self::connect_with_metrics(settings, client_id, metrics()).await
    }

    /// [`SharedLimiter::connect`], recording into `metrics` instead of the process-wide registry:
    /// a test that asserts on the limiter's metrics gives it a registry of its own
    /// ([`Metrics::isolated`]), since the other tests of its process record into the global one.
    pub async fn connect_with_metrics(
        settings: &Settings,
        client_id: &str,
        metrics: &'static Metrics,
    ) -> Result<Arc<SharedLimiter>, LimiterError> {
        let limits = Limits::from_settings(settings);
        let store = Store::new(
            settings,
            Keys::new(&settings.redis.key_prefix, client_id),
            limits.redis_timeout,
        )?;
        let limiter = Arc::new(SharedLimiter {
            store,
            local_api: governor_for(limits.api),
            local_token: governor_for(limits.token),
            limits,
            state: Mutex::new(LocalState::new()),
            projection: Mutex::new(Projection::default()),
            metrics,
        });
        if let Err(e) = limiter.store.ping().await {
            limiter.enter_fallback(&e);
        }
        Ok(limiter)
    }

    /// `true` while Redis is unreachable and this replica runs on its local fallback share.
    pub fn is_degraded(&self) -> bool {
        lock(&self.state).fallback.is_some()
    }

    /// Today's budget as the shared counter sees it (a local, conservative estimate while Redis
    /// is unreachable). Also refreshes `ccsync_daily_quota_remaining`, `ccsync_paused{quota}` and
    /// `ccsync_daily_quota_projected` (the count plus its pace over the last hour until 00:00 UTC).
    pub async fn budget(&self) -> Budget {
        let today = today();
        let used = if self.is_degraded() {
            None
        } else {
            match self.store.used(&today).await {
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
        let mut used =
            used.unwrap_or_else(|| lock(&self.state).estimated_used(&today, &self.limits));
        if lock(&self.state).quota_exceeded_day.as_deref() == Some(today.as_str()) {
            used = used.max(self.limits.daily_quota);
        }
        self.note_used(used);
        let until_reset = until_midnight();
        let projected = self
            .projection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(Instant::now(), used, until_reset);
        self.metrics
            .set_daily_quota_projected(i64::try_from(projected).unwrap_or(i64::MAX));
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
        self.store
            .acquire(kind, &today(), &self.limits)
            .await
            .map(|(d, _)| d)
    }

    /// Export the day's count: remaining quota, and the quota pause while imports cannot go.
    fn note_used(&self, used: u64) {
        let m = self.metrics;
        m.set_daily_quota_remaining(self.limits.daily_quota.saturating_sub(used) as i64);
        let paused = used >= self.limits.daily_limit(CallKind::Import);
        m.set_paused("quota", "", paused);
    }

    fn quota_paused(&self) -> RateLimitError {
        self.metrics.set_paused("quota", "", true);
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
            st.fallback = Some(Fallback::new(&self.limits));
        }
    }

    /// Redis answered: leave fallback (once), hand the permits granted meanwhile to the shared
    /// counter, and remember the count.
    async fn on_redis_ok(&self, today: &str, kind: CallKind, used: u64) {
        let unsynced = {
            let mut st = lock(&self.state);
            if st.fallback.take().is_some() {
                tracing::info!("rate limiter: Redis is back; the shared limit applies again");
            }
            let n = st.unsynced_today(today);
            st.unsynced = (today.to_string(), 0);
            n
        };
        let mut used = used;
        if unsynced > 0 {
            match self.store.add_used(today, unsynced).await {
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
            let local = lock(&self.state).step(kind, &today, &self.limits);
            if let Some(step) = local {
                match step {
                    LocalStep::Granted => {
                        if kind != CallKind::Token {
                            let used = lock(&self.state).estimated_used(&today, &self.limits);
                            self.note_used(used);
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
            let decision = match self.store.acquire(kind, &today, &self.limits).await {
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
        if let Err(e) = self.store.spend_day(&today, self.limits.daily_quota).await {
            self.enter_fallback(&e);
        }
        lock(&self.state).known = (today, self.limits.daily_quota);
        self.note_used(self.limits.daily_quota);
    }

    /// CC said `throttled` (or something unrecognized): every replica cools down ~1 s + jitter.
    async fn cool_down(&self, kind: CallKind) {
        let base = self.limits.cooldown.as_millis() as u64;
        let ms = base + rand::rng().random_range(0..=base / 4);
        let res = self.store.cool_down(kind, ms).await;
        if let Err(e) = res {
            // Redis cannot carry it: at least this replica backs off.
            lock(&self.state).cooldown_until[slot(kind)] =
                Some(Instant::now() + Duration::from_millis(ms));
            self.enter_fallback(&e);
        }
    }
}

/// The fixed label set of `ccsync_rate_limited_total{error_key}`.
fn error_key_label(error_key: &str) -> &'static str {
    match CcErrorKey::from(error_key) {
        CcErrorKey::Throttled => "throttled",
        CcErrorKey::QuotaExceeded => "quota_exceeded",
        CcErrorKey::Other(k) if k == "activities_queued" => "activities_queued",
        CcErrorKey::Other(_) => "unrecognized",
    }
}

#[async_trait::async_trait]
impl Gate for SharedLimiter {
    async fn acquire(&self, kind: CallKind) -> Result<(), RateLimitError> {
        let started = Instant::now();
        let res = self.acquire_inner(kind).await;
        self.metrics.ratelimit_waited(started.elapsed());
        res
    }

    async fn report_429(&self, kind: CallKind, error_key: &str) {
        let label = error_key_label(error_key);
        self.metrics.rate_limited(label);
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

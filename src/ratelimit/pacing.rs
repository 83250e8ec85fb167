//! Budget-aware batching: how long a batch may linger so that the day's remaining requests last
//! until 00:00 UTC (DESIGN §4). Pure: the batcher asks [`super::SharedLimiter::budget`] for a
//! [`Budget`] and feeds it to [`request_spacing`] (the one schedule every group shares, see
//! [`crate::batch`]) or [`pacing_linger`] (one batch on its own). [`Projection`] turns the shared
//! count into `ccsync_daily_quota_projected`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// What is left of today's (UTC) request budget, as the shared counter in Redis sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Requests left today for every kind of call (`daily_quota - used`).
    pub remaining_today: u64,
    /// The part of `remaining_today` kept back for polls, look-ups (`CallKind::uses_reserve`).
    pub reserve: u64,
    /// Time until 00:00 UTC, when CC resets the quota.
    pub until_reset: Duration,
    /// How many replicas are expected to share the budget (`ratelimit.expected_replicas`); each
    /// paces itself to its share, so together they last until the reset.
    pub replicas: u32,
    /// `Some(next 00:00 UTC)` while new imports cannot go today (the import budget is spent, or CC
    /// answered `quota_exceeded`); the batcher stops sending and keeps messages queued.
    pub paused_until: Option<time::OffsetDateTime>,
}

impl Budget {
    /// Requests that imports and upserts may still use today (the reserve is not theirs).
    pub fn remaining_for_imports(&self) -> u64 {
        self.remaining_today.saturating_sub(self.reserve)
    }
}

/// The batch linger that spreads the remaining import budget over the time left until reset.
///
/// `linger = until_reset × calls_per_batch × replicas / remaining_for_imports`, clamped to
/// `[min, max]`; `max` when nothing is left for imports or the budget is paused. `calls_per_batch` is what one
/// batch costs in requests (1 import plus the polls it typically needs); a value that is not
/// positive and finite counts as 1. Worked example in the [`crate::ratelimit`] module docs.
pub fn pacing_linger(
    budget: &Budget,
    calls_per_batch: f64,
    min: Duration,
    max: Duration,
) -> Duration {
    let max = max.max(min);
    let available = budget.remaining_for_imports();
    if budget.paused_until.is_some() || available == 0 {
        return max;
    }
    let cost = if calls_per_batch.is_finite() && calls_per_batch > 0.0 {
        calls_per_batch
    } else {
        1.0
    };
    let replicas = f64::from(budget.replicas.max(1));
    let secs = budget.until_reset.as_secs_f64() * cost * replicas / available as f64;
    if !secs.is_finite() || secs >= max.as_secs_f64() {
        return max;
    }
    Duration::from_secs_f64(secs).clamp(min, max)
}

/// What one request is worth in time on this process's share of the schedule:
/// `until_reset × replicas / remaining_for_imports`. `None` while the import budget is spent or
/// paused (nothing can be scheduled until 00:00 UTC).
///
/// Every call a batch causes is charged at this spacing (the batcher multiplies by the batch's
/// cost: an import and its typical polls, or one `sign_up_form` per contact), so imports, polls,
/// sign-ups and look-ups together spend at most the imports' part of the budget by the reset.
pub fn request_spacing(budget: &Budget) -> Option<Duration> {
    let available = budget.remaining_for_imports();
    if budget.paused_until.is_some() || available == 0 {
        return None;
    }
    let replicas = f64::from(budget.replicas.max(1));
    let secs = budget.until_reset.as_secs_f64() * replicas / available as f64;
    Some(Duration::from_secs_f64(secs.clamp(0.0, 86_400.0)))
}

/// How far ahead of its even pace the batcher's schedule may run for groups that have waited
/// `linger_max`: a twentieth of the time left until 00:00 UTC. Running that far ahead spends at
/// most a twentieth of what is left (the spacing then follows the smaller count), so `linger_max`
/// holds for short bursts and small configurations while the day's budget still lasts until the
/// reset.
pub fn run_ahead(budget: &Budget) -> Duration {
    budget.until_reset / 20
}

/// Today's projected request count: what is used so far plus what the current pace (the shared
/// count's growth over the last [`Projection::WINDOW`], every replica and every kind of call
/// included) would add until 00:00 UTC. Feeds `ccsync_daily_quota_projected`.
#[derive(Debug, Default)]
pub struct Projection {
    samples: VecDeque<(Instant, u64)>,
}

impl Projection {
    /// How far back the pace is measured.
    pub(crate) const WINDOW: Duration = Duration::from_secs(3_600);
    /// Below this much history the pace is unknown and the projection is the count itself.
    pub(crate) const MIN_SPAN: Duration = Duration::from_secs(300);

    /// Note the shared count `used` at `now`; returns the projection for the day.
    pub(crate) fn observe(&mut self, now: Instant, used: u64, until_reset: Duration) -> u64 {
        if self
            .samples
            .back()
            .is_some_and(|&(at, last)| used < last || at + Self::WINDOW <= now)
        {
            // The count fell (a new day began), or nothing was seen for a whole window (the
            // worker was paused): the old pace says nothing about the current one.
            self.samples.clear();
        }
        self.samples.push_back((now, used));
        while self.samples.len() > 2 && self.samples[1].0 + Self::WINDOW <= now {
            self.samples.pop_front();
        }
        let (t0, u0) = self.samples[0];
        let span = now.saturating_duration_since(t0);
        if span < Self::MIN_SPAN {
            return used;
        }
        let rate = (used - u0) as f64 / span.as_secs_f64();
        let ahead = rate * until_reset.as_secs_f64();
        used.saturating_add(ahead.round().min(u64::MAX as f64 / 2.0) as u64)
    }
}

#[cfg(test)]
mod tests;

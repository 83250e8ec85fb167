//! The shared schedule: the pacing plan ([`Pace`]) and how the batcher releases lingering groups
//! against it, one `next_slot` per tenant (see the module docs of [`crate::batch`]).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{Batch, Batcher, Coalesce, Cost};

/// The pacing plan the batcher releases lingering groups against (see the module docs). Pure
/// numbers: the caller asks the rate limiter and hands them in with [`Batcher::set_pace`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pace {
    /// A group waits at least this long (`worker.linger_min_ms`).
    pub min: Duration,
    /// ... and at most this long while the budget affords it (`worker.linger_max_ms`).
    pub max: Duration,
    /// How far ahead of now the schedule may run for groups that waited `max` (the rate limiter:
    /// a twentieth of the time until 00:00 UTC).
    pub ahead: Duration,
    /// Time one request is worth in this process's share of the day's budget; `None` when the
    /// day's budget is spent (groups then go at `max`, and the rate limiter pauses the worker).
    pub spacing: Option<Duration>,
    /// Requests one [`Cost::PerBatch`] batch costs (an import plus its typical polls).
    pub calls_per_batch: f64,
}

impl Pace {
    /// No budget pacing: every group goes after `linger`.
    pub(crate) fn fixed(linger: Duration) -> Pace {
        Pace {
            min: linger,
            max: linger,
            ahead: linger,
            spacing: Some(Duration::ZERO),
            calls_per_batch: 1.0,
        }
    }

    /// Requests a batch of `entries` costs.
    pub(crate) fn requests(&self, cost: Cost, entries: usize) -> f64 {
        match cost {
            Cost::PerBatch if self.calls_per_batch.is_finite() && self.calls_per_batch > 0.0 => {
                self.calls_per_batch
            }
            Cost::PerBatch => 1.0,
            Cost::PerItem => entries as f64,
        }
    }

    /// The time `requests` are worth on the schedule.
    fn worth(&self, requests: f64) -> Duration {
        // Capped far beyond any day, so that instant arithmetic cannot overflow.
        const CAP: f64 = 7.0 * 86_400.0;
        let s = self.spacing.unwrap_or(Duration::ZERO).as_secs_f64() * requests;
        if s.is_finite() && s > 0.0 {
            Duration::from_secs_f64(s.min(CAP))
        } else {
            Duration::ZERO
        }
    }
}

impl<T: Coalesce, Tag> Batcher<T, Tag> {
    /// Tenants' weights in the plan's shares (tenants not named weigh 1).
    pub(crate) fn set_weights(&mut self, weights: HashMap<T::Tenant, f64>) {
        self.weights = weights
            .into_iter()
            .filter(|(_, w)| w.is_finite() && *w > 0.0)
            .collect();
    }

    fn weight(&self, t: &T::Tenant) -> f64 {
        self.weights.get(t).copied().unwrap_or(1.0)
    }

    /// The slot of the group `gk`'s tenant.
    fn slot_of(&self, gk: &T::Group) -> Option<Instant> {
        let t = T::tenant(gk);
        self.slots.get(&t).copied().or(self.next_slot)
    }

    /// Follow a new plan (the rate limiter's, re-read every few seconds). The first call starts
    /// the schedule one import's cost ahead of `now`, capped at `pace.max`.
    pub(crate) fn set_pace(&mut self, mut pace: Pace, now: Instant) {
        // Sane bounds whatever the caller passes: `min <= max`, nothing beyond a month (so that
        // instant arithmetic cannot overflow).
        const MONTH: Duration = Duration::from_secs(30 * 86_400);
        pace.min = pace.min.min(MONTH);
        pace.max = pace.max.clamp(pace.min, MONTH);
        pace.ahead = pace.ahead.min(MONTH);
        self.pace = pace;
        if self.next_slot.is_none() {
            let first = pace.worth(pace.requests(Cost::PerBatch, 1)).min(pace.max);
            self.next_slot = Some(now + first);
        }
    }

    /// The plan in force.
    pub(crate) fn pace(&self) -> Pace {
        self.pace
    }

    /// Requests charged to the schedule so far (the batches' estimated cost).
    #[cfg(test)]
    pub(crate) fn charged_requests(&self) -> f64 {
        self.charged
    }

    /// Groups the shared schedule releases now, oldest first (see the module docs).
    pub(crate) fn release(&mut self, now: Instant) -> Vec<Batch<T, Tag>> {
        let pace = self.pace;
        let mut waiting: Vec<(Instant, T::Group)> = self
            .groups
            .iter()
            .filter(|(_, g)| now.saturating_duration_since(g.oldest) >= pace.min)
            .map(|(k, g)| (g.oldest, k.clone()))
            .collect();
        waiting.sort_by_key(|(oldest, _)| *oldest);
        let mut out = Vec::new();
        for (oldest, gk) in waiting {
            let slot = self.slot_of(&gk).unwrap_or(now);
            let overdue = now.saturating_duration_since(oldest) >= pace.max;
            let go = match pace.spacing {
                None => overdue,
                Some(_) => now >= slot || (overdue && slot <= now + pace.ahead),
            };
            if go && let Some(b) = self.take(&gk) {
                self.charge(&b, now);
                out.push(b);
            }
        }
        out
    }

    /// When [`Batcher::release`] next has something to release (None when empty).
    pub(crate) fn next_release(&self) -> Option<Instant> {
        let pace = self.pace;
        self.groups
            .iter()
            .map(|(gk, g)| {
                let slot = self.slot_of(gk);
                let at_min = g.oldest + pace.min;
                let at_max = g.oldest + pace.max;
                match (pace.spacing, slot) {
                    (None, _) => at_max,
                    (Some(_), None) => at_min,
                    (Some(_), Some(slot)) => at_min
                        .max(slot)
                        .min(at_max.max(slot.checked_sub(pace.ahead).unwrap_or(at_max))),
                }
            })
            .min()
    }

    /// Charge a batch handed out now (released, or full) to the schedule.
    pub(super) fn charge(&mut self, b: &Batch<T, Tag>, now: Instant) {
        let pace = self.pace;
        let requests = pace.requests(T::cost(&b.group), b.entries.len());
        self.charged += requests;
        let Some(slot) = self.slot_of(&b.group) else {
            return;
        };
        let tenant = T::tenant(&b.group);
        // The share: every tenant with groups held now, and this one.
        let mut busy: Vec<T::Tenant> = vec![tenant.clone()];
        for gk in self.groups.keys() {
            let t = T::tenant(gk);
            if !busy.contains(&t) {
                busy.push(t);
            }
        }
        let all: f64 = busy.iter().map(|t| self.weight(t)).sum();
        let worth = pace.worth(requests * all / self.weight(&tenant));
        let next = slot.max(now) + worth;
        self.slots
            .insert(tenant, next.min(now + pace.ahead + worth));
    }
}

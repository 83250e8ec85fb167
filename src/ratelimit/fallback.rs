//! What a replica knows without asking Redis, and the local share it falls back to while Redis is
//! unreachable (module docs of [`crate::ratelimit`], "Redis unreachable").

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::CallKind;
use super::gcra::LocalGcra;
use super::limits::Limits;

/// How often a replica in fallback mode lets one caller ask Redis whether it is back.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The local share used while Redis is unreachable: in-process GCRAs at the fallback rates.
#[derive(Debug)]
pub(super) struct Fallback {
    api: LocalGcra,
    token: LocalGcra,
}

impl Fallback {
    pub(super) fn new(limits: &Limits) -> Fallback {
        Fallback {
            api: LocalGcra::new(limits.api_fallback),
            token: LocalGcra::new(limits.token_fallback),
        }
    }
}

/// One local decision.
pub(super) enum LocalStep {
    Granted,
    Wait(Duration),
    Spent,
}

#[derive(Debug)]
pub(super) struct LocalState {
    /// `Some` while Redis is unreachable: the local share applies.
    pub(super) fallback: Option<Fallback>,
    /// In fallback, the earliest moment one caller tries Redis again.
    pub(super) next_probe: Instant,
    /// The last count of the day's requests seen in Redis: (UTC day, used).
    pub(super) known: (String, u64),
    /// Permits granted in fallback and not yet added to the shared counter: (UTC day, count).
    pub(super) unsynced: (String, u64),
    /// Local cool-downs (api, token), used while Redis cannot hold the shared one.
    pub(super) cooldown_until: [Option<Instant>; 2],
    /// The UTC day on which CC answered `quota_exceeded` to this replica.
    pub(super) quota_exceeded_day: Option<String>,
}

pub(super) fn slot(kind: CallKind) -> usize {
    usize::from(kind == CallKind::Token)
}

impl LocalState {
    pub(super) fn new() -> LocalState {
        LocalState {
            fallback: None,
            next_probe: Instant::now(),
            known: (String::new(), 0),
            unsynced: (String::new(), 0),
            cooldown_until: [None, None],
            quota_exceeded_day: None,
        }
    }

    pub(super) fn known_used(&self, today: &str) -> u64 {
        if self.known.0 == today {
            self.known.1
        } else {
            0
        }
    }

    pub(super) fn unsynced_today(&self, today: &str) -> u64 {
        if self.unsynced.0 == today {
            self.unsynced.1
        } else {
            0
        }
    }

    /// What this replica believes was used today when it cannot ask Redis: the last shared count
    /// plus its own fallback permits as if every expected replica had taken as many.
    pub(super) fn estimated_used(&self, today: &str, limits: &Limits) -> u64 {
        self.known_used(today) + limits.replicas * self.unsynced_today(today)
    }

    /// In fallback and no probe due: decide locally. `None`: ask Redis (not in fallback, or this
    /// caller is the one that probes).
    pub(super) fn step(
        &mut self,
        kind: CallKind,
        today: &str,
        limits: &Limits,
    ) -> Option<LocalStep> {
        let now = Instant::now();
        if self.fallback.is_none() || now >= self.next_probe {
            if self.fallback.is_some() {
                // This caller probes Redis; the others stay local for another second.
                self.next_probe = now + PROBE_EVERY;
            }
            return None;
        }
        if let Some(until) = self.cooldown_until[slot(kind)].filter(|u| *u > now) {
            return Some(LocalStep::Wait(until - now));
        }
        let limit = limits.daily_limit(kind);
        if limit > 0 {
            // This replica's share of what was left when Redis went away.
            let share = limit.saturating_sub(self.known_used(today)) / limits.replicas;
            if self.unsynced_today(today) >= share {
                return Some(LocalStep::Spent);
            }
        }
        let fb = self.fallback.as_mut()?;
        let gcra = if kind == CallKind::Token {
            &mut fb.token
        } else {
            &mut fb.api
        };
        match gcra.try_take() {
            Err(wait) => Some(LocalStep::Wait(wait)),
            Ok(()) => {
                if limit > 0 {
                    let n = self.unsynced_today(today) + 1;
                    self.unsynced = (today.to_string(), n);
                }
                Some(LocalStep::Granted)
            }
        }
    }
}

pub(super) fn lock(m: &Mutex<LocalState>) -> MutexGuard<'_, LocalState> {
    // The state is plain data updated in single statements: a panic elsewhere cannot leave it
    // half-written, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

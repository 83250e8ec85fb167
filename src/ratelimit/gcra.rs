//! The GCRA arithmetic as pure functions, so it is testable without Redis or a clock.
//!
//! [`gcra_decide`] is the single source of truth for the algorithm; `acquire.lua` mirrors it line
//! for line inside Redis (there the clock is Redis `TIME`), and [`LocalGcra`] runs it in-process
//! for the Redis-unreachable fallback (there the clock is tokio's, so it runs on paused time).
//!
//! Vocabulary (ITU-T I.371 "virtual scheduling"): the *theoretical arrival time* (TAT) is when the
//! next permit would be due if permits came exactly every emission interval `T`; a request at `now`
//! is allowed when `now >= TAT - τ`, after which `TAT = max(TAT, now) + T`. `τ` (the burst
//! tolerance) is `(burst - 1) × T`. ccsync uses `τ = 0` (burst 1), see the module docs of
//! [`crate::ratelimit`] for why a larger burst breaks CC's sliding-window limit.

use std::time::Duration;

/// The two numbers that define one GCRA, in microseconds (Redis `TIME` has µs resolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraParams {
    /// `T`: the minimum spacing between two permits.
    pub interval_us: u64,
    /// `τ`: how far ahead of its theoretical arrival time a permit may go; `(burst - 1) × T`.
    pub tolerance_us: u64,
}

impl GcraParams {
    /// Burst 1 and `T = (1 s + jitter) / per_second`.
    ///
    /// Why this is safe for "at most `per_second` requests in any sliding 1-second window" even
    /// when the requests reach CC with up to `jitter` of extra delay variation: permits are at least
    /// `T` apart, so the first and the `(per_second + 1)`-th permit are at least
    /// `per_second × T = 1 s + jitter` apart; on arrival they are still more than 1 s apart as long
    /// as their delays differ by less than `jitter`. `per_second = 0` is treated as 1.
    pub(crate) fn sliding_window_safe(per_second: u32, jitter: Duration) -> GcraParams {
        let window_us = 1_000_000 + jitter.as_micros() as u64;
        GcraParams {
            interval_us: window_us.div_ceil(u64::from(per_second.max(1))),
            tolerance_us: 0,
        }
    }

    /// The fallback share of one replica when Redis is unreachable and replicas cannot coordinate.
    ///
    /// Each replica takes `k = per_second / replicas` (rounded down) permits per sliding second,
    /// spaced `(1 s + jitter) / k`; `replicas` such replicas, in any phase, then send at most
    /// `replicas × k <= per_second` requests in any window. When `per_second < replicas` (the
    /// token endpoint's 1/s with 3 replicas) no unsynchronized split can be worst-case safe; each
    /// replica then keeps the average share (`(1 s + jitter) × replicas / per_second` apart) and a
    /// rare `throttled` is handled as usual.
    pub(crate) fn fallback_share(per_second: u32, replicas: u32, jitter: Duration) -> GcraParams {
        let per_second = per_second.max(1);
        let replicas = replicas.max(1);
        let k = per_second / replicas;
        if k >= 1 {
            GcraParams::sliding_window_safe(k, jitter)
        } else {
            let window_us = 1_000_000 + jitter.as_micros() as u64;
            GcraParams {
                interval_us: (window_us * u64::from(replicas)).div_ceil(u64::from(per_second)),
                tolerance_us: 0,
            }
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }

    /// Permits per second this GCRA sustains at most.
    pub(crate) fn rate_per_second(&self) -> f64 {
        1_000_000.0 / self.interval_us.max(1) as f64
    }
}

/// What the GCRA says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcraDecision {
    /// Go now; store `new_tat_us` as the TAT.
    Allow { new_tat_us: u64 },
    /// Not yet; ask again in `retry_after_us` (the stored TAT does not change).
    Deny { retry_after_us: u64 },
}

/// One GCRA step. `tat_us` is the stored TAT (`None` when nothing is stored: the key expired or
/// was never written, which means "idle long enough").
pub fn gcra_decide(now_us: u64, tat_us: Option<u64>, p: GcraParams) -> GcraDecision {
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let allow_at = tat.saturating_sub(p.tolerance_us);
    if now_us < allow_at {
        GcraDecision::Deny {
            retry_after_us: allow_at - now_us,
        }
    } else {
        GcraDecision::Allow {
            new_tat_us: tat + p.interval_us,
        }
    }
}

/// An in-process GCRA on tokio's clock (so it follows `tokio::time::pause`). Used for the local
/// fallback share while Redis is unreachable.
#[derive(Debug)]
pub struct LocalGcra {
    params: GcraParams,
    origin: tokio::time::Instant,
    tat_us: Option<u64>,
}

impl LocalGcra {
    pub(crate) fn new(params: GcraParams) -> LocalGcra {
        LocalGcra {
            params,
            origin: tokio::time::Instant::now(),
            tat_us: None,
        }
    }

    /// Take a permit now, or learn how long to wait before asking again.
    pub(crate) fn try_take(&mut self) -> Result<(), Duration> {
        let now_us = self.origin.elapsed().as_micros() as u64;
        match gcra_decide(now_us, self.tat_us, self.params) {
            GcraDecision::Allow { new_tat_us } => {
                self.tat_us = Some(new_tat_us);
                Ok(())
            }
            GcraDecision::Deny { retry_after_us } => Err(Duration::from_micros(retry_after_us)),
        }
    }
}

/// The largest number of instants that fall into one window `[t, t + window)`. `instants` must be
/// sorted. Used by the tests (and handy for anyone checking a request log).
pub fn max_in_sliding_window(sorted: &[Duration], window: Duration) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};

    const P4: GcraParams = GcraParams {
        interval_us: 275_000,
        tolerance_us: 0,
    };

    #[test]
    fn parameters_for_cc_limits() {
        let p = GcraParams::sliding_window_safe(4, Duration::from_millis(100));
        assert_eq!(p, P4);
        assert!(p.rate_per_second() > 3.6 && p.rate_per_second() < 4.0);
        // Partner keys: 10/s → 110 ms apart.
        assert_eq!(
            GcraParams::sliding_window_safe(10, Duration::from_millis(100)).interval_us,
            110_000
        );
        // Fallback: 4/s over 3 replicas → 1 per sliding second each (3 in all, never 5).
        let f = GcraParams::fallback_share(4, 3, Duration::from_millis(100));
        assert_eq!(f.interval_us, 1_100_000);
        // 10/s over 3 replicas → 3 each, 9 in all.
        let f = GcraParams::fallback_share(10, 3, Duration::from_millis(100));
        assert_eq!(f.interval_us, 366_667);
        // Token endpoint 1/s over 3 replicas → average share, 3.3 s apart.
        let f = GcraParams::fallback_share(1, 3, Duration::from_millis(100));
        assert_eq!(f.interval_us, 3_300_000);
    }

    #[test]
    fn first_request_goes_and_the_next_waits_out_the_interval() {
        assert_eq!(
            gcra_decide(1_000, None, P4),
            GcraDecision::Allow {
                new_tat_us: 276_000
            }
        );
        assert_eq!(
            gcra_decide(100_000, Some(276_000), P4),
            GcraDecision::Deny {
                retry_after_us: 176_000
            }
        );
        assert_eq!(
            gcra_decide(276_000, Some(276_000), P4),
            GcraDecision::Allow {
                new_tat_us: 551_000
            }
        );
        // Idle for a long time: no credit piles up (burst 1), the TAT restarts from now.
        assert_eq!(
            gcra_decide(10_000_000, Some(551_000), P4),
            GcraDecision::Allow {
                new_tat_us: 10_275_000
            }
        );
    }

    #[test]
    fn tolerance_allows_a_burst_and_that_breaks_a_sliding_window() {
        // Burst 2 at 250 ms: five permits within 750 ms — why ccsync never uses a burst > 1.
        let p = GcraParams {
            interval_us: 250_000,
            tolerance_us: 250_000,
        };
        let mut tat = None;
        let mut granted = Vec::new();
        for now in (0..1_000_000u64).step_by(1_000) {
            if let GcraDecision::Allow { new_tat_us } = gcra_decide(now, tat, p) {
                tat = Some(new_tat_us);
                granted.push(Duration::from_micros(now));
            }
        }
        assert!(max_in_sliding_window(&granted, Duration::from_secs(1)) > 4);
    }

    #[test]
    fn window_counter_counts_half_open_windows() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let w = Duration::from_secs(1);
        assert_eq!(max_in_sliding_window(&ms(&[]), w), 0);
        assert_eq!(max_in_sliding_window(&ms(&[0, 250, 500, 750, 1000]), w), 4);
        assert_eq!(max_in_sliding_window(&ms(&[0, 250, 500, 750, 999]), w), 5);
    }

    proptest! {
        /// Whatever the request times and whatever delay each request then suffers (up to the
        /// jitter allowance), CC never sees more than `n` requests in a sliding second.
        #[test]
        fn permits_never_exceed_the_sliding_window(
            n in 1u32..12,
            gaps in prop::collection::vec(0u64..400_000, 1..300),
            delays in prop::collection::vec(0u64..99_000, 300),
        ) {
            let p = GcraParams::sliding_window_safe(n, Duration::from_millis(100));
            let (mut now, mut tat) = (0u64, None);
            let mut arrivals = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                now += gap;
                if let GcraDecision::Allow { new_tat_us } = gcra_decide(now, tat, p) {
                    tat = Some(new_tat_us);
                    arrivals.push(Duration::from_micros(now + delays[i]));
                }
            }
            arrivals.sort();
            prop_assert!(max_in_sliding_window(&arrivals, Duration::from_secs(1)) <= n as usize);
        }
    }

    /// Eight tasks hammer one local GCRA for 20 s of paused tokio time: the permits obey the
    /// sliding window and still use ≥ 90% of the nominal rate (nothing is lost to the waiting).
    #[tokio::test(start_paused = true)]
    async fn local_gcra_under_contention_on_paused_time() {
        let gcra = Arc::new(Mutex::new(LocalGcra::new(P4)));
        let start = tokio::time::Instant::now();
        let end = start + Duration::from_secs(20);
        let grants = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (gcra, grants) = (gcra.clone(), grants.clone());
            tasks.push(tokio::spawn(async move {
                while tokio::time::Instant::now() < end {
                    let res = gcra.lock().unwrap().try_take();
                    match res {
                        Ok(()) => grants.lock().unwrap().push(start.elapsed()),
                        Err(wait) => tokio::time::sleep(wait).await,
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut g = grants.lock().unwrap().clone();
        g.sort();
        assert_eq!(max_in_sliding_window(&g, Duration::from_secs(1)), 4);
        // 20 s / 275 ms = 72.7 → 73 permits (the first at t = 0).
        assert_eq!(g.len(), 73);
        assert!(g.len() as f64 >= 0.9 * 4.0 * 20.0);
    }
}

//! CC's request limits, per client_id (= API key; reference §4, §3.6), on the simulator clock.
//!
//! - **API, per second**: at most `per_second` requests in any sliding 1-second window (DESIGN §4:
//!   "in no sliding 1-second window more than 4"). The window is a list of arrival times.
//!   **Choice (reference silent)**: a request answered 429 still counts toward the window (the
//!   strictest plausible gateway: hammering keeps you throttled), so a client must really back off.
//! - **API, per day**: `daily_quota` accepted requests per UTC day of the simulator clock; the day
//!   rolls over at 00:00 UTC. **Choice**: 429 answers do not consume the daily quota (CC's doc says
//!   10,000 *requests*; counting refusals would let a throttled burst eat the day, which CC's
//!   support answers never describe). 401s do not count either (no client is known for them);
//!   400s and other served answers do.
//! - **Token endpoint**: `token_per_second` requests in any sliding 1-second window, every
//!   request counting (refused ones too). Token calls do not touch the API's window or quota.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

const WINDOW: Duration = Duration::from_secs(1);

/// Outcome of an API admission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Ok,
    Throttled,
    QuotaExceeded,
}

#[derive(Debug, Default)]
pub struct Limits {
    api: HashMap<String, VecDeque<Duration>>,
    token: HashMap<String, VecDeque<Duration>>,
    /// client_id → (UTC day as days since epoch, accepted requests that day).
    daily: HashMap<String, (i64, u64)>,
}

/// Record an arrival at `now` and say whether it fits `max` per sliding second.
fn window_admit(w: &mut VecDeque<Duration>, now: Duration, max: u32) -> bool {
    while w.front().is_some_and(|t| now.saturating_sub(*t) >= WINDOW) {
        w.pop_front();
    }
    let fits = w.len() < max as usize;
    w.push_back(now);
    fits
}

impl Limits {
    /// Admit an API request of `client` at simulator time `now` on UTC day `day`.
    pub fn admit_api(
        &mut self,
        client: &str,
        now: Duration,
        day: i64,
        per_second: u32,
        quota: u64,
    ) -> Admission {
        let w = self.api.entry(client.to_owned()).or_default();
        if !window_admit(w, now, per_second) {
            return Admission::Throttled;
        }
        let d = self.daily.entry(client.to_owned()).or_insert((day, 0));
        if d.0 != day {
            *d = (day, 0);
        }
        if d.1 >= quota {
            return Admission::QuotaExceeded;
        }
        d.1 += 1;
        Admission::Ok
    }

    /// Admit a token-endpoint request.
    pub fn admit_token(&mut self, client: &str, now: Duration, per_second: u32) -> bool {
        window_admit(
            self.token.entry(client.to_owned()).or_default(),
            now,
            per_second,
        )
    }

    /// Requests `client` has used today (for the admin counters).
    pub fn used_today(&self, client: &str, day: i64) -> u64 {
        self.daily
            .get(client)
            .filter(|d| d.0 == day)
            .map_or(0, |d| d.1)
    }

    pub fn daily_snapshot(&self) -> HashMap<String, (i64, u64)> {
        self.daily.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifth_in_one_second_is_throttled_and_counts() {
        let mut l = Limits::default();
        let ms = Duration::from_millis;
        for i in 0..4 {
            assert_eq!(l.admit_api("c", ms(i * 100), 0, 4, 100), Admission::Ok);
        }
        assert_eq!(l.admit_api("c", ms(900), 0, 4, 100), Admission::Throttled);
        // 1.05 s: the first arrival left the window, but the refused one at 0.9 s still counts.
        assert_eq!(l.admit_api("c", ms(1050), 0, 4, 100), Admission::Throttled);
        assert_eq!(l.admit_api("c", ms(2000), 0, 4, 100), Admission::Ok);
        assert_eq!(l.admit_api("other", ms(2000), 0, 4, 100), Admission::Ok);
    }

    #[test]
    fn quota_resets_on_a_new_day() {
        let mut l = Limits::default();
        let s = Duration::from_secs;
        assert_eq!(l.admit_api("c", s(1), 0, 4, 2), Admission::Ok);
        assert_eq!(l.admit_api("c", s(2), 0, 4, 2), Admission::Ok);
        assert_eq!(l.admit_api("c", s(3), 0, 4, 2), Admission::QuotaExceeded);
        assert_eq!(l.used_today("c", 0), 2);
        assert_eq!(l.admit_api("c", s(4), 1, 4, 2), Admission::Ok);
    }
}

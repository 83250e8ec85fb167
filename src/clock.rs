//! Wall-clock time for everything that follows CC's calendar (the daily quota resets at 00:00 UTC,
//! refresh tokens die after 180 idle days).
//!
//! A worker is its own OS process and cannot see a simulator's moved clock, so tests shift this one
//! by the same amount through `CCSYNC_TESTING__CLOCK_OFFSET_SECS` (DESIGN §4: "give it a test-only
//! way to share that clock"). Production leaves the offset at 0.

use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

static OFFSET_SECS: AtomicI64 = AtomicI64::new(0);

/// TEST ONLY: shift this process's clock (read once at start from the configuration).
pub fn set_offset_secs(secs: i64) {
    OFFSET_SECS.store(secs, Ordering::Relaxed);
}

/// Now, in UTC, with the test offset applied.
pub fn now_utc() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::seconds(OFFSET_SECS.load(Ordering::Relaxed))
}

/// Now as Unix seconds (with the test offset applied).
pub fn now_unix() -> i64 {
    now_utc().unix_timestamp()
}

/// Seconds until the next 00:00:00 UTC, when CC resets the daily quota.
pub fn secs_until_utc_midnight(now: OffsetDateTime) -> u64 {
    let next = (now.date() + time::Duration::days(1))
        .midnight()
        .assume_utc();
    (next - now).whole_seconds().max(1) as u64
}

/// The UTC date as `YYYY-MM-DD`, used to key the daily quota counter.
pub fn utc_day(now: OffsetDateTime) -> String {
    let d = now.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn midnight_math() {
        assert_eq!(
            secs_until_utc_midnight(datetime!(2026-11-23 23:59:00 UTC)),
            60
        );
        assert_eq!(
            secs_until_utc_midnight(datetime!(2026-11-23 00:00:00 UTC)),
            86_400
        );
        assert_eq!(utc_day(datetime!(2026-01-02 03:04:05 UTC)), "2026-01-02");
    }
}

//! The daily quota across 00:00 UTC, with the test-only clock offset (`ccsync::clock`). The
//! offset is process-wide, so this binary holds exactly one test.

mod ratelimit_common;

use std::time::Duration;

use ccsync::clock::{now_utc, secs_until_utc_midnight, set_offset_secs, utc_day};
use ccsync::ratelimit::{CallKind, Gate, RateLimitError};
use ccsync::telemetry::Metrics;
use ratelimit_common::*;

const CID: &str = "api-key-midnight";

fn paused_gauge(m: &Metrics) -> i64 {
    m.paused_value("quota", "")
}

fn remaining_gauge(m: &Metrics) -> i64 {
    m.value("ccsync_daily_quota_remaining")
        .expect("exported from the start") as i64
}

/// Waits observed by the limiter so far.
fn waits_observed(m: &Metrics) -> u64 {
    m.value("ccsync_ratelimit_wait_seconds_count")
        .expect("exported from the start") as u64
}

/// Move this process's clock to one minute past the next 00:00 UTC.
fn jump_past_midnight() {
    let offset_now = ccsync::clock::now_unix() - time::OffsetDateTime::now_utc().unix_timestamp();
    set_offset_secs(offset_now + secs_until_utc_midnight(now_utc()) as i64 + 60);
}

#[tokio::test]
async fn budget_pauses_until_midnight_and_serves_again_after_it() {
    let prefix = unique_prefix();
    let s = settings(
        &prefix,
        &[
            ("CCSYNC_RATELIMIT__PER_SECOND", "500"),
            ("CCSYNC_RATELIMIT__DAILY_QUOTA", "50"),
            ("CCSYNC_RATELIMIT__DAILY_RESERVE", "10"),
        ],
    );
    // The limiters' own registry, as one worker's `/metrics` would show both.
    let (m, a, b) = two_limiters(&s, CID).await;

    let waits_before = waits_observed(m);
    // Day 1: 40 imports go (quota − reserve), the 41st is refused at once with the time to
    // midnight, and the pause is exported.
    for i in 0..40 {
        let lim = if i % 2 == 0 { &a } else { &b };
        lim.acquire(CallKind::Import).await.unwrap();
    }
    let day1 = utc_day(now_utc());
    let RateLimitError::QuotaPaused(until) = b.acquire(CallKind::Import).await.unwrap_err();
    let expected = secs_until_utc_midnight(now_utc());
    assert!(
        until.as_secs().abs_diff(expected) <= 2,
        "{until:?} vs {expected}s"
    );
    assert_eq!(paused_gauge(m), 1);
    assert_eq!(remaining_gauge(m), 10);
    // Every acquire's wait was observed, the refused one included.
    assert_eq!(waits_observed(m) - waits_before, 41);
    let budget = a.budget().await;
    assert_eq!(budget.remaining_for_imports(), 0);
    assert!(budget.paused_until.is_some());

    // 00:00 UTC passes (simulated): imports go again on a fresh count, the pause is lifted.
    jump_past_midnight();
    assert_ne!(utc_day(now_utc()), day1);
    a.acquire(CallKind::Import).await.unwrap();
    assert_eq!(paused_gauge(m), 0);
    assert_eq!(remaining_gauge(m), 49);
    let budget = b.budget().await;
    assert_eq!(budget.remaining_today, 49);
    assert!(budget.paused_until.is_none());
    assert!(budget.until_reset > Duration::from_secs(86_000));

    // Day 2: CC says quota_exceeded long before our count expects it; both instances stop…
    b.report_429(CallKind::Import, "quota_exceeded").await;
    assert!(a.acquire(CallKind::Poll).await.is_err());
    assert!(b.acquire(CallKind::Import).await.is_err());
    assert_eq!(paused_gauge(m), 1);
    assert_eq!(remaining_gauge(m), 0);

    // …until the next midnight, not a moment of real time later.
    jump_past_midnight();
    a.acquire(CallKind::Import).await.unwrap();
    b.acquire(CallKind::Import).await.unwrap();
    assert_eq!(paused_gauge(m), 0);
    assert_eq!(get_u64(&day_key(&prefix, CID)).await, Some(2));

    set_offset_secs(0);
    cleanup(&prefix).await;
}

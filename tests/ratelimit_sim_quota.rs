//! The daily quota end to end against the simulator, with both clocks moved past 00:00 UTC (the
//! simulator's `advance_clock`, the limiter's test-only offset). The offset is process-wide, so
//! this binary holds exactly one test.

mod ratelimit_common;

use std::time::Duration;

use ccsync::cc::{CcError, Endpoint};
use ccsync::clock::{secs_until_utc_midnight, set_offset_secs};
use ccsync::ratelimit::{CallKind, Gate, RateLimitError, SharedLimiter};
use ccsync::sim::{Sim, SimConfig};
use ratelimit_common::*;

const CID: &str = "api-key-sim-quota";

/// One rate-limited call to the simulator, the way the worker's CC client makes it: acquire, send,
/// report a 429. `Ok(status)` when the call went out, `Err` when the limiter refused it.
async fn call(
    lim: &SharedLimiter,
    http: &reqwest::Client,
    sim: &Sim,
    token: &str,
) -> Result<u16, RateLimitError> {
    lim.acquire(CallKind::Import).await?;
    let resp = http
        .get(format!("{}/contact_lists", sim.api_base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("simulator answers");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    if let CcError::RateLimited { error_key } =
        CcError::from_response(Endpoint::ContactLists, status, &body)
    {
        lim.report_429(CallKind::Import, error_key.as_str()).await;
    }
    Ok(status)
}

/// Move the simulator's clock and this process's clock together past the next 00:00 UTC.
fn next_day(sim: &Sim) {
    sim.advance_clock(Duration::from_secs(secs_until_utc_midnight(sim.now()) + 60));
    set_offset_secs(sim.clock_offset().as_secs() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_pauses_before_cc_refuses_and_honours_cc_when_it_refuses_first() {
    let sim = Sim::start(SimConfig {
        per_second: 100,
        daily_quota: 200,
        // The clocks jump two days; token refresh is not what this test is about.
        token_ttl: Duration::from_secs(10 * 86_400),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (token, _) = sim.issue_tokens(CID, "default");
    let http = ccsync::cc::http_client(Duration::from_secs(10));
    let prefix = unique_prefix();
    let s = settings(
        &prefix,
        &[
            ("CCSYNC_RATELIMIT__PER_SECOND", "100"),
            ("CCSYNC_RATELIMIT__DAILY_QUOTA", "200"),
            ("CCSYNC_RATELIMIT__DAILY_RESERVE", "20"),
        ],
    );
    let a = SharedLimiter::connect(&s, CID).await.unwrap();
    let b = SharedLimiter::connect(&s, CID).await.unwrap();

    // Day 1: a backlog that needs more than the budget. Two replicas stop at 180 imports, before
    // CC ever has to refuse one.
    let mut sent = 0;
    let refusal = loop {
        let lim = if sent % 2 == 0 { &a } else { &b };
        match call(lim, &http, &sim, &token).await {
            Ok(status) => {
                assert_eq!(status, 200);
                sent += 1;
            }
            Err(e) => break e,
        }
        assert!(sent <= 180);
    };
    assert_eq!(sent, 180);
    assert!(matches!(refusal, RateLimitError::QuotaPaused(_)));
    assert!(b.acquire(CallKind::Import).await.is_err());

    // The simulated midnight: both replicas serve again.
    next_day(&sim);
    assert_eq!(call(&a, &http, &sim, &token).await, Ok(200));
    assert_eq!(call(&b, &http, &sim, &token).await, Ok(200));

    // Day 2: another app on the same key spends CC's quota behind our back; our count says 2.
    let other_app = async {
        let mut n = 0;
        loop {
            let r = http
                .get(format!("{}/contact_lists", sim.api_base_url()))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => n += 1,
                429 if r.text().await.unwrap().contains("quota_exceeded") => return n,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    let spent_by_other = other_app.await;
    assert_eq!(spent_by_other, 198);
    // Replica a's next call meets CC's quota_exceeded and reports it…
    assert_eq!(call(&a, &http, &sim, &token).await, Ok(429));
    // …and replica b, which never saw it, stops at once, as do polls.
    assert!(matches!(
        b.acquire(CallKind::Import).await,
        Err(RateLimitError::QuotaPaused(_))
    ));
    assert!(a.acquire(CallKind::Poll).await.is_err());
    let quota_refusals = sim
        .requests()
        .iter()
        .filter(|r| r.error.as_deref() == Some("quota_exceeded"))
        .count();
    // The other app's one refusal plus replica a's: no replica burned the day retrying.
    assert_eq!(quota_refusals, 2);

    // Day 3: everyone is back.
    next_day(&sim);
    assert_eq!(call(&b, &http, &sim, &token).await, Ok(200));
    assert_eq!(call(&a, &http, &sim, &token).await, Ok(200));

    set_offset_secs(0);
    sim.shutdown().await;
    cleanup(&prefix).await;
}

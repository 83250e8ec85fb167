//! The shared limiter against a real Redis (127.0.0.1:6379): the Lua GCRA, the daily budget and
//! its reserve, shared 429 handling between instances, and the fallback when Redis is unreachable
//! or comes back. Every test has its own key prefix.

mod ratelimit_common;

use std::time::Duration;

use ccsync::ratelimit::{
    CallKind, Gate, RateLimitError, SharedDecision, SharedLimiter, max_in_sliding_window,
};
use ratelimit_common::*;

const CID: &str = "api-key-1";

#[tokio::test]
async fn lua_gcra_spaces_permits_on_the_redis_clock_across_instances() {
    let prefix = unique_prefix();
    // 1/s → permits 1.1 s apart (1 s + 100 ms jitter allowance).
    let s = settings(&prefix, &[("CCSYNC_RATELIMIT__PER_SECOND", "1")]);
    let a = SharedLimiter::connect(&s, CID).await.unwrap();
    let b = SharedLimiter::connect(&s, CID).await.unwrap();
    assert!(!a.is_degraded() && !b.is_degraded());

    assert_eq!(
        a.try_shared(CallKind::Import).await.unwrap(),
        SharedDecision::Granted { used_today: 1 }
    );
    // The other instance is told to wait for the rest of the interval, measured by Redis.
    let wait = match b.try_shared(CallKind::Import).await.unwrap() {
        SharedDecision::Wait(d) => d,
        other => panic!("expected a wait, got {other:?}"),
    };
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(1_100),
        "{wait:?}"
    );

    // The stored TAT is on Redis's clock: about one interval ahead of Redis TIME.
    let mut c = redis().await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    let redis_now = secs * 1_000_000 + micros;
    let tat = get_u64(&key(&prefix, CID, "gcra")).await.unwrap();
    assert!(
        tat > redis_now && tat <= redis_now + 1_100_000,
        "tat {tat} now {redis_now}"
    );
    let ttl = pttl(&key(&prefix, CID, "gcra")).await;
    assert!(
        ttl > 0 && ttl <= 2_100,
        "the TAT key expires once it no longer matters: {ttl}"
    );

    // The token endpoint has its own limit and is not counted in the daily quota.
    assert_eq!(
        b.try_shared(CallKind::Token).await.unwrap(),
        SharedDecision::Granted { used_today: 0 }
    );
    assert!(matches!(
        a.try_shared(CallKind::Token).await.unwrap(),
        SharedDecision::Wait(_)
    ));

    // Once the wait is over, b gets the next permit and the day's count is shared.
    let granted = eventually(Duration::from_secs(5), || async {
        matches!(
            b.try_shared(CallKind::Import).await.unwrap(),
            SharedDecision::Granted { used_today: 2 }
        )
    })
    .await;
    assert!(granted);
    assert_eq!(get_u64(&day_key(&prefix, CID)).await, Some(2));
    // Another API key is another budget.
    let other = SharedLimiter::connect(&s, "api-key-2").await.unwrap();
    assert_eq!(
        other.try_shared(CallKind::Import).await.unwrap(),
        SharedDecision::Granted { used_today: 1 }
    );
    cleanup(&prefix).await;
}

#[tokio::test]
async fn two_instances_acquiring_together_never_exceed_the_sliding_window() {
    let prefix = unique_prefix();
    let s = settings(&prefix, &[]);
    let a = SharedLimiter::connect(&s, CID).await.unwrap();
    let b = SharedLimiter::connect(&s, CID).await.unwrap();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for lim in [a.clone(), a, b.clone(), b] {
        tasks.push(tokio::spawn(async move {
            let mut grants = Vec::new();
            for _ in 0..4 {
                lim.acquire(CallKind::Import).await.unwrap();
                grants.push(start.elapsed());
            }
            grants
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all.len(), 16);
    assert!(
        max_in_sliding_window(&all, Duration::from_secs(1)) <= 4,
        "{all:?}"
    );
    assert_eq!(get_u64(&day_key(&prefix, CID)).await, Some(16));
    cleanup(&prefix).await;
}

#[tokio::test]
async fn daily_budget_stops_imports_at_the_reserve_and_polls_at_the_quota() {
    let prefix = unique_prefix();
    let s = settings(
        &prefix,
        &[
            ("CCSYNC_RATELIMIT__PER_SECOND", "500"),
            ("CCSYNC_RATELIMIT__DAILY_QUOTA", "50"),
            ("CCSYNC_RATELIMIT__DAILY_RESERVE", "10"),
        ],
    );
    let a = SharedLimiter::connect(&s, CID).await.unwrap();
    let b = SharedLimiter::connect(&s, CID).await.unwrap();
    // Two replicas share the 40 requests imports may use.
    let mut granted = 0;
    let refusal = loop {
        let lim = if granted % 2 == 0 { &a } else { &b };
        match lim.acquire(CallKind::Import).await {
            Ok(()) => granted += 1,
            Err(e) => break e,
        }
        assert!(granted <= 40, "imports went past quota - reserve");
    };
    assert_eq!(granted, 40);
    let RateLimitError::QuotaPaused(until) = refusal;
    assert!(until > Duration::ZERO && until <= Duration::from_secs(86_400));
    assert!(matches!(
        b.acquire(CallKind::Upsert).await,
        Err(RateLimitError::QuotaPaused(_))
    ));
    let budget = b.budget().await;
    assert_eq!(budget.remaining_today, 10);
    assert_eq!(budget.remaining_for_imports(), 0);
    assert!(budget.paused_until.is_some());

    // The reserve keeps polls and look-ups going, up to the full quota.
    for i in 0..10 {
        let kind = if i % 2 == 0 {
            CallKind::Poll
        } else {
            CallKind::Lookup
        };
        a.acquire(kind).await.unwrap();
    }
    assert!(matches!(
        a.acquire(CallKind::Poll).await,
        Err(RateLimitError::QuotaPaused(_))
    ));
    assert_eq!(get_u64(&day_key(&prefix, CID)).await, Some(50));
    assert_eq!(a.budget().await.remaining_today, 0);
    // Token refreshes are not part of the API quota.
    a.acquire(CallKind::Token).await.unwrap();
    cleanup(&prefix).await;
}

#[tokio::test]
async fn quota_exceeded_from_one_instance_pauses_every_instance_at_once() {
    let prefix = unique_prefix();
    let s = settings(&prefix, &[]);
    // A registry of their own: other tests of this binary report 429s at the same time.
    let (m, a, b) = two_limiters(&s, CID).await;
    a.acquire(CallKind::Import).await.unwrap();
    b.acquire(CallKind::Import).await.unwrap();
    assert!(b.budget().await.paused_until.is_none());

    // CC counted more than we did (another app on the same key) and says quota_exceeded.
    a.report_429(CallKind::Import, "quota_exceeded").await;

    // b never saw the 429, yet its very next call of any API kind is refused until midnight.
    for kind in [
        CallKind::Import,
        CallKind::Upsert,
        CallKind::Poll,
        CallKind::Lookup,
    ] {
        match b.acquire(kind).await {
            Err(RateLimitError::QuotaPaused(until)) => {
                assert!(until > Duration::ZERO && until <= Duration::from_secs(86_400))
            }
            Ok(()) => panic!("{kind:?} went out after quota_exceeded"),
        }
    }
    let budget = b.budget().await;
    assert_eq!(budget.remaining_today, 0);
    assert!(budget.paused_until.is_some());
    // The token endpoint is not under the API quota.
    b.acquire(CallKind::Token).await.unwrap();
    // A limiter for another prefix (another deployment) is untouched.
    let other = SharedLimiter::connect(&settings(&unique_prefix(), &[]), CID)
        .await
        .unwrap();
    assert!(other.budget().await.paused_until.is_none());
    assert!(m.value(r#"ccsync_rate_limited_total{error_key="quota_exceeded"}"#) >= Some(1.0));
    cleanup(&prefix).await;
}

#[tokio::test]
async fn throttled_from_one_instance_delays_the_other_instance() {
    let prefix = unique_prefix();
    let s = settings(&prefix, &[("CCSYNC_RATELIMIT__PER_SECOND", "100")]);
    let (m, a, b) = two_limiters(&s, CID).await;
    b.acquire(CallKind::Import).await.unwrap();

    a.report_429(CallKind::Import, "throttled").await;
    let cooldown = key(&prefix, CID, "cooldown");
    let ttl = pttl(&cooldown).await;
    // About a second, plus up to 25% jitter.
    assert!(ttl > 500 && ttl <= 1_250, "cool-down PTTL {ttl}");
    assert!(matches!(
        b.try_shared(CallKind::Import).await.unwrap(),
        SharedDecision::CoolingDown(d) if d > Duration::ZERO && d <= Duration::from_millis(1_250)
    ));
    // b's next acquire goes only once the shared cool-down is over.
    b.acquire(CallKind::Import).await.unwrap();
    assert_eq!(
        pttl(&cooldown).await,
        -2,
        "b went before the cool-down ended"
    );

    // An unrecognizable 429 body counts as throttled.
    a.report_429(CallKind::Poll, "something new").await;
    assert!(matches!(
        b.try_shared(CallKind::Poll).await.unwrap(),
        SharedDecision::CoolingDown(_)
    ));
    // The token endpoint's limit is separate: an API cool-down does not hold token calls.
    assert!(matches!(
        b.try_shared(CallKind::Token).await.unwrap(),
        SharedDecision::Granted { .. }
    ));
    assert!(m.value(r#"ccsync_rate_limited_total{error_key="throttled"}"#) >= Some(1.0));
    assert!(m.value(r#"ccsync_rate_limited_total{error_key="unrecognized"}"#) >= Some(1.0));
    cleanup(&prefix).await;
}

/// Redis on a closed port: the limiter still limits, to its share (4/s over 3 expected replicas
/// → 1 per sliding second; 40 import requests over 3 → 13 for the day). Paused time: the local
/// fallback runs on tokio's clock.
#[tokio::test(start_paused = true)]
async fn unreachable_redis_falls_back_to_the_local_share_not_unlimited() {
    let s = ccsync::config::Settings::from_pairs([
        ("CCSYNC_REDIS_URL", "redis://127.0.0.1:1"),
        ("CCSYNC_REDIS__KEY_PREFIX", "unreachable"),
        ("CCSYNC_RATELIMIT__DAILY_QUOTA", "50"),
        ("CCSYNC_RATELIMIT__DAILY_RESERVE", "10"),
    ])
    .unwrap();
    let logs = LogCapture::default();
    let _guard = logs.install();
    let lim = SharedLimiter::connect(&s, CID).await.unwrap();
    assert!(lim.is_degraded());
    let start = tokio::time::Instant::now();
    let mut grants = Vec::new();
    let refusal = loop {
        match lim.acquire(CallKind::Import).await {
            Ok(()) => grants.push(start.elapsed()),
            Err(e) => break e,
        }
        assert!(grants.len() <= 13, "more than the local daily share");
    };
    assert!(matches!(refusal, RateLimitError::QuotaPaused(_)));
    assert_eq!(grants.len(), 13);
    assert_eq!(max_in_sliding_window(&grants, Duration::from_secs(1)), 1);
    // 1.1 s apart: 13 permits span at least 12 × 1.1 s of (paused) time.
    assert!(grants[12] - grants[0] >= Duration::from_millis(13_200));
    // Polls may still use the reserve's share (50 − 0) / 3 = 16 in all.
    let mut polls = 0;
    while lim.acquire(CallKind::Poll).await.is_ok() {
        polls += 1;
        assert!(polls <= 3);
    }
    assert_eq!(polls, 3);
    assert!(lim.budget().await.paused_until.is_some());
    assert!(lim.is_degraded());
    // Dozens of failed probes later, the transition was logged once, not per call.
    assert_eq!(logs.count("Redis unreachable"), 1);
}

/// A TCP proxy in front of the real Redis that the test can cut and restore: the limiter falls
/// back while it is cut and returns to the shared limit (handing over the permits it granted
/// meanwhile) when it is back.
#[tokio::test]
async fn limiter_recovers_when_redis_comes_back() {
    let prefix = unique_prefix();
    let proxy = Proxy::start().await;
    let url = format!("redis://{}", proxy.addr);
    let s = ccsync::config::Settings::from_pairs([
        ("CCSYNC_REDIS_URL", url.as_str()),
        ("CCSYNC_REDIS__KEY_PREFIX", prefix.as_str()),
        ("CCSYNC_RATELIMIT__PER_SECOND", "12"),
        // Long enough that a loaded CI machine's slow Redis answer is not taken for an outage
        // (300 ms was exceeded once while the whole suite ran in parallel).
        ("CCSYNC_RATELIMIT__REDIS_TIMEOUT_MS", "2000"),
    ])
    .unwrap();
    let logs = LogCapture::default();
    let _guard = logs.install();
    let lim = SharedLimiter::connect(&s, CID).await.unwrap();
    lim.acquire(CallKind::Import).await.unwrap();
    assert!(!lim.is_degraded());

    proxy.cut();
    lim.acquire(CallKind::Import).await.unwrap();
    lim.acquire(CallKind::Import).await.unwrap();
    assert!(lim.is_degraded());
    assert_eq!(get_u64(&day_key(&prefix, CID)).await, Some(1));

    let proxy = proxy.restore().await;
    let back = eventually(Duration::from_secs(10), || async {
        lim.acquire(CallKind::Import).await.unwrap();
        !lim.is_degraded()
    })
    .await;
    assert!(back, "the limiter did not return to the shared limit");
    // The fallback permits were added to the shared count: nothing went uncounted.
    let (used, budget) = (
        get_u64(&day_key(&prefix, CID)).await.unwrap(),
        lim.budget().await,
    );
    assert!(used >= 4, "shared count {used}");
    assert_eq!(budget.remaining_today, 10_000 - used);
    // One line per transition.
    assert_eq!(logs.count("Redis unreachable"), 1);
    assert_eq!(logs.count("Redis is back"), 1);
    drop(proxy);
    cleanup(&prefix).await;
}

/// Forwards 127.0.0.1:<port> to the real Redis until cut.
struct Proxy {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        Self::bind("127.0.0.1:0".parse().unwrap()).await
    }

    async fn bind(addr: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect("127.0.0.1:6379").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    }
                });
            }
            // Dropping the JoinSet (when this task is aborted) aborts every connection.
        });
        Proxy { addr, task }
    }

    /// Close the port and every open connection.
    fn cut(&self) {
        self.task.abort();
    }

    async fn restore(self) -> Proxy {
        let addr = self.addr;
        self.task.abort();
        let _ = self.task.await;
        Self::bind(addr).await
    }
}

/// Production Redis uses TLS and a password (DESIGN §5.3): against the real TLS Redis of
/// `scripts/services.sh` (127.0.0.1:6390, its CA in `CCSYNC_REDIS_CA_FILE`), a `rediss://` URL
/// with a password gives a shared (not degraded) limiter that grants, and neither its `Debug` nor
/// its errors show the password.
#[tokio::test]
async fn rediss_urls_work_and_the_password_never_shows() {
    let dir =
        std::env::var("CCSYNC_TEST_TLS_DIR").unwrap_or_else(|_| "/tmp/ccsync-test-tls".into());
    let ca = format!("{dir}/ca.pem");
    let prefix = unique_prefix();
    let s = ccsync::config::Settings::from_pairs([
        ("CCSYNC_REDIS_URL", "rediss://:ccsync-tls-pw@localhost:6390"),
        ("CCSYNC_REDIS_CA_FILE", ca.as_str()),
        ("CCSYNC_REDIS__KEY_PREFIX", prefix.as_str()),
        ("CCSYNC_RATELIMIT__REDIS_TIMEOUT_MS", "5000"),
    ])
    .expect("the test CA exists (bash scripts/services.sh)");
    let lim = SharedLimiter::connect(&s, CID).await.unwrap();
    assert!(!lim.is_degraded(), "the limiter reached Redis over TLS");
    assert!(matches!(
        lim.try_shared(CallKind::Import).await.unwrap(),
        SharedDecision::Granted { .. }
    ));
    assert!(!format!("{lim:?}").contains("ccsync-tls-pw"));
    // A wrong password over TLS: unreachable for the limiter (fallback), never echoed.
    let wrong = ccsync::config::Settings::from_pairs([
        ("CCSYNC_REDIS_URL", "rediss://:s3cret-pw@localhost:6390"),
        ("CCSYNC_REDIS_CA_FILE", ca.as_str()),
        ("CCSYNC_REDIS__KEY_PREFIX", prefix.as_str()),
    ])
    .unwrap();
    let r = ccsync::redis::Redis::from_settings(&wrong).unwrap();
    let e = r.check().await.unwrap_err().to_string();
    assert!(e.contains("CCSYNC_REDIS_URL"), "{e}");
    assert!(!e.contains("s3cret-pw"), "{e}");
    ccsync::redis::Redis::from_settings(&s)
        .unwrap()
        .unlink_matching(&format!("{prefix}:*"))
        .await
        .unwrap();

    let bad = ccsync::config::Settings::from_pairs([(
        "CCSYNC_REDIS_URL",
        "redis://ccsync:s3cret-pw@127.0.0.1:6379/not-a-db",
    )])
    .unwrap();
    let err = SharedLimiter::connect(&bad, CID).await.unwrap_err();
    assert!(matches!(
        err,
        ccsync::ratelimit::LimiterError::InvalidRedisUrl(_)
    ));
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
}

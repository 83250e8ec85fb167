//! Three replicas as separate OS processes (`examples/auth_hammer.rs`), 50 concurrent callers
//! each, short token lifetimes, rotating refresh tokens without a grace window: not a single
//! wasted, racing or failed refresh. Alone in its test binary so its timing is not shared with
//! other tests (the run length is `CCSYNC_TEST_HAMMER_SECS`, default 20).

mod auth_support;

use std::time::{Duration, Instant};

use auth_support::*;
use ccsync::auth::store::Stored;
use ccsync::sim::{RefreshMode as SimMode, SimConfig};

fn cfg(ttl_secs: u64, grace_secs: u64) -> SimConfig {
    SimConfig {
        token_ttl: Duration::from_secs(ttl_secs),
        refresh_mode: SimMode::Rotating,
        grace: Duration::from_secs(grace_secs),
        // The API limits are not under test here.
        per_second: 1_000_000,
        daily_quota: 100_000_000,
        token_per_second: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_of_fifty_callers_refresh_exactly_once_per_expiry() {
    let secs: u64 = std::env::var("CCSYNC_TEST_HAMMER_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let ttl = 4;
    let w = World::start(cfg(ttl, 0), &[]).await;
    let (g0, _) = w.seed("default").await;
    let started = Instant::now();
    let env = [
        ("HAMMER_CALLERS", "50".to_string()),
        ("HAMMER_SECS", secs.to_string()),
        ("HAMMER_PACE_MS", "250".to_string()),
    ];
    let procs: Vec<_> = (0..3).map(|_| spawn_hammer(&w, &env)).collect();
    let mut results = Vec::new();
    for p in procs {
        results.push(hammer_result(p).await);
    }
    let elapsed = started.elapsed().as_secs_f64();

    let requests = w.sim.requests();
    let refreshes = w.refresh_requests();
    let invalid_grants = requests
        .iter()
        .filter(|r| r.error.as_deref() == Some("invalid_grant"))
        .count();
    let api_401 = requests
        .iter()
        .filter(|r| r.path.starts_with("/v3/") && r.status == Some(401))
        .count();
    let api_ok: u64 = results.iter().map(|r| r["ok"].as_u64().unwrap()).sum();
    let dead: u64 = results.iter().map(|r| r["dead"].as_u64().unwrap()).sum();
    let Stored::Live(last) = w.store().load("default").await.unwrap() else {
        panic!("token set lost")
    };
    let report = format!(
        "elapsed {elapsed:.1}s, refreshes {}, generations {}..{}, 401s {api_401}, results {results:?}",
        refreshes.len(),
        g0,
        last.generation
    );
    eprintln!("{report}");
    for r in requests
        .iter()
        .filter(|r| r.status == Some(401) || r.grant_type.is_some())
    {
        eprintln!(
            "  {} {} {:?} {:?}",
            r.real_ms, r.path, r.grant_type, r.status
        );
    }
    assert_eq!(invalid_grants, 0, "{report}");
    assert_eq!(dead, 0, "{report}");
    assert!(refreshes.iter().all(|r| r.status == Some(200)), "{report}");
    // Every refresh produced exactly one new generation: no duplicate, racing or wasted refresh.
    assert_eq!(refreshes.len() as u64, last.generation - g0, "{report}");
    // And there was one per token lifetime: a token lives `ttl` s and is refreshed when 20 % is
    // left, so while the callers ran there were about window / (0.8 ttl) refreshes. The window is
    // read from the simulator's log (first to last API call), not from the test's clock, so a slow
    // process start on a busy machine does not count as idle token time.
    let api_ms: Vec<u64> = requests
        .iter()
        .filter(|r| r.path.starts_with("/v3/"))
        .map(|r| r.real_ms)
        .collect();
    let window = (api_ms.iter().max().unwrap() - api_ms.iter().min().unwrap()) as f64 / 1000.0;
    let lifetimes = window / (0.8 * ttl as f64);
    assert!(
        (refreshes.len() as f64) >= lifetimes - 2.0 && (refreshes.len() as f64) <= lifetimes + 2.0,
        "window {window:.1}s: {report}"
    );
    // No API request carried an expired token, except at most one 401 per expiry.
    assert!(api_401 <= refreshes.len(), "{report}");
    assert!(api_ok > 1000, "the callers really ran: {report}");
    w.cleanup(&["default"]).await;
}

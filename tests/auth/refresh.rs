//! The refresh protocol in one process against the simulator and real Redis: memory hot path,
//! single-flight, retries with the same refresh token, the in-flight marker, dead connections and
//! their revival, Redis losing its data, long-lived mode and the idle keep-alive.

use crate::auth_support;

use std::sync::Arc;
use std::time::Duration;

use auth_support::*;
use ccsync::auth::store::Stored;
use ccsync::auth::{AuthError, RefreshMode, TokenProvider};
use ccsync::sim::{Faults, LostMode, LostResponse, RefreshMode as SimMode, SimConfig};
use tokio_util::sync::CancellationToken;

fn cfg(ttl_secs: u64, mode: SimMode, grace_secs: u64) -> SimConfig {
    SimConfig {
        token_ttl: Duration::from_secs(ttl_secs),
        refresh_mode: mode,
        grace: Duration::from_secs(grace_secs),
        per_second: 10_000,
        daily_quota: 1_000_000,
        ..Default::default()
    }
}

fn live(s: Stored) -> ccsync::auth::TokenSet {
    match s {
        Stored::Live(t) => t,
        other => panic!("expected a live token set, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_memory_and_refreshes_once_per_expiry() {
    let w = World::start(cfg(4, SimMode::Rotating, 0), &[]).await;
    let (g0, first_refresh) = w.seed("default").await;
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    let t1 = p.access_token("default").await.unwrap();
    // Many calls while the token is fresh: no token-endpoint call at all.
    for _ in 0..200 {
        assert_eq!(p.access_token("default").await.unwrap(), t1);
    }
    assert!(w.refresh_requests().is_empty());
    // 40 concurrent callers once the token is in its refresh window: exactly one refresh.
    let store = w.store();
    wait_for(Duration::from_secs(10), "new token", || {
        let p = p.clone();
        let t1 = t1.clone();
        async move {
            let calls: Vec<_> = (0..40)
                .map(|_| {
                    let p = p.clone();
                    tokio::spawn(async move { p.access_token("default").await })
                })
                .collect();
            let mut changed = false;
            for c in calls {
                changed |= c.await.unwrap().unwrap() != t1;
            }
            changed
        }
    })
    .await;
    assert_eq!(w.refresh_requests().len(), 1, "one refresh for one expiry");
    let set = live(store.load("default").await.unwrap());
    assert_eq!(set.generation, g0 + 1);
    assert_eq!(
        set.mode,
        RefreshMode::Rotating,
        "a new refresh token came back"
    );
    assert_ne!(set.refresh.expose(), first_refresh);
    assert!(
        store.read_marker("default").await.unwrap().is_none(),
        "marker cleared"
    );
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_refreshes_once_per_rejected_token() {
    let w = World::start(cfg(3600, SimMode::Rotating, 0), &[]).await;
    w.seed("default").await;
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    let t1 = p.access_token("default").await.unwrap();
    // 20 callers all got a 401 for t1 at once: one refresh, all get the same new token.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (p, t1) = (p.clone(), t1.clone());
            tokio::spawn(async move { p.token_rejected("default", &t1).await })
        })
        .collect();
    let mut news = Vec::new();
    for c in calls {
        news.push(c.await.unwrap().unwrap());
    }
    assert!(news.iter().all(|t| *t == news[0] && *t != t1));
    assert_eq!(w.refresh_requests().len(), 1);
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_refresh_response_is_retried_with_the_same_token_inside_the_grace_window() {
    let w = World::start(cfg(3600, SimMode::Rotating, 20), &[]).await;
    let (g0, _) = w.seed("default").await;
    let p = TokenProvider::connect(&w.settings(), Arc::new(OnePerSecond::new()))
        .await
        .unwrap();
    let t1 = p.access_token("default").await.unwrap();
    // CC rotates, then the connection drops before the answer.
    w.sim.set_faults(Faults {
        token_lost_response: Some(LostResponse {
            mode: LostMode::Drop,
            times: Some(1),
        }),
        ..Default::default()
    });
    let t2 = p.token_rejected("default", &t1).await.expect("recovered");
    assert_ne!(t2, t1);
    let refreshes = w.refresh_requests();
    assert_eq!(
        refreshes.len(),
        2,
        "the lost one and one retry: {refreshes:?}"
    );
    assert_eq!(refreshes[0].fault.as_deref(), Some("drop"));
    assert_eq!(refreshes[1].status, Some(200));
    assert_eq!(
        live(w.store().load("default").await.unwrap()).generation,
        g0 + 1
    );
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_outage_is_transient_and_leaves_the_marker() {
    let w = World::start(cfg(3600, SimMode::Rotating, 0), &[]).await;
    let (g0, _) = w.seed("default").await;
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    let t1 = p.access_token("default").await.unwrap();
    let token_path = format!(
        "{}/token",
        url::Url::parse(&w.sim.auth_base_url()).unwrap().path()
    );
    w.sim.set_faults(Faults {
        error_rate: 1.0,
        path_prefix: Some(token_path.clone()),
        ..Default::default()
    });
    let err = p.token_rejected("default", &t1).await.unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    // (a 503 fault answers before the simulator parses the grant, so count by path)
    let token_calls = w
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == token_path)
        .count();
    assert_eq!(
        token_calls as u32,
        ccsync::auth::provider::MAX_TOKEN_TRIES,
        "bounded retries"
    );
    let store = w.store();
    let m = store
        .read_marker("default")
        .await
        .unwrap()
        .expect("marker left behind");
    assert_eq!(m.generation, g0);
    // CC is back: the next holder sees the marker, tries the stored token once, and (since the
    // 503s committed nothing) it works.
    w.sim.set_faults(Faults::default());
    let t2 = p.token_rejected("default", &t1).await.expect("recovers");
    assert_ne!(t2, t1);
    assert!(store.read_marker("default").await.unwrap().is_none());
    assert_eq!(
        live(store.load("default").await.unwrap()).generation,
        g0 + 1
    );
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_is_repaired_from_memory() {
    let w = World::start(cfg(3600, SimMode::Rotating, 0), &[]).await;
    let (g0, _) = w.seed("default").await;
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    let t1 = p.access_token("default").await.unwrap();
    let store = w.store();
    store.wipe("default").await.unwrap(); // a Redis restart without persistence
    // The next refresh writes our set back and carries on; nobody declares the connection dead.
    let t2 = p.token_rejected("default", &t1).await.expect("not dead");
    assert_ne!(t1, t2);
    let set = live(store.load("default").await.unwrap());
    assert_eq!(set.generation, g0 + 1);
    assert_eq!(&set.access, &t2);
    // And the background task restores it without any refresh, too.
    store.wipe("default").await.unwrap();
    let stop = CancellationToken::new();
    let bg = p.spawn_background(stop.clone());
    wait_for(Duration::from_secs(10), "write-back", || {
        let store = store.clone();
        async move {
            matches!(store.load("default").await, Ok(Stored::Live(s)) if s.generation == g0 + 1)
        }
    })
    .await;
    assert_eq!(w.refresh_requests().len(), 1);
    stop.cancel();
    bg.await.unwrap();
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_tokens_are_kept_and_the_idle_keepalive_refreshes() {
    let w = World::start(
        cfg(3600, SimMode::LongLived, 0),
        &[("CCSYNC_AUTH__KEEPALIVE_SECS", "2")],
    )
    .await;
    let (g0, refresh) = w.seed("default").await;
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    p.access_token("default").await.unwrap();
    let stop = CancellationToken::new();
    let bg = p.spawn_background(stop.clone());
    // Idle (no caller at all): the keep-alive refreshes at least twice, and stores each result.
    let store = w.store();
    wait_for(Duration::from_secs(20), "two keep-alive refreshes stored", || {
        let store = store.clone();
        let seen = w.refresh_requests().len();
        async move {
            seen >= 2
                && matches!(store.load("default").await, Ok(Stored::Live(s)) if s.generation >= g0 + 2)
        }
    })
    .await;
    stop.cancel();
    bg.await.unwrap();
    let set = live(store.load("default").await.unwrap());
    assert_eq!(set.mode, RefreshMode::LongLived);
    assert_eq!(
        set.refresh.expose(),
        refresh,
        "the same refresh token is kept"
    );
    assert!(w.refresh_requests().iter().all(|r| r.status == Some(200)));
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_jwks_url_only_verified_access_tokens_are_used() {
    let w = World::start(cfg(3600, SimMode::Rotating, 0), &[]).await;
    w.seed("default").await;
    // A key server with the same kid but another modulus (an impostor's key set).
    let real: serde_json::Value = {
        let body = ccsync::cc::oauth::OAuthClient::new(
            &url::Url::parse(&w.sim.auth_base_url()).unwrap(),
            CLIENT_ID,
            None,
            Duration::from_secs(5),
        )
        .fetch_jwks(&w.sim.jwks_url())
        .await
        .unwrap();
        serde_json::from_slice(&body).unwrap()
    };
    let mut fake = real.clone();
    let n = fake["keys"][0]["n"].as_str().unwrap().to_string();
    let mid = n.len() / 2;
    let swapped = if &n[mid..mid + 1] == "A" { "B" } else { "A" };
    fake["keys"][0]["n"] =
        serde_json::Value::String(format!("{}{swapped}{}", &n[..mid], &n[mid + 1..]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}/keys", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/keys",
        axum::routing::get(move || {
            let fake = fake.clone();
            async move { axum::Json(fake) }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // The simulator's own keys: tokens verify.
    let mut good = w.settings();
    good.auth.jwks_url = Some(w.sim.jwks_url().parse().unwrap());
    let p = TokenProvider::connect(&good, open_gate()).await.unwrap();
    let t1 = p.access_token("default").await.expect("verified");
    let t2 = p
        .token_rejected("default", &t1)
        .await
        .expect("refreshed and verified");
    assert_ne!(t1, t2);
    // Another server's keys: the token is refused (and not handed out), the set stays stored.
    let mut bad = w.settings();
    bad.auth.jwks_url = Some(fake_url.parse().unwrap());
    // A registry of its own: the other tests of this binary count auth failures too.
    let m = ccsync::telemetry::Metrics::isolated();
    let q = TokenProvider::connect_with_metrics(&bad, open_gate(), m)
        .await
        .unwrap();
    let before = m
        .value(r#"ccsync_auth_failures_total{reason="jwt_invalid"}"#)
        .unwrap_or(0.0);
    let err = q.access_token("default").await.unwrap_err();
    assert!(
        matches!(err, AuthError::Unavailable(ref m) if m.contains("JWKS")),
        "{err:?}"
    );
    assert!(
        m.value(r#"ccsync_auth_failures_total{reason="jwt_invalid"}"#)
            .unwrap_or(0.0)
            > before
    );
    assert!(matches!(
        w.store().load("default").await.unwrap(),
        Stored::Live(_)
    ));
    server.abort();
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_pauses_running_replicas_and_login_resumes_them() {
    let w = World::start(cfg(3600, SimMode::Rotating, 0), &[]).await;
    w.seed("default").await;
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    p.access_token("default").await.unwrap();
    let stop = CancellationToken::new();
    let bg = p.spawn_background(stop.clone());
    let mut out = SharedBuf::default();
    ccsync::auth::cli::logout(&w.settings(), "default", &mut out)
        .await
        .unwrap();
    // The tombstone is seen by the background task: no more tokens from the cache.
    wait_for(Duration::from_secs(10), "replica paused", || {
        let p = p.clone();
        async move { matches!(p.access_token("default").await, Err(AuthError::Dead { .. })) }
    })
    .await;
    // No write-back of the cached set over the logout.
    assert!(matches!(
        w.store().load("default").await.unwrap(),
        Stored::Dead { .. }
    ));
    w.seed("default").await;
    tokio::time::timeout(Duration::from_secs(10), p.wait_until_alive("default"))
        .await
        .expect("resumed");
    p.access_token("default").await.unwrap();
    assert!(w.refresh_requests().is_empty(), "no CC call in all this");
    stop.cancel();
    bg.await.unwrap();
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_after_redis_lost_its_data_wins_over_replicas_memory() {
    let w = World::start(cfg(3600, SimMode::Rotating, 0), &[]).await;
    w.seed("default").await;
    let p = TokenProvider::connect(&w.settings(), Arc::new(OnePerSecond::new()))
        .await
        .unwrap();
    let t1 = p.access_token("default").await.unwrap();
    let t2 = p.token_rejected("default", &t1).await.unwrap(); // a few refreshes in memory
    let t3 = p.token_rejected("default", &t2).await.unwrap();
    let store = w.store();
    store.wipe("default").await.unwrap(); // Redis restarts empty...
    let (login_gen, _) = w.seed("default").await; // ...and an operator logs in before any write-back
    let stop = CancellationToken::new();
    let bg = p.spawn_background(stop.clone());
    // The replica takes the login's set instead of writing its own (older) one back.
    wait_for(Duration::from_secs(10), "replica adopts the login", || {
        let p = p.clone();
        let t3 = t3.clone();
        async move {
            p.access_token("default")
                .await
                .map(|t| t != t3)
                .unwrap_or(false)
        }
    })
    .await;
    assert_eq!(
        live(store.load("default").await.unwrap()).generation,
        login_gen
    );
    stop.cancel();
    bg.await.unwrap();
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_during_the_refresh_window_does_not_fail_calls_while_the_token_is_valid() {
    // 10 s tokens: the refresh window is the last 2 s.
    let w = World::start(cfg(10, SimMode::Rotating, 0), &[]).await;
    w.seed("default").await;
    let token_path = format!(
        "{}/token",
        url::Url::parse(&w.sim.auth_base_url()).unwrap().path()
    );
    w.sim.set_faults(Faults {
        error_rate: 1.0,
        path_prefix: Some(token_path.clone()),
        ..Default::default()
    });
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    let t1 = p.access_token("default").await.unwrap();
    let token_calls = || {
        w.sim
            .requests()
            .iter()
            .filter(|r| r.path == token_path)
            .count()
    };
    // Calls go on; the first one inside the window tries to refresh, fails on the 503s, and still
    // gets the valid token.
    wait_for(Duration::from_secs(15), "a refresh attempt", || {
        let p = p.clone();
        let t1 = t1.clone();
        async move {
            assert_eq!(p.access_token("default").await.expect("still served"), t1);
            token_calls() > 0
        }
    })
    .await;
    assert_eq!(p.access_token("default").await.unwrap(), t1);
    // CC is back: the next call refreshes.
    w.sim.set_faults(Faults::default());
    wait_for(Duration::from_secs(5), "refreshed", || {
        let p = p.clone();
        let t1 = t1.clone();
        async move { p.access_token("default").await.unwrap() != t1 }
    })
    .await;
    w.cleanup(&["default"]).await;
}

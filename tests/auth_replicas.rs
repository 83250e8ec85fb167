//! Replicas as separate OS processes (`examples/auth_hammer.rs`) sharing one token set in Redis,
//! against the simulator: a lock holder SIGKILLed after CC rotated the token but before the new
//! set was stored.

mod auth_support;

use std::time::Duration;

use auth_support::*;
use ccsync::auth::store::Stored;
use ccsync::auth::{AuthError, RefreshToken, TokenProvider};
use ccsync::sim::{Faults, LostMode, LostResponse, RefreshMode as SimMode, SimConfig};

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

/// Start a hammer, let it take the lock and call the token endpoint, have CC commit the rotation
/// and hang the answer, then SIGKILL the process. Returns the world and the seed generation.
async fn kill_holder_mid_refresh(grace_secs: u64) -> (World, u64, String) {
    let w = World::start(
        cfg(6, grace_secs),
        &[("CCSYNC_AUTH__LOCK_LEASE_MS", "2000")],
    )
    .await;
    let (g0, refresh0) = w.seed("default").await;
    w.sim.set_faults(Faults {
        token_lost_response: Some(LostResponse {
            mode: LostMode::Hang,
            times: Some(1),
        }),
        ..Default::default()
    });
    let mut holder = spawn_hammer(
        &w,
        &[
            ("HAMMER_CALLERS", "3".to_string()),
            ("HAMMER_SECS", "40".to_string()),
            ("HAMMER_PACE_MS", "200".to_string()),
        ],
    );
    let store = w.store();
    wait_for(
        Duration::from_secs(20),
        "the holder's refresh is committed and hanging",
        || {
            let store = store.clone();
            let lost = w
                .refresh_requests()
                .iter()
                .any(|r| r.fault.as_deref() == Some("lost_hang"));
            async move {
                lost && store.read_marker("default").await.unwrap().is_some()
                    && ccsync::auth::lock::LeaseLock::holder(&store, "default")
                        .await
                        .unwrap()
                        .is_some()
            }
        },
    )
    .await;
    holder.start_kill().expect("SIGKILL");
    holder.wait().await.unwrap();
    // What the next holder will find: the marker of generation g0, naming the spent token.
    let m = store.read_marker("default").await.unwrap().expect("marker");
    assert_eq!(m.generation, g0);
    assert_eq!(
        m.fingerprint,
        RefreshToken::new(refresh0.clone()).fingerprint()
    );
    assert_eq!(w.refresh_requests().len(), 1);
    (w, g0, refresh0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_with_a_grace_window_next_holder_recovers_with_the_same_token() {
    let (w, g0, _) = kill_holder_mid_refresh(30).await;
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.access_token("default").await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().expect("recovered");
    }
    let refreshes = w.refresh_requests();
    assert_eq!(
        refreshes.len(),
        2,
        "the lost one and ONE retry: {refreshes:?}"
    );
    assert_eq!(refreshes[1].status, Some(200));
    let store = w.store();
    let Stored::Live(set) = store.load("default").await.unwrap() else {
        panic!("no set")
    };
    assert_eq!(set.generation, g0 + 1);
    assert!(store.read_marker("default").await.unwrap().is_none());
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_without_grace_is_dead_without_a_retry_storm_and_login_revives() {
    let (w, _g0, _) = kill_holder_mid_refresh(0).await;
    // Two more replicas, many callers each.
    let b = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    let c = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    let mut calls = Vec::new();
    for p in [&b, &c] {
        for _ in 0..10 {
            let p = p.clone();
            calls.push(tokio::spawn(async move { p.access_token("default").await }));
        }
    }
    // Callers racing the discovery may still get the old, not yet expired access token (CC
    // accepts it until `exp`); none gets anything but that or Dead.
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => {}
            Err(e) => {
                assert!(matches!(e, AuthError::Dead { .. }), "{e:?}");
                assert!(e.to_string().contains("ccsync auth login"));
            }
        }
    }
    // From now on every replica answers Dead, and keeps doing so without calling CC.
    for _ in 0..3 {
        assert!(matches!(
            b.access_token("default").await,
            Err(AuthError::Dead { .. })
        ));
        assert!(matches!(
            c.access_token("default").await,
            Err(AuthError::Dead { .. })
        ));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let refreshes = w.refresh_requests();
    assert_eq!(
        refreshes.len(),
        2,
        "the lost one and ONE try: {refreshes:?}"
    );
    assert_eq!(refreshes[1].error.as_deref(), Some("invalid_grant"));
    // The paused replicas wait; `ccsync auth login` (device flow) writes a new set.
    let wb = tokio::spawn({
        let b = b.clone();
        async move { b.wait_until_alive("default").await }
    });
    let mut out = SharedBuf::default();
    let settings = w.settings();
    let login = tokio::spawn({
        let mut o = out.clone();
        async move {
            ccsync::auth::cli::login(
                &settings,
                std::sync::Arc::new(OnePerSecond::new()),
                "default",
                &mut o,
            )
            .await
        }
    });
    wait_for(Duration::from_secs(10), "user code", || async {
        out.user_code().is_some()
    })
    .await;
    assert!(w.sim.approve(&out.user_code().unwrap()));
    login.await.unwrap().expect("login");
    let _ = std::io::Write::flush(&mut out);
    tokio::time::timeout(Duration::from_secs(10), wb)
        .await
        .expect("resumed by itself")
        .unwrap();
    let tb = b.access_token("default").await.expect("alive");
    wait_for(Duration::from_secs(5), "replica c alive", || {
        let c = c.clone();
        async move { c.access_token("default").await.is_ok() }
    })
    .await;
    assert_eq!(c.access_token("default").await.unwrap(), tb);
    w.cleanup(&["default"]).await;
}

//! A dead connection (invalid_grant): every replica stops, the gauge says so, one token-endpoint
//! call in total, and a new login revives everyone. Alone in its test binary because it installs
//! the process-wide log subscriber; its metrics are a registry of its own, shared by its replicas
//! as a worker's `/metrics` would show them.

mod auth_support;

use std::time::Duration;

use auth_support::*;
use ccsync::auth::{AuthError, TokenProvider};
use ccsync::sim::{RefreshMode as SimMode, SimConfig};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_is_dead_for_every_replica_and_a_new_login_revives_them() {
    let logs = SharedBuf::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish(),
    )
    .expect("first subscriber");
    let m = ccsync::telemetry::Metrics::isolated();
    let failures = |reason: &str| {
        m.value(&format!(
            "ccsync_auth_failures_total{{reason=\"{reason}\"}}"
        ))
        .unwrap_or(0.0) as u64
    };
    let w = World::start(cfg(3600, SimMode::Rotating, 0), &[]).await;
    w.seed("default").await;
    let a = TokenProvider::connect_with_metrics(&w.settings(), open_gate(), m)
        .await
        .unwrap();
    let b = TokenProvider::connect_with_metrics(&w.settings(), open_gate(), m)
        .await
        .unwrap();
    let ta = a.access_token("default").await.unwrap();
    let tb = b.access_token("default").await.unwrap();
    w.sim.revoke_all();
    let err = a.token_rejected("default", &ta).await.unwrap_err();
    assert!(
        matches!(err, AuthError::Dead { ref account, .. } if account == "default"),
        "{err:?}"
    );
    assert_eq!(
        m.value(r#"ccsync_auth_state{account="default"}"#),
        Some(0.0)
    );
    // Replica B learns it from Redis: no token-endpoint call of its own (no retry storm).
    for _ in 0..5 {
        let e = b.token_rejected("default", &tb).await.unwrap_err();
        assert!(matches!(e, AuthError::Dead { .. }));
        assert!(matches!(
            a.access_token("default").await,
            Err(AuthError::Dead { .. })
        ));
    }
    assert_eq!(w.refresh_requests().len(), 1, "exactly one invalid_grant");
    // One clear error line per replica (not per call), naming the fix; counted by reason.
    let dead_lines: Vec<String> = logs
        .text()
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("is dead"))
        .map(String::from)
        .collect();
    assert_eq!(dead_lines.len(), 2, "{dead_lines:#?}");
    assert!(
        dead_lines
            .iter()
            .all(|l| l.contains("run `ccsync auth login --account default`")),
        "{dead_lines:#?}"
    );
    assert_eq!(failures("invalid_grant"), 1);
    assert_eq!(failures("dead_record"), 1);
    // Paused consumers wait; `auth login` writes a new set; both resume by themselves.
    let wa = tokio::spawn({
        let a = a.clone();
        async move { a.wait_until_alive("default").await }
    });
    let wb = tokio::spawn({
        let b = b.clone();
        async move { b.wait_until_alive("default").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!wa.is_finished(), "still dead before the login");
    w.seed("default").await;
    tokio::time::timeout(Duration::from_secs(10), wa)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), wb)
        .await
        .unwrap()
        .unwrap();
    let na = a.access_token("default").await.unwrap();
    assert_eq!(na, b.access_token("default").await.unwrap());
    assert_eq!(
        m.value(r#"ccsync_auth_state{account="default"}"#),
        Some(1.0)
    );
    assert!(
        logs.text().contains("is alive again"),
        "the revival is logged"
    );
    w.cleanup(&["default"]).await;
}

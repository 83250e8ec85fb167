//! The simulator's refresh-token behaviour over real HTTP: rotation, grace, long-lived, idle
//! expiry, the token endpoint's 1 request/s, lost responses, revocation.

use crate::sim_common;

use std::time::Duration;

use ccsync::sim::{Faults, LostMode, LostResponse, RefreshMode, SimConfig};
use sim_common::*;

#[tokio::test]
async fn rotated_refresh_token_reuse_is_invalid_grant() {
    let sim = sim(fast()).await;
    let (_, rt1) = sim.issue_tokens(CLIENT, "acct-1");
    let (s, t) = refresh(&sim, &rt1).await;
    assert_eq!(s, 200);
    let rt2 = t["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    let (s, b) = refresh(&sim, &rt1).await;
    assert_eq!(s, 400);
    assert_eq!(b["error"], "invalid_grant");
    assert_eq!(
        b["error_description"],
        "The refresh token is invalid or expired."
    );
    // The reuse did not hurt the current token (no family revocation by default).
    let (s, _) = refresh(&sim, &rt2).await;
    assert_eq!(s, 200);
    // A token belongs to its client.
    let (_, rt) = sim.issue_tokens(CLIENT, "acct-1");
    next_second(&sim);
    let (s, b) = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "other"),
            ("refresh_token", &rt),
        ],
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    sim.shutdown().await;
}

#[tokio::test]
async fn grace_window_and_family_revocation() {
    let sim = sim(SimConfig {
        grace: Duration::from_secs(30),
        reuse_revokes_family: true,
        ..fast()
    })
    .await;
    let (_, rt1) = sim.issue_tokens(CLIENT, "a");
    let (_, t) = refresh(&sim, &rt1).await;
    let rt2 = t["refresh_token"].as_str().unwrap().to_owned();
    // Within 30 s the rotated token still works, and issues a fresh pair that kills rt2.
    let (s, t) = refresh(&sim, &rt1).await;
    assert_eq!(s, 200);
    let rt3 = t["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(&sim, &rt2).await.0, 400);
    // rt2's reuse revoked the family: rt3 is dead too.
    assert_eq!(refresh(&sim, &rt3).await.1["error"], "invalid_grant");

    let (_, rt1) = sim.issue_tokens(CLIENT, "a");
    let (_, _) = refresh(&sim, &rt1).await;
    sim.advance_clock(Duration::from_secs(31));
    assert_eq!(refresh(&sim, &rt1).await.1["error"], "invalid_grant");
    sim.shutdown().await;
}

#[tokio::test]
async fn long_lived_returns_same_value_and_idles_out_after_180_days() {
    let sim = sim(SimConfig {
        refresh_mode: RefreshMode::LongLived,
        ..fast()
    })
    .await;
    let (_, rt) = sim.issue_tokens(CLIENT, "a");
    for _ in 0..2 {
        let (s, t) = refresh(&sim, &rt).await;
        assert_eq!(s, 200);
        assert_eq!(t["refresh_token"].as_str(), Some(rt.as_str()));
    }
    // Each use restarts the idle clock.
    sim.advance_clock(Duration::from_secs(179 * 86_400));
    assert_eq!(refresh(&sim, &rt).await.0, 200);
    sim.advance_clock(Duration::from_secs(181 * 86_400));
    let (s, b) = refresh(&sim, &rt).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    sim.shutdown().await;

    let sim = sim_common::sim(fast()).await;
    let (_, rt) = sim.issue_tokens(CLIENT, "a");
    sim.advance_clock(Duration::from_secs(181 * 86_400));
    assert_eq!(refresh(&sim, &rt).await.1["error"], "invalid_grant");
    sim.shutdown().await;
}

#[tokio::test]
async fn second_token_request_inside_one_second_is_429() {
    let sim = sim(fast()).await;
    let (_, rt) = sim.issue_tokens(CLIENT, "a");
    let (s, t) = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("refresh_token", &rt),
        ],
    )
    .await;
    assert_eq!(s, 200);
    let rt2 = t["refresh_token"].as_str().unwrap();
    let (s, b) = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("refresh_token", rt2),
        ],
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(b["error"], "too_many_requests");
    // The refused call did not spend the refresh token.
    assert_eq!(refresh(&sim, rt2).await.0, 200);
    // Another client has its own window.
    let (_, other) = sim.issue_tokens("other", "a");
    let (s, _) = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "other"),
            ("refresh_token", &other),
        ],
    )
    .await;
    assert_eq!(s, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn lost_refresh_response_is_committed_then_dropped() {
    let sim = sim(fast()).await;
    let (_, rt1) = sim.issue_tokens(CLIENT, "a");
    sim.set_faults(Faults {
        token_lost_response: Some(LostResponse {
            mode: LostMode::Drop,
            times: Some(1),
        }),
        ..Faults::default()
    });
    next_second(&sim);
    let r = http()
        .post(format!("{}/token", sim.auth_base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("refresh_token", rt1.as_str()),
        ])
        .send()
        .await;
    assert!(
        r.is_err(),
        "the connection must close without a response: {r:?}"
    );
    assert_eq!(
        sim.faults().token_lost_response,
        None,
        "times: 1 turns the switch off"
    );
    // The rotation was committed: the old token is spent.
    assert_eq!(refresh(&sim, &rt1).await.1["error"], "invalid_grant");
    let log = sim.requests();
    let lost: Vec<_> = log
        .iter()
        .filter(|r| r.fault.as_deref() == Some("drop"))
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].status, None);
    assert_eq!(lost[0].grant_type.as_deref(), Some("refresh_token"));
    assert_eq!(lost[0].client_id.as_deref(), Some(CLIENT));
    assert_eq!(sim.counters().refreshes, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn hanging_refresh_never_answers_but_commits() {
    let sim = sim(SimConfig {
        grace: Duration::from_secs(30),
        ..fast()
    })
    .await;
    let (_, rt1) = sim.issue_tokens(CLIENT, "a");
    sim.set_faults(Faults {
        token_lost_response: Some(LostResponse {
            mode: LostMode::Hang,
            times: None,
        }),
        ..Faults::default()
    });
    next_second(&sim);
    let r = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(format!("{}/token", sim.auth_base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("refresh_token", rt1.as_str()),
        ])
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    sim.set_faults(Faults::default());
    // Within the grace window the retry with the same token succeeds.
    let (s, _) = refresh(&sim, &rt1).await;
    assert_eq!(s, 200);
    assert_eq!(sim.counters().refreshes, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn revoke_all_kills_refresh_tokens_and_503_fault_commits_nothing() {
    let sim = sim(fast()).await;
    let (_, rt) = sim.issue_tokens(CLIENT, "a");
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let (s, _) = refresh(&sim, &rt).await;
    assert_eq!(s, 503);
    sim.set_faults(Faults::default());
    // The 503 happened before anything: the token is still good.
    let (s, t) = refresh(&sim, &rt).await;
    assert_eq!(s, 200);
    sim.revoke_all();
    let (s, b) = refresh(&sim, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    sim.shutdown().await;
}

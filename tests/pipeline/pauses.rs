//! Clean, alerted pauses with nothing lost: a dead connection (every token revoked: the
//! account's messages are parked) and a spent daily quota, each with `ccsync worker` as its own
//! process.

use crate::common;

use std::time::Duration;

use ccsync::sim::SimConfig;
use common::{World, message, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_connection_parks_the_accounts_messages_and_resumes_after_login() {
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let mut worker = world.spawn_worker();
    world
        .publish(&[message(
            "before@example.com",
            "2026-11-23T10:00:00Z",
            json!({}),
        )])
        .await;
    wait_for(
        Duration::from_secs(30),
        "the first contact syncs",
        || async {
            world.sim.contact("before@example.com").is_some() && world.settled().await == 1
        },
    )
    .await;

    // The user revokes the app: access and refresh tokens die (invalid_grant on refresh).
    world.sim.revoke_all();
    let bodies: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            message(
                &format!("p{i}@example.com"),
                "2026-11-23T10:00:00Z",
                json!({}),
            )
        })
        .collect();
    world.publish(&bodies).await;
    wait_for(Duration::from_secs(30), "paused for auth", || async {
        world.metric("ccsync_paused{reason=\"auth\"}").await == Some(1.0)
    })
    .await;
    assert_eq!(world.metric("ccsync_auth_state").await, Some(0.0));
    // Every message waits in the account's parking queue: nothing acked as synced, nothing
    // dead-lettered, and the main queue is free for other accounts.
    wait_for(
        Duration::from_secs(45),
        "all 40 in the account's parking queue",
        || async { world.parked_len("default").await == 40 && world.queue_len().await == 0 },
    )
    .await;
    assert_eq!(world.metric("ccsync_parked_accounts").await, Some(1.0));
    assert_eq!(world.dead_len().await, 0);
    assert_eq!(world.sim.contacts().len(), 1);
    // No retry storm against the token endpoint while paused.
    let token_calls = |w: &World| {
        w.sim
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/token"))
            .count()
    };
    let calls = token_calls(&world);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        token_calls(&world) <= calls + 1,
        "no retry storm while dead"
    );

    // A human runs `ccsync auth login`: the worker resumes by itself.
    world.seed_tokens("default").await;
    wait_for(
        Duration::from_secs(30),
        "all 41 contacts after the new login",
        || async { world.sim.contacts().len() == 41 },
    )
    .await;
    wait_for(Duration::from_secs(10), "resumed", || async {
        world.metric("ccsync_paused{reason=\"auth\"}").await == Some(0.0)
            && world.metric("ccsync_auth_state").await == Some(1.0)
    })
    .await;
    assert_eq!(world.parked_len("default").await, 0);
    assert_eq!(world.dead_len().await, 0);
    worker.kill().await.ok();
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_quota_pauses_until_utc_midnight_then_resumes_losing_nothing() {
    // Both clocks sit 25 s before 00:00 UTC; simulator and worker share a daily quota of 200.
    let now = time::OffsetDateTime::now_utc();
    let to_midnight = ccsync::clock::secs_until_utc_midnight(now);
    let offset = to_midnight.saturating_sub(25);
    let mut world = World::new(SimConfig {
        daily_quota: 200,
        per_second: 50,
        ..World::fast_sim()
    })
    .await;
    world.sim.advance_clock(Duration::from_secs(offset));
    world.seed_tokens("default").await;
    world.set("CCSYNC_TESTING__CLOCK_OFFSET_SECS", &offset.to_string());
    world.set("CCSYNC_RATELIMIT__DAILY_QUOTA", "200");
    world.set("CCSYNC_RATELIMIT__DAILY_RESERVE", "20");
    world.set("CCSYNC_RATELIMIT__PER_SECOND", "20");
    // Explicit consent: one sign_up_form call per contact, so 260 messages need more than a day.
    let bodies: Vec<Vec<u8>> = (0..260)
        .map(|i| {
            let mut m: serde_json::Value = serde_json::from_slice(&message(
                &format!("q{i}@example.com"),
                "2026-11-23T10:00:00Z",
                json!({}),
            ))
            .unwrap();
            m["consent"] = json!("explicit");
            serde_json::to_vec(&m).unwrap()
        })
        .collect();
    world.publish(&bodies).await;
    let mut worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(90),
        "all 260 after midnight",
        || async { world.sim.contacts().len() == 260 },
    )
    .await;
    let reqs = world.sim.requests();
    let day = |r: &ccsync::sim::RequestRecord| r.at.date();
    let first_day = reqs.first().map(day).unwrap();
    let api_first_day = reqs
        .iter()
        .filter(|r| r.path.starts_with("/v3/") && day(r) == first_day)
        .count();
    let api_next_day = reqs
        .iter()
        .filter(|r| r.path.starts_with("/v3/") && day(r) > first_day)
        .count();
    assert!(
        api_first_day <= 200,
        "{api_first_day} calls on the first day"
    );
    assert!(
        api_first_day >= 150,
        "the worker used its day's budget ({api_first_day})"
    );
    assert!(
        api_next_day >= 60,
        "the worker resumed after midnight ({api_next_day})"
    );
    let refused = reqs.iter().filter(|r| r.status == Some(429)).count();
    assert_eq!(refused, 0, "the worker stopped before CC had to refuse");
    wait_for(Duration::from_secs(20), "queue drained", || async {
        world.queue_len().await == 0
    })
    .await;
    assert_eq!(world.dead_len().await, 0, "nothing dead-lettered");
    worker.kill().await.ok();
    world.cleanup().await;
}

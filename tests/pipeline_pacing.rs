//! DESIGN §4 budget-aware batching, end to end: the same trickle of messages goes out in many
//! small imports when the day's budget is plentiful and in one import when it is tight, because the
//! worker's batch linger follows the shared limiter's pacing.

mod common;

use std::time::Duration;

use common::{World, message, wait_for};
use serde_json::json;

/// Imports the worker makes for a trickle of 10 messages, 400 ms apart, under this daily quota.
async fn imports_for_trickle(daily_quota: &str) -> usize {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    // Put the worker's clock at 12:00 UTC so 12 hours are left until the quota resets.
    let until_midnight =
        ccsync::clock::secs_until_utc_midnight(time::OffsetDateTime::now_utc()) as i64;
    world.set(
        "CCSYNC_TESTING__CLOCK_OFFSET_SECS",
        &(until_midnight - 43_200).to_string(),
    );
    world.set("CCSYNC_RATELIMIT__DAILY_QUOTA", daily_quota);
    world.set("CCSYNC_RATELIMIT__DAILY_RESERVE", "10");
    world.set("CCSYNC_WORKER__LINGER_MIN_MS", "200");
    world.set("CCSYNC_WORKER__LINGER_MAX_MS", "15000");
    let mut worker = world.spawn_worker();
    // Let the worker start and take its first pacing reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..10 {
        world
            .publish(&[message(
                &format!("t{i}@example.com"),
                "2026-11-23T10:00:00Z",
                json!({}),
            )])
            .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    wait_for(Duration::from_secs(40), "all 10 synced", || async {
        world.sim.contacts().len() == 10
    })
    .await;
    let imports = world.imports();
    worker.kill().await.ok();
    world.cleanup().await;
    imports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_grows_when_the_budget_is_tight_and_stays_short_when_it_is_not() {
    // Plentiful: 12 h × 4 calls × 3 replicas / 10,000,000 ≈ 0.02 s → the 200 ms floor.
    let plentiful = imports_for_trickle("10000000").await;
    // Tight: 12 h × 4 × 3 / 990 ≈ 520 s → the 15 s ceiling: the whole trickle waits for one import.
    let tight = imports_for_trickle("1000").await;
    assert!(
        plentiful >= 5,
        "{plentiful} imports with a plentiful budget"
    );
    assert_eq!(tight, 1, "{tight} imports with a tight budget");
}

/// Issue 11: every list set shares one schedule. Six list sets get one message each, all at once,
/// under a budget where one import (4 requests) is worth 3 s of the schedule: the imports go
/// one slot apart instead of six at the end of one linger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sets_are_released_one_slot_apart() {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let lists: Vec<uuid::Uuid> = (0..6)
        .map(|i| world.sim.create_list(&format!("Set {i}")))
        .collect();
    let until_midnight =
        ccsync::clock::secs_until_utc_midnight(time::OffsetDateTime::now_utc()) as i64;
    world.set(
        "CCSYNC_TESTING__CLOCK_OFFSET_SECS",
        &(until_midnight - 43_200).to_string(),
    );
    // 43,200 s × 1 replica / 57,600 requests = 0.75 s a request, 3 s an import.
    world.set("CCSYNC_RATELIMIT__DAILY_QUOTA", "57610");
    world.set("CCSYNC_RATELIMIT__DAILY_RESERVE", "10");
    world.set("CCSYNC_RATELIMIT__EXPECTED_REPLICAS", "1");
    world.set("CCSYNC_WORKER__LINGER_MIN_MS", "200");
    world.set("CCSYNC_WORKER__LINGER_MAX_MS", "60000");
    let mut worker = world.spawn_worker();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bodies: Vec<Vec<u8>> = lists
        .iter()
        .enumerate()
        .map(|(i, l)| {
            message(
                &format!("s{i}@example.com"),
                "2026-11-23T10:00:00Z",
                json!({ "list_ids": [l] }),
            )
        })
        .collect();
    world.publish(&bodies).await;
    wait_for(Duration::from_secs(60), "all 6 synced", || async {
        world.sim.contacts().len() == 6
    })
    .await;
    let mut at: Vec<u64> = world
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/activities/contacts_json_import") && r.status == Some(201))
        .map(|r| r.real_ms)
        .collect();
    worker.kill().await.ok();
    world.cleanup().await;
    at.sort();
    assert_eq!(at.len(), 6, "one import per list set: {at:?}");
    let gaps: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("imports {gaps:?} ms apart");
    // Each import moves the schedule 3 s; allow for the limiter's and the sender's jitter.
    assert!(
        gaps.iter().all(|g| *g >= 2_000),
        "imports {gaps:?} ms apart"
    );
}

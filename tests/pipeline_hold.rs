//! DESIGN §2 "mind the broker's consumer timeout": the worker keeps deliveries unacked at most
//! `worker.max_hold_secs`; an activity that outlives the bound returns its messages to the queue,
//! and a message that keeps coming back is dead-lettered instead of looping forever.

mod common;

use std::time::Duration;

use ccsync::sim::SimConfig;
use common::{World, message, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_outliving_the_hold_bound_is_requeued_then_dead_lettered_not_looped() {
    let mut world = World::new(SimConfig {
        // CC takes longer than the worker may hold a delivery.
        processing: Duration::from_secs(60),
        ..World::fast_sim()
    })
    .await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_WORKER__MAX_HOLD_SECS", "2");
    world.set("CCSYNC_WORKER__REQUEST_TIMEOUT_SECS", "1");
    world.set("CCSYNC_WORKER__MAX_REDELIVERIES", "2");
    world
        .publish(&[message(
            "slow@example.com",
            "2026-11-23T10:00:00Z",
            json!({}),
        )])
        .await;
    let mut worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(60),
        "dead-lettered after its redeliveries",
        || async { world.dead_len().await == 1 },
    )
    .await;
    let dead = world.dead_letters().await;
    assert_eq!(dead[0].reason.as_deref(), Some("redelivered_too_often"));
    // It was tried (and requeued) a bounded number of times: 1 + max_redeliveries imports.
    let imports = world.imports();
    assert!((2..=3).contains(&imports), "{imports} imports");
    assert_eq!(world.queue_len().await, 0);
    worker.kill().await.ok();
    world.cleanup().await;
}

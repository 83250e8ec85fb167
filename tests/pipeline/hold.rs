//! DESIGN §2 "mind the broker's consumer timeout" and "an outage is not poison": the worker keeps
//! deliveries unacked at most `worker.max_hold_secs`; an activity that outlives the bound returns
//! its messages to the queue without blame (no redelivery counted, nothing dead-lettered), its
//! claim stays until CC settles the import, and the message is synced once CC is done.

use crate::common;

use std::time::Duration;

use ccsync::sim::Faults;
use common::{World, message, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_outliving_the_hold_bound_is_requeued_without_blame_then_synced() {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_WORKER__MAX_HOLD_SECS", "2");
    world.set("CCSYNC_WORKER__REQUEST_TIMEOUT_SECS", "1");
    // Before, a message requeued this often was dead-lettered as poison.
    world.set("CCSYNC_WORKER__MAX_REDELIVERIES", "1");
    // CC takes 10 s for the first import: five hold bounds.
    world.sim.set_faults(Faults {
        extra_processing_ms: 10_000,
        ..Faults::default()
    });
    world
        .publish(&[message(
            "slow@example.com",
            "2026-11-23T10:00:00Z",
            json!({"first_name": "Slow"}),
        )])
        .await;
    let worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(30),
        "the slow import created",
        || async { world.imports() >= 1 },
    )
    .await;
    world.sim.set_faults(Faults::default());
    wait_for(
        Duration::from_secs(60),
        "synced once CC is done",
        || async {
            world
                .metric("ccsync_messages_total{outcome=\"synced\"}")
                .await
                == Some(1.0)
        },
    )
    .await;
    assert!(world.sim.contact("slow@example.com").is_some());
    // Requeued (without blame) while the slow import ran, never dead-lettered.
    let requeued = world
        .metric("ccsync_messages_total{outcome=\"requeued\"}")
        .await
        .unwrap_or(0.0);
    assert!(requeued >= 1.0, "{requeued} requeues");
    assert_eq!(world.dead_len().await, 0);
    // The claim held while CC worked: no second import until the first had settled.
    let imports = world.imports();
    assert!((2..=3).contains(&imports), "{imports} imports");
    assert!(world.terminate(worker).await.success());
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

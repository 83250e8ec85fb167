//! DESIGN §2: "a claim on an email holds for as long as its import is in flight, however many
//! minutes CC takes". Replica A's import of older values takes CC longer than the claim's lease
//! (and, in the second case, longer than A's hold bound, so A's deliveries go back to the queue);
//! replica B receives newer values for the same emails meanwhile, and its import is fast. Were
//! A's claim to lapse, B's newer values would land first and A's older ones overwrite them.

use crate::common;

use std::time::Duration;

use ccsync::sim::Faults;
use common::{World, message, store, wait_for};
use serde_json::json;

const N: usize = 20;

async fn older_slow_import_never_lands_after_a_newer_fast_one(hold_secs: Option<u64>) {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_WORKER__CLAIM_LEASE_SECS", "1");
    world.set("CCSYNC_WORKER__PREFETCH", &N.to_string());
    world.set("CCSYNC_WORKER__POLL_MAX_MS", "300");
    if let Some(h) = hold_secs {
        world.set("CCSYNC_WORKER__MAX_HOLD_SECS", &h.to_string());
        world.set("CCSYNC_WORKER__REQUEST_TIMEOUT_SECS", "1");
    }
    let email = |i: usize| format!("c{i}@example.com");
    // A's import: 8 s at CC, eight leases.
    world.sim.set_faults(Faults {
        extra_processing_ms: 8_000,
        ..Faults::default()
    });
    let older: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            message(
                &email(i),
                "2026-11-23T10:00:01Z",
                json!({"first_name": "old"}),
            )
        })
        .collect();
    world.publish(&older).await;
    let a = world.spawn_worker();
    wait_for(
        Duration::from_secs(30),
        "A's slow import created",
        || async { world.imports() >= 1 },
    )
    .await;
    // Every later import is fast.
    world.sim.set_faults(Faults::default());
    let port_b = common::free_port();
    let b = world.spawn_worker_on(port_b);
    let newer: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            message(
                &email(i),
                "2026-11-23T10:00:02Z",
                json!({"first_name": "new"}),
            )
        })
        .collect();
    world.publish(&newer).await;
    // Every activity terminal (A's slow one included) and CC holding the newer values; had the
    // older import landed last, CC would keep "old" once every activity is done.
    let newest = || {
        let held = store(&world.sim);
        held.len() == N
            && held
                .values()
                .all(|c| c.fields.get("first_name").map(String::as_str) == Some("new"))
    };
    wait_for(
        Duration::from_secs(90),
        "every import settled with the newer values in CC",
        || async {
            let c = world.sim.counters();
            c.activities >= 2
                && c.activities == c.activities_completed + c.activities_failed
                && newest()
                && world.settled().await + world.settled_on(port_b).await >= 2 * N as u64
        },
    )
    .await;
    assert!(world.terminate(a).await.success());
    assert!(world.terminate(b).await.success());
    assert!(
        newest(),
        "CC still holds the newer values after the workers stopped"
    );
    assert_eq!(world.queue_len().await + world.dead_len().await, 0);
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_outlives_its_lease_while_the_import_is_in_flight() {
    older_slow_import_never_lands_after_a_newer_fast_one(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_outlives_the_hold_bound_until_cc_settles_the_import() {
    older_slow_import_never_lands_after_a_newer_fast_one(Some(3)).await;
}

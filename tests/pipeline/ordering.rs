//! DESIGN §2: the newest event wins across batches and replicas. Two worker processes receive
//! interleaved updates for the same emails while the simulator completes activities out of
//! order; CC must end with the newest value of every field and every list.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ccsync::sim::{Faults, SimConfig};
use common::{World, message, store, wait_for};
use rand::seq::SliceRandom;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_out_of_order_activities_newest_fields_and_every_list_win() {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.sim.set_faults(Faults {
        processing_jitter_ms: 600,
        ..Faults::default()
    });
    // Small batches, so the events of one email travel in different imports.
    world.set("CCSYNC_WORKER__BATCH_MAX_CONTACTS", "6");
    world.set("CCSYNC_WORKER__LINGER_MIN_MS", "50");
    world.set("CCSYNC_WORKER__LINGER_MAX_MS", "50");
    world.set("CCSYNC_WORKER__PREFETCH", "10");
    let lists = world.lists.clone();
    let extra = world.sim.create_list("Third");
    let all_lists = [lists[0], lists[1], extra];
    let mut events = Vec::new();
    let mut want_first: BTreeMap<String, String> = BTreeMap::new();
    let mut want_city: BTreeMap<String, String> = BTreeMap::new();
    for e in 0..24 {
        let email = format!("o{e}@example.com");
        for v in 0..3u32 {
            // Event v sets first_name; only the first two set the city; each adds a list.
            let at = format!("2026-11-23T10:00:{:02}Z", v * 10);
            let mut fields =
                json!({"first_name": format!("v{v}"), "list_ids": [all_lists[(v as usize) % 3]]});
            if v < 2 {
                fields["address"] = json!({"city": format!("city{v}")});
            }
            events.push(message(&email, &at, fields));
        }
        want_first.insert(email.clone(), "v2".into());
        want_city.insert(email, "city1".into());
    }
    events.shuffle(&mut rand::rng());
    let a = world.spawn_worker();
    let b = world.spawn_worker_on(common::free_port());
    world.publish(&events).await;
    wait_for(
        Duration::from_secs(120),
        "CC converges to the newest values and every list",
        || async {
            let held = store(&world.sim);
            held.len() == 24
                && held.iter().all(|(email, c)| {
                    c.fields.get("first_name") == want_first.get(email)
                        && c.fields.get("city") == want_city.get(email)
                        && c.list_ids == BTreeSet::from(all_lists)
                })
        },
    )
    .await;
    // Both replicas worked, and activities really completed out of order.
    assert!(world.imports() >= 8, "{} imports", world.imports());
    let sa = world.terminate(a).await;
    let sb = world.terminate(b).await;
    assert!(sa.success() && sb.success());
    assert_eq!(world.queue_len().await, 0);
    assert_eq!(world.dead_len().await, 0);
    world.cleanup().await;
}

/// Issue 11's three-event case across replicas: replica A coalesces t1 {first v0, last Turing}
/// with t3 {first v1} into one import; replica B receives t2 {first v2, last Ritchie} while A's
/// import is in flight. Each field keeps its own time: CC ends with first_name v1 (t3) and
/// last_name Ritchie (t2), never Turing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_entry_does_not_stamp_its_older_fields_with_its_newer_time() {
    const N: usize = 20;
    let mut world = World::new(SimConfig {
        // A's import stays in flight while B's events arrive.
        processing: Duration::from_secs(3),
        ..World::fast_sim()
    })
    .await;
    world.seed_tokens("default").await;
    // A holds exactly its 2N deliveries, so every t2 goes to B.
    world.set("CCSYNC_WORKER__PREFETCH", &(2 * N).to_string());
    world.set("CCSYNC_WORKER__LINGER_MIN_MS", "500");
    world.set("CCSYNC_WORKER__LINGER_MAX_MS", "500");
    let email = |i: usize| format!("x{i}@example.com");
    let mut first = Vec::new();
    for i in 0..N {
        first.push(message(
            &email(i),
            "2026-11-23T10:00:01Z",
            json!({"first_name": "v0", "last_name": "Turing"}),
        ));
        first.push(message(
            &email(i),
            "2026-11-23T10:00:03Z",
            json!({"first_name": "v1"}),
        ));
    }
    world.publish(&first).await;
    let a = world.spawn_worker();
    wait_for(
        Duration::from_secs(30),
        "A imported its merged entries",
        || async { world.queue_len().await == 0 && world.imports() >= 1 },
    )
    .await;
    let b = world.spawn_worker_on(common::free_port());
    let second: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            message(
                &email(i),
                "2026-11-23T10:00:02Z",
                json!({"first_name": "v2", "last_name": "Ritchie"}),
            )
        })
        .collect();
    world.publish(&second).await;
    wait_for(Duration::from_secs(60), "every message settled", || async {
        world.queue_len().await == 0 && world.imports() >= 2 && {
            let held = store(&world.sim);
            held.len() == N
                && held
                    .values()
                    .all(|c| c.fields.get("last_name").map(String::as_str) == Some("Ritchie"))
        }
    })
    .await;
    let held = store(&world.sim);
    for i in 0..N {
        let c = &held[&email(i)];
        assert_eq!(c.fields.get("first_name").map(String::as_str), Some("v1"));
        assert_eq!(
            c.fields.get("last_name").map(String::as_str),
            Some("Ritchie")
        );
    }
    let sa = world.terminate(a).await;
    let sb = world.terminate(b).await;
    assert!(sa.success() && sb.success());
    assert_eq!(world.queue_len().await, 0);
    assert_eq!(world.dead_len().await, 0);
    world.cleanup().await;
}

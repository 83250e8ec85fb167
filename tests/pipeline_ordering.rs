//! DESIGN §2: the newest event wins across batches and replicas. Two worker processes receive
//! interleaved updates for the same emails while the simulator completes activities out of
//! order; CC must end with the newest value of every field and every list.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ccsync::sim::Faults;
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

//! DESIGN §2 "an outage is not poison" and issue 12's 403: while CC fails call after call (5xx)
//! or forbids every call (403), the worker stops pulling, probes at a capped rate, stays ready,
//! dead-letters nothing, burns no redeliveries, and resumes by itself.

use crate::common;

use std::time::Duration;

use ccsync::sim::Faults;
use common::{World, message, store, wait_for};
use serde_json::json;

fn backlog(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            message(
                &format!("o{i}@example.com"),
                "2026-11-23T10:00:00Z",
                json!({"first_name": format!("n{i}")}),
            )
        })
        .collect()
}

async fn ready(port: u16) -> bool {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// CC requests the simulator saw since `from` (by arrival order).
fn api_requests_since(world: &World, from: u64) -> usize {
    world
        .sim
        .requests()
        .iter()
        .filter(|r| r.seq >= from && r.path.starts_with("/v3/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_fifteen_hold_periods_dead_letters_nothing_and_costs_few_requests() {
    const N: usize = 300;
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_WORKER__MAX_HOLD_SECS", "2");
    world.set("CCSYNC_WORKER__REQUEST_TIMEOUT_SECS", "1");
    world.set("CCSYNC_WORKER__MAX_REDELIVERIES", "2");
    world.set("CCSYNC_WORKER__BATCH_MAX_CONTACTS", "50");
    let worker = world.spawn_worker();
    wait_for(Duration::from_secs(20), "worker ready", || async {
        ready(world.metrics_port).await
    })
    .await;
    // CC goes down (503 on every call), then the messages arrive.
    let from = world.sim.requests().len() as u64;
    world.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    world.publish(&backlog(N)).await;
    wait_for(Duration::from_secs(30), "paused for the outage", || async {
        world.metric("ccsync_paused{reason=\"outage\"}").await == Some(1.0)
    })
    .await;
    // Fifteen hold periods of outage (30 s); the worker stays ready all along.
    let outage_end = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < outage_end {
        assert!(
            ready(world.metrics_port).await,
            "a paused worker stays ready"
        );
        assert_eq!(
            world.dead_len().await,
            0,
            "nothing dead-lettered during the outage"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let spent = api_requests_since(&world, from);
    // Five failures open the breaker; then a probe every 5, 10, 20, 20 s (at most 3 a minute),
    // plus what was in flight when CC went down. A 4-hour outage at this pace costs ~720.
    assert!(spent <= 20, "{spent} requests during a 30 s outage");
    world.sim.set_faults(Faults::default());
    wait_for(
        Duration::from_secs(90),
        "every contact synced after the outage",
        || async { store(&world.sim).len() == N },
    )
    .await;
    wait_for(Duration::from_secs(20), "resumed", || async {
        world.metric("ccsync_paused{reason=\"outage\"}").await == Some(0.0)
    })
    .await;
    assert!(world.terminate(worker).await.success());
    assert_eq!(world.dead_len().await, 0);
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_pauses_every_replica_as_forbidden_and_work_resumes_by_itself() {
    const N: usize = 200;
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_WORKER__MAX_REDELIVERIES", "1");
    world.set("CCSYNC_WORKER__BATCH_MAX_CONTACTS", "20");
    world.set("CCSYNC_WORKER__PREFETCH", "40");
    let port_b = common::free_port();
    let a = world.spawn_worker();
    let b = world.spawn_worker_on(port_b);
    for port in [world.metrics_port, port_b] {
        wait_for(Duration::from_secs(20), "replica ready", || async {
            ready(port).await
        })
        .await;
    }
    world.sim.set_faults(Faults {
        forbidden: true,
        ..Faults::default()
    });
    world.publish(&backlog(N)).await;
    let paused = |port: u16| async move {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        common::metric_value(&text, "ccsync_paused{reason=\"forbidden\"}")
    };
    for port in [world.metrics_port, port_b] {
        wait_for(
            Duration::from_secs(30),
            "replica paused as forbidden",
            || async { paused(port).await == Some(1.0) },
        )
        .await;
        assert!(ready(port).await, "a paused replica stays ready");
    }
    assert_eq!(world.dead_len().await, 0);
    world.sim.set_faults(Faults::default());
    wait_for(Duration::from_secs(90), "every contact synced", || async {
        store(&world.sim).len() == N
    })
    .await;
    for port in [world.metrics_port, port_b] {
        wait_for(Duration::from_secs(30), "replica resumed", || async {
            paused(port).await == Some(0.0)
        })
        .await;
    }
    assert!(world.terminate(a).await.success());
    assert!(world.terminate(b).await.success());
    assert_eq!(world.dead_len().await, 0);
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

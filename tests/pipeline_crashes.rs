//! DESIGN §2 "an outage is not poison", for crashes: workers killed with SIGKILL every few
//! seconds through a 20,000-message backlog dead-letter no valid message (every delivery a dead
//! worker held comes back, though almost none of them killed it), while a message that kills the
//! worker each time it is read (the test-only `testing.abort_on_email`) ends in the dead-letter
//! queue as `crashes_worker`. CC ends with the newest value of every contact.

mod common;

use std::time::Duration;

use common::{World, message, store, wait_for};
use serde_json::json;
use tokio::process::Child;

const EMAILS: usize = 5_000;
const VERSIONS: usize = 4;
const KILLER: &str = "killer@example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_dead_letter_no_valid_message_but_a_killer_message_is_set_aside() {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_WORKER__MAX_REDELIVERIES", "3");
    world.set("CCSYNC_TESTING__ABORT_ON_EMAIL", KILLER);
    // Several batches in flight, so kills land mid-import.
    world.set("CCSYNC_WORKER__BATCH_MAX_CONTACTS", "2000");
    // Trailing partial batches go within 5 s instead of waiting up to the default 10 minutes
    // for the plan (the backlog charges it), so the workers settle everything before the end.
    world.set("CCSYNC_WORKER__LINGER_MAX_MS", "5000");
    let mut bodies = Vec::with_capacity(EMAILS * VERSIONS + 1);
    for v in 0..VERSIONS {
        for i in 0..EMAILS {
            bodies.push(message(
                &format!("k{i}@example.com"),
                &format!("2026-11-23T10:00:0{v}Z"),
                json!({"first_name": format!("v{v}")}),
            ));
        }
        if v == 1 {
            bodies.push(message(KILLER, "2026-11-23T10:00:00Z", json!({})));
        }
    }
    world.publish(&bodies).await;
    // Each worker with its metrics port: the end waits for what they hold, not only the queue.
    let spawn = |world: &World| {
        let port = common::free_port();
        (world.spawn_worker_on(port), port)
    };
    let mut workers: Vec<(Child, u16)> = vec![spawn(&world), spawn(&world)];
    let done = || async {
        let held = store(&world.sim);
        world.queue_len().await == 0
            && world.dead_len().await >= 1
            && held.len() == EMAILS
            && held.values().all(|c| {
                c.fields.get("first_name").map(String::as_str)
                    == Some(&format!("v{}", VERSIONS - 1))
            })
    };
    // Kill one worker every 2.5 s (alternating) and start a new one; restart any worker the
    // killer message took down.
    let mut kills = 0;
    let killing_until = tokio::time::Instant::now() + Duration::from_secs(40);
    while tokio::time::Instant::now() < killing_until && !done().await {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let w = &mut workers[kills % 2];
        w.0.start_kill().ok();
        let _ = w.0.wait().await;
        *w = spawn(&world);
        kills += 1;
        for w in workers.iter_mut() {
            if let Ok(Some(_)) = w.0.try_wait() {
                *w = spawn(&world);
            }
        }
    }
    assert!(
        kills >= 5,
        "only {kills} kills: the backlog drained too fast to test"
    );
    // Then let the survivors finish (restarting any the killer takes down).
    wait_for(
        Duration::from_secs(180),
        "every contact at its newest value, the killer set aside",
        || {
            for w in workers.iter_mut() {
                if let Ok(Some(_)) = w.0.try_wait() {
                    *w = spawn(&world);
                }
            }
            done()
        },
    )
    .await;
    // CC is done, but copies the kills returned to the queue (older versions, now superseded)
    // may still be waiting, or held unacked in a batcher (the broker's ready count does not
    // show those): let the workers settle them all before stopping, or stopping returns them.
    // A copy of the killer can still come back (a kill between its dead letter's confirm and
    // the original's ack) and take a worker down with what it held: restart it, as above. A
    // worker that has just taken a burst into its prefetch buffer holds it before its pipeline
    // counts it (neither ready nor held), so the state must hold for 2 s with no restart.
    let stable = std::rc::Rc::new(std::cell::Cell::new(None::<tokio::time::Instant>));
    wait_for(
        Duration::from_secs(150),
        "the queue drained and no worker holding a delivery, for 2 s",
        || {
            for w in workers.iter_mut() {
                if let Ok(Some(_)) = w.0.try_wait() {
                    *w = spawn(&world);
                    stable.set(None);
                }
            }
            let ports: Vec<u16> = workers.iter().map(|w| w.1).collect();
            let world = &world;
            let stable = stable.clone();
            async move {
                let mut settled = world.queue_len().await == 0;
                for port in ports {
                    let held = common::metrics_text(port)
                        .await
                        .and_then(|t| common::metric_value(&t, "ccsync_held_messages"));
                    settled &= held == Some(0.0);
                }
                match (settled, stable.get()) {
                    (false, _) => {
                        stable.set(None);
                        false
                    }
                    (true, None) => {
                        stable.set(Some(tokio::time::Instant::now()));
                        false
                    }
                    (true, Some(since)) => since.elapsed() >= Duration::from_secs(2),
                }
            }
        },
    )
    .await;
    for (w, _) in workers {
        assert!(world.terminate(w).await.success());
    }
    // Only the killer is dead-lettered. A kill between a dead letter's confirm and the
    // original's ack dead-letters it twice (a duplicate, never a loss: queue.rs), so the count
    // of copies is not the point; that no valid message is among them is.
    let dead = world.dead_letters().await;
    assert!(!dead.is_empty(), "the killer is dead-lettered");
    for d in &dead {
        assert_eq!(d.reason.as_deref(), Some("crashes_worker"));
        let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(
            v["contact"]["email"], KILLER,
            "a valid message was dead-lettered"
        );
    }
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

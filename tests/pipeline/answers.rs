//! Issue 12: every CC answer handled as CC means it, at the fewest requests. The simulator gives
//! each answer on demand (unknown lists, 409 on sign-ups, rows skipped as correctable, 404 and
//! 5xx on polls); workers are separate processes on the real broker and Redis.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use ccsync::sim::Faults;
use common::{World, message, store, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

fn messages(prefix: &str, n: usize, extra: Value) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut body: Value = serde_json::from_slice(&message(
                &format!("{prefix}{i}@example.com"),
                "2026-11-23T10:00:00Z",
                json!({"first_name": format!("n{i}")}),
            ))
            .unwrap();
            if let Value::Object(extra) = &extra {
                for (k, v) in extra {
                    if k == "list_ids" {
                        body["contact"]["list_ids"] = v.clone();
                    } else {
                        body[k] = v.clone();
                    }
                }
            }
            serde_json::to_vec(&body).unwrap()
        })
        .collect()
}

fn count(world: &World, path_end: &str, status: Option<u16>) -> usize {
    world
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(path_end) && (status.is_none() || r.status == status))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_cc_lacks_dead_letters_its_messages_at_once_without_halving() {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_WORKER__LINGER_MIN_MS", "1000");
    world.set("CCSYNC_WORKER__LINGER_MAX_MS", "1000");
    let typo = Uuid::new_v4();
    let mut all = messages("ok", 1000, json!({}));
    all.extend(messages(
        "typo",
        20,
        json!({"list_ids": [typo.to_string()]}),
    ));
    world.publish(&all).await;
    let worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(60),
        "valid synced, typos dead-lettered",
        || async { store(&world.sim).len() == 1000 && world.dead_len().await == 20 },
    )
    .await;
    assert!(world.terminate(worker).await.success());
    let dead = world.dead_letters().await;
    assert!(
        dead.iter()
            .all(|d| d.reason.as_deref() == Some("unknown_list"))
    );
    assert!(
        dead[0]
            .detail
            .as_deref()
            .unwrap()
            .contains(&typo.to_string())
    );
    // No import was refused, so none was halved: one import per batch, its polls, and one look
    // at the account's lists.
    assert_eq!(count(&world, "/contacts_json_import", Some(400)), 0);
    let imports = world.imports();
    assert!(imports <= 3, "{imports} imports for 1,000 contacts");
    assert_eq!(count(&world, "/contact_lists", None), 1);
    let polls = world
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/activities/"))
        .count();
    let total = world
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v3/"))
        .count();
    assert_eq!(
        total,
        imports + polls + 1,
        "imports, polls and one list look-up"
    );
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_list_cc_lacks_stops_config_check_and_worker_with_one_line() {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let missing = Uuid::new_v4();
    world.set("CCSYNC_DEFAULT_LIST_IDS", &missing.to_string());
    for args in [&["config", "check"][..], &["worker"][..]] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
            .args(args)
            .envs(world.env())
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains(&missing.to_string()))
            .unwrap_or_else(|| panic!("{args:?}: no line names the list:\n{text}"));
        assert!(line.contains("CCSYNC_DEFAULT_LIST_IDS"), "{line}");
    }
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_answered_409_are_retried_and_all_synced() {
    const N: usize = 60;
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.sim.set_faults(Faults {
        signup_conflict_rate: 0.3,
        ..Faults::default()
    });
    world
        .publish(&messages("su", N, json!({"consent": "explicit"})))
        .await;
    let worker = world.spawn_worker();
    wait_for(Duration::from_secs(90), "every sign-up synced", || async {
        store(&world.sim).len() == N
    })
    .await;
    assert!(
        count(&world, "/sign_up_form", Some(409)) > 0,
        "the fault fired"
    );
    assert!(world.terminate(worker).await.success());
    assert_eq!(world.dead_len().await, 0);
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_skipped_as_correctable_end_in_cc_or_dead_lettered_never_acked_missing() {
    const N: usize = 400;
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.sim.set_faults(Faults {
        correctable_rate: 0.02,
        ..Faults::default()
    });
    world.publish(&messages("cr", N, json!({}))).await;
    let worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(120),
        "every message in CC or dead-lettered",
        || async {
            let synced = world
                .metric("ccsync_messages_total{outcome=\"synced\"}")
                .await
                .unwrap_or(0.0) as usize;
            synced + world.dead_len().await as usize == N
        },
    )
    .await;
    assert!(world.terminate(worker).await.success());
    let held = store(&world.sim);
    let dead: BTreeSet<String> = world
        .dead_letters()
        .await
        .into_iter()
        .map(|d| {
            assert_eq!(d.reason.as_deref(), Some("rejected_by_cc"));
            let v: Value = serde_json::from_slice(&d.body).unwrap();
            v["contact"]["email"].as_str().unwrap().to_string()
        })
        .collect();
    for i in 0..N {
        let email = format!("cr{i}@example.com");
        assert!(
            held.contains_key(&email) || dead.contains(&email),
            "{email} is neither in CC nor dead-lettered"
        );
    }
    // Acked as synced means in CC: the synced count never exceeds what CC holds.
    assert!(held.len() + dead.len() >= N);
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_answered_404_or_5xx_dead_letter_nothing_and_the_data_arrives() {
    const N: usize = 200;
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_WORKER__BATCH_MAX_CONTACTS", "25");
    world.sim.set_faults(Faults {
        activity_not_found_rate: 0.3,
        activity_poll_error_rate: 0.2,
        ..Faults::default()
    });
    world.publish(&messages("po", N, json!({}))).await;
    let worker = world.spawn_worker();
    wait_for(Duration::from_secs(120), "every contact synced", || async {
        store(&world.sim).len() == N
            && world
                .metric("ccsync_messages_total{outcome=\"synced\"}")
                .await
                == Some(N as f64)
    })
    .await;
    let polls_404 = world
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.contains("/activities/") && r.status == Some(404))
        .count();
    assert!(polls_404 > 0, "the fault fired");
    assert!(world.terminate(worker).await.success());
    assert_eq!(world.dead_len().await, 0);
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

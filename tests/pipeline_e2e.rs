//! The sync pipeline end to end: real RabbitMQ, real Redis, the simulator, and `ccsync worker`
//! as its own OS process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ccsync::sim::Faults;
use common::{World, message, store, wait_for};
use serde_json::json;

fn ts(minute: u32) -> String {
    format!("2026-11-23T{:02}:{:02}:00Z", 8 + minute / 60, minute % 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_is_merged_synced_and_invalid_ones_dead_lettered() {
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    // 10,000 messages: 9,000 first events, 900 repeats (10%) with newer names, 100 invalid (1%).
    let mut bodies = Vec::new();
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..9_000u32 {
        let email = format!("person{i}@example.com");
        bodies.push(message(
            &email,
            &ts(0),
            json!({"first_name": format!("First{i}"), "last_name": "Kept"}),
        ));
        expected.insert(email, format!("First{i}"));
    }
    for i in (0..9_000u32).step_by(10) {
        let email = format!("person{i}@example.com");
        // Repeats arrive before and after the original: the newest occurred_at must win anyway.
        let newer = message(&email, &ts(5), json!({"first_name": format!("Renamed{i}")}));
        if i % 20 == 0 {
            bodies.insert(i as usize, newer);
        } else {
            bodies.push(newer);
        }
        expected.insert(email, format!("Renamed{i}"));
    }
    let mut invalid = 0;
    for i in 0..100u32 {
        let body = match i % 4 {
            0 => b"{not json".to_vec(),
            1 => message("not-an-email", &ts(0), json!({})),
            2 => message(
                &format!("long{i}@example.com"),
                &ts(0),
                json!({"first_name": "x".repeat(80)}),
            ),
            _ => br#"{"type":"contact.upsert","version":1,"id":"x","contact":{"email":"a@b.co"}}"#
                .to_vec(),
        };
        bodies.push(body);
        invalid += 1;
    }
    assert_eq!(bodies.len(), 10_000);
    world.publish(&bodies).await;
    let worker = world.spawn_worker();

    // Converged: every contact holds the newest values (field by field).
    wait_for(
        Duration::from_secs(120),
        "CC holds exactly the merged contacts",
        || async {
            let held = store(&world.sim);
            held.len() == expected.len()
                && expected.iter().all(|(email, name)| {
                    held.get(email).is_some_and(|c| {
                        c.fields.get("first_name") == Some(name)
                            && c.fields.get("last_name").map(String::as_str) == Some("Kept")
                    })
                })
        },
    )
    .await;
    wait_for(
        Duration::from_secs(60),
        "every delivery settled once",
        || async { world.settled().await == 10_000 },
    )
    .await;
    assert_eq!(world.dead_len().await, invalid);
    // Every delivery settled: after a clean stop nothing returns to the queue.
    let status = world.terminate(worker).await;
    assert!(status.success());
    assert_eq!(world.queue_len().await, 0);
    let held = store(&world.sim);
    let mut wrong = Vec::new();
    for (email, name) in &expected {
        let c = held.get(email).unwrap_or_else(|| panic!("{email} missing"));
        if c.fields.get("first_name") != Some(name)
            || c.fields.get("last_name").map(String::as_str) != Some("Kept")
        {
            wrong.push((email.clone(), c.fields.clone(), c.writes));
        }
        assert_eq!(c.list_ids, BTreeSet::from([world.lists[0]]));
        assert_eq!(c.permission_to_send, "implicit");
    }
    assert!(
        wrong.is_empty(),
        "{} contacts hold the wrong fields, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let dead = world.dead_letters().await;
    assert_eq!(dead.len() as u32, invalid);
    let reasons: BTreeSet<String> = dead.iter().filter_map(|d| d.reason.clone()).collect();
    assert_eq!(
        reasons,
        BTreeSet::from(
            [
                "invalid_json",
                "invalid_email",
                "field_too_long",
                "missing_field"
            ]
            .map(String::from)
        )
    );
    assert!(
        dead.iter()
            .all(|d| d.detail.as_ref().is_some_and(|s| !s.is_empty()) && d.failed_at.is_some())
    );
    // Batching: a handful of imports for 9,000 contacts, never one per contact.
    let imports = world.imports();
    assert!((1..=60).contains(&imports), "{imports} imports");
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sets_travel_apart_and_explicit_consent_uses_sign_up_form() {
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let (a, b) = (world.lists[0], world.lists[1]);
    let mut bodies = Vec::new();
    for i in 0..30 {
        bodies.push(message(
            &format!("a{i}@example.com"),
            &ts(0),
            json!({"list_ids": [a]}),
        ));
        bodies.push(message(
            &format!("b{i}@example.com"),
            &ts(0),
            json!({"list_ids": [b], "custom_fields": {"tier": "gold"}}),
        ));
    }
    for i in 0..5 {
        let mut m: serde_json::Value = serde_json::from_slice(&message(
            &format!("x{i}@example.com"),
            &ts(0),
            json!({"list_ids": [b], "first_name": "Opted"}),
        ))
        .unwrap();
        m["consent"] = json!("explicit");
        bodies.push(serde_json::to_vec(&m).unwrap());
    }
    world.publish(&bodies).await;
    let mut worker = world.spawn_worker();
    wait_for(Duration::from_secs(60), "65 contacts", || async {
        world.sim.contacts().len() == 65
    })
    .await;
    wait_for(Duration::from_secs(20), "queue drained", || async {
        world.queue_len().await == 0
    })
    .await;
    for c in world.sim.contacts() {
        // An import carries one list_ids for all its rows: a contact on exactly its own list
        // proves the two list sets never shared an import.
        match &c.email[..1] {
            "a" => assert_eq!(c.list_ids, BTreeSet::from([a])),
            "b" => {
                assert_eq!(c.list_ids, BTreeSet::from([b]));
                assert_eq!(c.fields.get("cf:tier").map(String::as_str), Some("gold"));
                assert_eq!(c.permission_to_send, "implicit");
            }
            _ => assert_eq!(
                c.permission_to_send, "explicit",
                "explicit consent goes through sign_up_form"
            ),
        }
    }
    let sign_ups = world
        .sim
        .requests()
        .iter()
        .filter(|r| {
            r.path.ends_with("/contacts/sign_up_form") && matches!(r.status, Some(200 | 201))
        })
        .count();
    assert_eq!(sign_ups, 5);
    assert_eq!(world.dead_len().await, 0);
    worker.kill().await.ok();
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_dead_lettered_with_a_reason_each_and_the_worker_goes_on() {
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let deep = "[".repeat(3000) + &"]".repeat(3000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_json", b"plain text".to_vec()),
        ("wrong_type", message("a@example.com", &ts(0), json!({"first_name": 7}))),
        ("missing_field", br#"{"type":"contact.upsert","version":1,"id":"1","occurred_at":"2026-11-23T10:00:00Z","contact":{}}"#.to_vec()),
        ("field_too_long", message("b@example.com", &ts(0), json!({"company_name": "c".repeat(51)}))),
        ("message_too_large", vec![b' '; 1 << 20]),
        ("invalid_json", deep.into_bytes()),
        ("invalid_json", vec![0xc3, 0x28, b'{', b'}']),
        ("unknown_type", br#"{"type":"contact.merge","version":1,"id":"1","occurred_at":"2026-11-23T10:00:00Z","contact":{"email":"a@b.co"}}"#.to_vec()),
        ("unsupported_version", br#"{"type":"contact.upsert","version":9,"id":"1","occurred_at":"2026-11-23T10:00:00Z","contact":{"email":"a@b.co"}}"#.to_vec()),
        ("email_too_long", message(&format!("{}@example.com", "l".repeat(60)), &ts(0), json!({}))),
        ("unknown_custom_field", message("c@example.com", &ts(0), json!({"custom_fields": {"no_such_field": "1"}}))),
    ];
    let bodies: Vec<Vec<u8>> = cases.iter().map(|(_, b)| b.clone()).collect();
    world.publish(&bodies).await;
    world
        .publish(&[message(
            "good@example.com",
            &ts(0),
            json!({"first_name": "Good"}),
        )])
        .await;
    let mut worker = world.spawn_worker();
    wait_for(Duration::from_secs(60), "all dead letters", || async {
        world.dead_len().await == cases.len() as u32
    })
    .await;
    wait_for(Duration::from_secs(30), "the good one synced", || async {
        world.sim.contact("good@example.com").is_some()
    })
    .await;
    let dead = world.dead_letters().await;
    let mut got: Vec<String> = dead
        .iter()
        .map(|d| d.reason.clone().unwrap_or_default())
        .collect();
    let mut want: Vec<String> = cases.iter().map(|(r, _)| r.to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // The dead letter carries the original body unchanged.
    assert!(dead.iter().any(|d| d.body == b"plain text"));
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker keeps running"
    );
    worker.kill().await.ok();
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_cc_rejects_inside_an_import_are_found_and_dead_lettered() {
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.sim.set_faults(Faults {
        reject_emails_containing: Some("reject".into()),
        ..Faults::default()
    });
    let mut bodies: Vec<Vec<u8>> = (0..200)
        .map(|i| message(&format!("ok{i}@example.com"), &ts(0), json!({})))
        .collect();
    bodies.push(message("reject.me@example.com", &ts(0), json!({})));
    bodies.push(message("also.reject@example.com", &ts(0), json!({})));
    world.publish(&bodies).await;
    let mut worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(90),
        "two dead letters, queue drained",
        || async { world.dead_len().await == 2 && world.queue_len().await == 0 },
    )
    .await;
    assert_eq!(world.sim.contacts().len(), 200);
    let dead = world.dead_letters().await;
    assert!(
        dead.iter()
            .all(|d| d.reason.as_deref() == Some("rejected_by_cc"))
    );
    worker.kill().await.ok();
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_faults_never_ack_early_and_everything_arrives_after() {
    let mut world = World::new(World::fast_sim()).await;
    world.set("CCSYNC_WORKER__REQUEST_TIMEOUT_SECS", "2");
    world.seed_tokens("default").await;
    world.sim.set_faults(Faults {
        error_rate: 1.0,
        path_prefix: Some("/v3/".into()),
        ..Faults::default()
    });
    let bodies: Vec<Vec<u8>> = (0..300)
        .map(|i| message(&format!("f{i}@example.com"), &ts(0), json!({})))
        .collect();
    world.publish(&bodies).await;
    let mut worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(20),
        "the worker hit the 503s",
        || async {
            world
                .sim
                .counters()
                .by_status
                .get(&503)
                .copied()
                .unwrap_or(0)
                >= 2
        },
    )
    .await;
    // Failed activities next: CC takes the import, then the activity fails.
    world.sim.set_faults(Faults {
        activity_failure_rate: 1.0,
        ..Faults::default()
    });
    wait_for(Duration::from_secs(30), "a failed activity", || async {
        world.sim.counters().activities_failed >= 1
    })
    .await;
    assert!(
        world.sim.contacts().is_empty(),
        "nothing written by failed activities"
    );
    // Hanging requests: the client times out and retries.
    world.sim.set_faults(Faults {
        hang_rate: 1.0,
        path_prefix: Some("/v3/".into()),
        ..Faults::default()
    });
    let hung = |w: &World| {
        w.sim
            .requests()
            .iter()
            .filter(|r| r.fault.as_deref() == Some("hang"))
            .count()
    };
    wait_for(
        Duration::from_secs(30),
        "two hanging calls timed out",
        || async { hung(&world) >= 2 },
    )
    .await;
    assert!(
        world.sim.contacts().is_empty(),
        "nothing written while CC hangs"
    );
    // A lost import response (CC took it, the answer never came): retried, no harm.
    world.sim.set_faults(Faults {
        import_lost_response: Some(ccsync::sim::LostResponse {
            mode: ccsync::sim::LostMode::Drop,
            times: Some(1),
        }),
        ..Faults::default()
    });
    wait_for(
        Duration::from_secs(60),
        "all 300 arrive once faults stop",
        || async { world.sim.contacts().len() == 300 },
    )
    .await;
    wait_for(Duration::from_secs(20), "queue drained", || async {
        world.queue_len().await == 0
    })
    .await;
    assert_eq!(world.dead_len().await, 0, "faults are never dead letters");
    worker.kill().await.ok();
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_nothing_and_sigterm_drains_and_exits_zero() {
    let mut sim = World::fast_sim();
    sim.processing = Duration::from_secs(3);
    let world = World::new(sim).await;
    world.seed_tokens("default").await;
    let bodies: Vec<Vec<u8>> = (0..500)
        .map(|i| {
            message(
                &format!("k{i}@example.com"),
                &ts(0),
                json!({"first_name": "K"}),
            )
        })
        .collect();
    world.publish(&bodies).await;
    let mut worker = world.spawn_worker();
    wait_for(Duration::from_secs(30), "an import in flight", || async {
        world.imports() >= 1
    })
    .await;
    worker.start_kill().unwrap(); // SIGKILL
    worker.wait().await.unwrap();
    let before = world.imports();
    // Everything is still in the queue (unacked deliveries return when the connection dies).
    let mut worker = world.spawn_worker();
    // CC completes the killed worker's activity on its own; the restarted worker must still
    // import (and then ack) every message the killed one never acknowledged.
    wait_for(
        Duration::from_secs(60),
        "the restarted worker re-imports",
        || async { world.imports() > before },
    )
    .await;
    wait_for(
        Duration::from_secs(60),
        "all 500 arrive after the restart",
        || async { world.sim.contacts().len() == 500 },
    )
    .await;
    assert_eq!(world.dead_len().await, 0, "nothing wrongly dead-lettered");
    // The restarted worker has settled every redelivered message (its re-imports may wait for
    // the killed worker's ledger claims to lapse, and the daily plan spaces them): the next
    // import is then the one of the messages below.
    wait_for(
        Duration::from_secs(60),
        "the restarted worker settled the 500",
        || async { world.settled().await >= 500 },
    )
    .await;

    // SIGTERM with an import in flight: the worker drains within its deadline and exits 0.
    let more: Vec<Vec<u8>> = (0..100)
        .map(|i| message(&format!("t{i}@example.com"), &ts(0), json!({})))
        .collect();
    world.publish(&more).await;
    let n = world.imports();
    wait_for(
        Duration::from_secs(30),
        "the next import in flight",
        || async { world.imports() > n },
    )
    .await;
    let pid = worker.id().unwrap();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .expect("exits within the shutdown deadline")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    // Drained: the in-flight import completed before exit; whatever was still waiting in the
    // batcher went back to the queue. Nothing is lost either way.
    let held = world.sim.contacts().len();
    let queued = world.queue_len().await as usize;
    assert!(held > 500, "the in-flight import finished before exit");
    assert_eq!(
        held + queued,
        600,
        "every message is in CC or back in the queue"
    );
    assert_eq!(world.dead_len().await, 0);
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_event_after_newer_keeps_its_other_fields() {
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let mut worker = world.spawn_worker();
    world
        .publish(&[message(
            "p@example.com",
            "2026-11-23T08:05:00Z",
            json!({"first_name": "Renamed"}),
        )])
        .await;
    wait_for(Duration::from_secs(30), "first", || async {
        world.sim.contact("p@example.com").is_some()
    })
    .await;
    world
        .publish(&[message(
            "p@example.com",
            "2026-11-23T08:00:00Z",
            json!({"first_name": "First", "last_name": "Kept"}),
        )])
        .await;
    wait_for(Duration::from_secs(30), "second", || async {
        world.sim.contact("p@example.com").unwrap().writes == 2
    })
    .await;
    let c = world.sim.contact("p@example.com").unwrap();
    assert_eq!(c.fields.get("first_name").unwrap(), "Renamed");
    assert_eq!(c.fields.get("last_name").unwrap(), "Kept");
    worker.kill().await.ok();
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_listed_and_replayed_after_the_cause_is_fixed() {
    let mut world = World::new(World::fast_sim()).await;
    world.set("CCSYNC_WORKER__CUSTOM_FIELDS_REFRESH_SECS", "0");
    world.seed_tokens("default").await;
    world
        .publish(&[message(
            "cf@example.com",
            &ts(0),
            json!({"custom_fields": {"vip": "yes"}}),
        )])
        .await;
    let mut worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(30),
        "dead-lettered: unknown custom field",
        || async { world.dead_len().await == 1 },
    )
    .await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
            .args(args)
            .envs(world.env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = run(&["dlq", "list"]);
    assert!(listed.contains("unknown_custom_field"), "{listed}");
    assert!(
        !listed.contains("cf@example.com"),
        "no email in the listing"
    );
    assert_eq!(world.dead_len().await, 1, "listing removes nothing");
    // The operator creates the field in CC, then replays.
    world.sim.create_custom_field("vip");
    let replayed = run(&["dlq", "replay"]);
    assert!(replayed.contains("moved 1"), "{replayed}");
    wait_for(
        Duration::from_secs(30),
        "synced after the replay",
        || async {
            world
                .sim
                .contact("cf@example.com")
                .is_some_and(|c| c.fields.get("cf:vip").map(String::as_str) == Some("yes"))
        },
    )
    .await;
    assert_eq!(world.dead_len().await, 0);
    worker.kill().await.ok();
    world.cleanup().await;
}

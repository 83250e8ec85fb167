//! Issue 15: consent in sync both ways. Workers run as separate processes against the real
//! RabbitMQ and Redis and the simulator.

mod common;

use std::time::Duration;

use ccsync::sim::SimContact;
use common::{World, message, store, wait_for};
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use uuid::Uuid;

/// A consent message (`contact.unsubscribe`, `.remove_lists`, `.delete`) body.
fn action(kind: &str, email: &str, occurred_at: &str, extra: Value) -> Vec<u8> {
    let mut v = json!({
        "type": kind, "version": 1, "id": Uuid::new_v4().to_string(),
        "occurred_at": occurred_at, "contact": {"email": email},
    });
    if let Value::Object(m) = extra {
        for (k, x) in m {
            if k == "list_ids" {
                v["contact"]["list_ids"] = x;
            } else {
                v[k] = x;
            }
        }
    }
    serde_json::to_vec(&v).unwrap()
}

fn at(minute: u32) -> String {
    format!("2026-11-23T10:{minute:02}:00Z")
}

/// Done when, first point: unsubscribes, list removals and deletes mixed with older and newer
/// upserts for the same emails, across two worker processes, end in the state the newest events
/// say, within one activity per batch plus the per-contact look-ups (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_consent_actions_and_upserts_across_two_replicas_end_in_the_newest_state() {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_WORKER__LINGER_MIN_MS", "400");
    world.set("CCSYNC_WORKER__LINGER_MAX_MS", "400");
    let (l0, l1) = (world.lists[0], world.lists[1]);
    let l2 = world.sim.create_list("Third");
    const N: usize = 10;
    let email = |p: &str, i: usize| format!("{p}{i}@example.com");
    // Phase 1: every contact exists on L0 and L1.
    let mut first = Vec::new();
    for p in ["u", "r", "d", "v"] {
        for i in 0..N {
            first.push(message(
                &email(p, i),
                &at(0),
                json!({"first_name": "v0", "last_name": "Keep", "list_ids": [l0, l1]}),
            ));
        }
    }
    let b_port = common::free_port();
    let a = world.spawn_worker();
    let b = world.spawn_worker_on(b_port);
    world.publish(&first).await;
    wait_for(Duration::from_secs(60), "phase 1 synced", || async {
        store(&world.sim).len() == 4 * N
    })
    .await;
    let before = world.sim.requests().len();
    // Phase 2, shuffled across both replicas:
    // u: explicit sign-up at t1 (older than the opt-out: never re-subscribes), unsubscribe t2,
    //    upsert t3 (newest first name);
    // r: upsert t1 re-adding L1 (older than the removal), remove L1 at t2, upsert t3 adding L2;
    // d: upsert t1, delete t2 (the contact ends deleted);
    // v: delete t2, upsert t3 (newer: the contact lives, with the t3 name).
    let mut events = Vec::new();
    for i in 0..N {
        let mut signup: Value = serde_json::from_slice(&message(
            &email("u", i),
            &at(1),
            json!({"first_name": "old"}),
        ))
        .unwrap();
        signup["consent"] = "explicit".into();
        events.push(serde_json::to_vec(&signup).unwrap());
        events.push(action(
            "contact.unsubscribe",
            &email("u", i),
            &at(2),
            json!({"reason": "bye"}),
        ));
        events.push(message(
            &email("u", i),
            &at(3),
            json!({"first_name": "new"}),
        ));
        events.push(message(&email("r", i), &at(1), json!({"list_ids": [l1]})));
        events.push(action(
            "contact.remove_lists",
            &email("r", i),
            &at(2),
            json!({"list_ids": [l1]}),
        ));
        events.push(message(&email("r", i), &at(3), json!({"list_ids": [l2]})));
        events.push(message(
            &email("d", i),
            &at(1),
            json!({"first_name": "old"}),
        ));
        events.push(action("contact.delete", &email("d", i), &at(2), json!({})));
        events.push(action("contact.delete", &email("v", i), &at(2), json!({})));
        events.push(message(
            &email("v", i),
            &at(3),
            json!({"first_name": "new"}),
        ));
    }
    events.shuffle(&mut rand::rng());
    world.publish(&events).await;
    let done = |c: &SimContact| -> bool {
        let e = c.email.as_str();
        let first = c.fields.get("first_name").map(String::as_str);
        match &e[..1] {
            "u" => c.permission_to_send == "unsubscribed" && first == Some("new"),
            "r" => {
                c.list_ids.iter().copied().collect::<Vec<_>>() == {
                    let mut v = vec![l0, l2];
                    v.sort();
                    v
                }
            }
            "d" => c.deleted_at.is_some(),
            _ => c.deleted_at.is_none() && first == Some("new"),
        }
    };
    wait_for(
        Duration::from_secs(90),
        "CC holds the newest state",
        || async {
            let s = store(&world.sim);
            s.len() == 4 * N && s.values().all(done)
        },
    )
    .await;
    // Every delivery settled (older ones may still be on their way after CC converged).
    let total = (first.len() + events.len()) as u64;
    wait_for(
        Duration::from_secs(60),
        "every delivery settled",
        || async { world.settled().await + world.settled_on(b_port).await == total },
    )
    .await;
    assert_eq!(world.dead_len().await, 0);
    let s = store(&world.sim);
    for c in s.values().filter(|c| c.email.starts_with('u')) {
        assert_eq!(c.opt_out_reason.as_deref(), Some("bye"));
        assert_eq!(c.opt_out_source.as_deref(), Some("Account"));
        // The PUT repeated what it read: nothing it did not mean to change was nulled.
        assert_eq!(c.fields.get("last_name").map(String::as_str), Some("Keep"));
    }
    // Requests of phase 2 (CC's log): one look-up per consent message at most, one PUT per
    // unsubscribe, activities batched (far fewer than messages), no sign-up (all too old).
    let log: Vec<_> = world.sim.requests().into_iter().skip(before).collect();
    let count = |m: &str, p: &str| {
        log.iter()
            .filter(|r| r.method == m && r.path.ends_with(p) && r.status.is_some_and(|s| s < 300))
            .count()
    };
    let lookups = count("GET", "/v3/contacts");
    let puts = log.iter().filter(|r| r.method == "PUT").count();
    let deletes = count("POST", "/activities/contact_delete");
    let removals = count("POST", "/activities/remove_list_memberships");
    let signups = count("POST", "/contacts/sign_up_form");
    eprintln!(
        "phase 2 requests: {} total, {lookups} look-ups, {puts} PUTs, {deletes} delete and {removals} removal activities, {} imports",
        log.len(),
        count("POST", "/activities/contacts_json_import")
    );
    assert!(
        lookups <= 4 * N,
        "{lookups} look-ups for {} consent messages",
        4 * N
    );
    assert_eq!(puts, N, "one PUT per unsubscribe");
    // A sign-up that reached CC before the unsubscribe did was right at the time (the
    // unsubscribe then opted the contact out: checked above); every other one was kept from
    // sign_up_form and counted.
    let mut prevented = 0.0;
    for port in [world.metrics_port, b_port] {
        let text = common::metrics_text(port).await.unwrap_or_default();
        prevented +=
            common::metric_value(&text, "ccsync_resubscribes_prevented_total").unwrap_or(0.0);
    }
    assert_eq!(
        signups + prevented as usize,
        N,
        "{signups} sign-ups, {prevented} prevented"
    );
    // Batched: fewer activities than messages (a contact busy in another replica's call waits
    // for the next round, so a batch may take a second activity).
    assert!(
        deletes < 2 * N,
        "{deletes} delete activities for {} deletes",
        2 * N
    );
    assert!(
        removals < N,
        "{removals} removal activities for {N} removals"
    );
    drop((a, b));
    world.cleanup().await;
}

fn signup(email: &str, occurred_at: &str, first_name: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&message(
        email,
        occurred_at,
        json!({"first_name": first_name}),
    ))
    .unwrap();
    v["consent"] = "explicit".into();
    serde_json::to_vec(&v).unwrap()
}

/// Done when, second point (the opt-out known from a `contact.unsubscribe`; the simulator-side
/// opt-out through the feed is not built yet): a replayed explicit sign-up from before the
/// opt-out does not re-subscribe (its fields still land), one from after does. And an
/// unsubscribe of a contact CC does not have writes nothing to CC and keeps an older upsert
/// from creating the contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_sign_up_older_than_the_opt_out_never_re_subscribes() {
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let worker = world.spawn_worker();
    world
        .publish(&[signup("p@example.com", &at(1), "first")])
        .await;
    wait_for(Duration::from_secs(30), "signed up", || async {
        world
            .sim
            .contact("p@example.com")
            .is_some_and(|c| c.permission_to_send == "explicit")
    })
    .await;
    world
        .publish(&[action(
            "contact.unsubscribe",
            "p@example.com",
            &at(5),
            json!({}),
        )])
        .await;
    wait_for(Duration::from_secs(30), "unsubscribed", || async {
        world
            .sim
            .contact("p@example.com")
            .is_some_and(|c| c.permission_to_send == "unsubscribed")
    })
    .await;
    // A dead letter from minute 3 replayed now: its name lands, the opt-out stays.
    world
        .publish(&[signup("p@example.com", &at(3), "replayed")])
        .await;
    wait_for(
        Duration::from_secs(30),
        "the replay's fields imported",
        || async {
            world
                .sim
                .contact("p@example.com")
                .is_some_and(|c| c.fields.get("first_name").map(String::as_str) == Some("replayed"))
        },
    )
    .await;
    let c = world.sim.contact("p@example.com").unwrap();
    assert_eq!(
        c.permission_to_send, "unsubscribed",
        "never a machine re-subscribe"
    );
    assert_eq!(
        world.metric("ccsync_resubscribes_prevented_total").await,
        Some(1.0)
    );
    // The person signs up again after the opt-out: that one re-subscribes.
    world
        .publish(&[signup("p@example.com", &at(7), "again")])
        .await;
    wait_for(
        Duration::from_secs(30),
        "re-subscribed by the newer sign-up",
        || async {
            world
                .sim
                .contact("p@example.com")
                .is_some_and(|c| c.permission_to_send == "explicit")
        },
    )
    .await;
    // CC never had q@: the unsubscribe writes nothing; an older upsert then never creates it,
    // a newer one does.
    let puts_before = world
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    world
        .publish(&[action(
            "contact.unsubscribe",
            "q@example.com",
            &at(5),
            json!({}),
        )])
        .await;
    wait_for(
        Duration::from_secs(30),
        "the unsubscribe settled",
        || async { world.settled().await == 5 },
    )
    .await;
    world
        .publish(&[message(
            "q@example.com",
            &at(4),
            json!({"first_name": "old"}),
        )])
        .await;
    wait_for(
        Duration::from_secs(30),
        "the older upsert settled",
        || async { world.settled().await == 6 },
    )
    .await;
    assert!(
        world.sim.contact("q@example.com").is_none(),
        "an older upsert never creates it"
    );
    world
        .publish(&[message(
            "q@example.com",
            &at(6),
            json!({"first_name": "new"}),
        )])
        .await;
    wait_for(
        Duration::from_secs(30),
        "the newer upsert creates it",
        || async { world.sim.contact("q@example.com").is_some() },
    )
    .await;
    assert_eq!(
        world
            .sim
            .requests()
            .iter()
            .filter(|r| r.method == "PUT")
            .count(),
        puts_before,
        "nothing was PUT for a contact CC did not have"
    );
    drop(worker);
    world.cleanup().await;
}

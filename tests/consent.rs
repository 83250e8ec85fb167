//! Issue 15: consent in sync both ways. Workers run as separate processes against the real
//! RabbitMQ and Redis and the simulator.

mod common;

use std::time::Duration;

use ccsync::queue::Fetched;
use ccsync::sim::SimContact;
use common::{World, action, message, store, wait_for};
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::process::Child;

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
/// opt-out through the feed: [`a_cc_side_opt_out_keeps_an_older_replayed_sign_up_from_re_subscribing`]): a replayed explicit sign-up from before the
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

// ---- The opt-out feed (issue 15, item 3) ----

/// The feed's side of a world: its own events exchange (parallel tests never see each other's
/// events), a durable queue bound to it before any worker starts, a poll every second.
async fn feed_world(world: &mut World) -> (String, String) {
    let exchange = format!("{}.events", world.queue);
    let queue = format!("{}.events.in", world.queue);
    world.set("CCSYNC_EVENTS_EXCHANGE", &exchange);
    world.set("CCSYNC_OPTOUTS__POLL_SECS", "1");
    world
        .broker
        .bind_events_queue(&queue, &exchange, "contact.unsubscribed")
        .await
        .unwrap();
    (exchange, queue)
}

async fn feed_cleanup(world: World, exchange: &str, queue: &str) {
    let _ = world.broker.delete_queue(queue).await;
    let _ = world.broker.delete_exchange(exchange).await;
    world.cleanup().await;
}

fn body(f: &Fetched) -> Value {
    serde_json::from_slice(&f.body).unwrap()
}

fn email_of(f: &Fetched) -> String {
    body(f)["contact"]["email"].as_str().unwrap().to_string()
}

/// Take the events waiting in `queue` into `got` until `cond` holds (every 100 ms, bounded).
async fn collect_until(
    world: &World,
    queue: &str,
    got: &mut Vec<Fetched>,
    what: &str,
    cond: impl Fn(&[Fetched]) -> bool,
) {
    let start = tokio::time::Instant::now();
    loop {
        while let Some(f) = world.broker.take(queue).await.unwrap() {
            got.push(f);
        }
        if cond(got) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for: {what} ({} events so far)",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn gauge(port: u16, series: &str) -> Option<f64> {
    common::metric_value(&common::metrics_text(port).await?, series)
}

/// The worker (of `workers`) that holds the feed lease, once exactly one does.
async fn leader(workers: &[(u16, Child)]) -> usize {
    let start = tokio::time::Instant::now();
    loop {
        let mut leaders = Vec::new();
        for (i, (p, _)) in workers.iter().enumerate() {
            if gauge(*p, "ccsync_optouts_leader").await == Some(1.0) {
                leaders.push(i);
            }
        }
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no single feed leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until a poll that *started* after now has completed on the worker on `port`: every
/// event seen so far then has its cursor stored.
async fn a_later_poll(port: u16) {
    let t = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    wait_for(Duration::from_secs(60), "a later complete poll", || async {
        gauge(port, "ccsync_optouts_last_poll_timestamp_seconds")
            .await
            .is_some_and(|v| v >= t + 1.0)
    })
    .await;
}

/// Done when, third point: contacts unsubscribed in the simulator (their email's link) appear
/// as `contact.unsubscribed` events on the exchange once each with two replicas and across a
/// graceful restart of the feed's holder; across a kill -9 of the holder, at least once (a
/// repeat carries the same id) and never a gap. One replica polls at a time (the requests are
/// counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_opt_outs_reach_the_events_exchange_once_each_across_a_kill_a_restart_and_two_replicas()
{
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let (exchange, queue) = feed_world(&mut world).await;
    const N: usize = 10;
    let email = |i: usize| format!("o{i}@example.com");
    let b_port = common::free_port();
    let mut workers = vec![
        (world.metrics_port, world.spawn_worker()),
        (b_port, world.spawn_worker_on(b_port)),
    ];
    let upserts: Vec<Vec<u8>> = (0..3 * N)
        .map(|i| message(&email(i), &at(0), json!({"first_name": "x"})))
        .collect();
    world.publish(&upserts).await;
    wait_for(Duration::from_secs(60), "contacts imported", || async {
        store(&world.sim).len() == 3 * N
    })
    .await;
    let first_request = world.sim.requests().len();
    let unsubscribe = |round: usize| {
        for i in round * N..(round + 1) * N {
            world
                .sim
                .unsubscribe_by_link(&email(i), Some(&format!("round {round}")))
                .expect("the contact exists");
        }
    };
    let has_round = |round: usize| {
        move |got: &[Fetched]| {
            let seen: std::collections::HashSet<String> = got.iter().map(email_of).collect();
            (round * N..(round + 1) * N).all(|i| seen.contains(&email(i)))
        }
    };
    let mut got = Vec::new();

    // Round 0: two replicas, one polls.
    unsubscribe(0);
    collect_until(&world, &queue, &mut got, "round 0", has_round(0)).await;
    let holder = leader(&workers).await;
    a_later_poll(workers[holder].0).await;

    // Round 1: the holder is killed (-9) right after the opt-outs, maybe in the middle of its
    // poll; the other replica takes over once the lease runs out, and a new replica starts.
    unsubscribe(1);
    let (_, mut killed) = workers.remove(holder);
    killed.kill().await.unwrap();
    let c_port = common::free_port();
    workers.push((c_port, world.spawn_worker_on(c_port)));
    collect_until(
        &world,
        &queue,
        &mut got,
        "round 1 after the kill",
        has_round(1),
    )
    .await;
    let holder = leader(&workers).await;
    a_later_poll(workers[holder].0).await;

    // Round 2: the holder is stopped gracefully (SIGTERM) right after the opt-outs.
    unsubscribe(2);
    let (_, stopped) = workers.remove(holder);
    let status = world.terminate(stopped).await;
    assert!(status.success(), "graceful stop: {status:?}");
    collect_until(
        &world,
        &queue,
        &mut got,
        "round 2 after the restart",
        has_round(2),
    )
    .await;
    let holder = leader(&workers).await;
    // Quiet: two more complete polls publish nothing (no endless repeat at the cursor).
    a_later_poll(workers[holder].0).await;
    a_later_poll(workers[holder].0).await;
    collect_until(&world, &queue, &mut got, "the rest", |_| true).await;

    let mut by_email: std::collections::BTreeMap<String, Vec<&Fetched>> = Default::default();
    for f in &got {
        by_email.entry(email_of(f)).or_default().push(f);
    }
    let expected: Vec<String> = (0..3 * N).map(email).collect();
    assert_eq!(
        by_email.keys().cloned().collect::<Vec<_>>(),
        {
            let mut e = expected.clone();
            e.sort();
            e
        },
        "every opt-out, nothing else"
    );
    let sim = store(&world.sim);
    let mut repeats = 0;
    for (i, e) in expected.iter().enumerate() {
        let events = &by_email[e];
        let round = i / N;
        if round == 1 {
            repeats += events.len() - 1;
        } else {
            assert_eq!(events.len(), 1, "{e} (round {round}) published once");
        }
        let c = &sim[e];
        for f in events {
            let v = body(f);
            assert_eq!(v["type"], "contact.unsubscribed");
            assert_eq!(v["version"], 1);
            assert_eq!(v["account"], "default");
            assert_eq!(v["source"], "constant_contact");
            assert_eq!(v["opt_out_source"], "Contact");
            assert_eq!(v["reason"], format!("round {round}"));
            let at = OffsetDateTime::parse(v["occurred_at"].as_str().unwrap(), &Rfc3339).unwrap();
            assert_eq!(Some(at), c.opt_out_date, "CC's opt-out time");
            assert_eq!(
                f.message_id.as_deref(),
                v["id"].as_str(),
                "the AMQP message id"
            );
            assert!(f.persistent);
            assert_eq!(
                v["id"],
                body(events[0])["id"],
                "a repeat carries the same id"
            );
        }
    }
    // One replica polls at a time: feed requests come about a poll interval (1 s) apart, not
    // twice as often. The mean gap is robust to a late request (it shortens one gap and
    // lengthens the one before); gaps over 5 s are the lease running out after the kill.
    let feed: Vec<u64> = world
        .sim
        .requests()
        .into_iter()
        .skip(first_request)
        .filter(|r| r.method == "GET" && r.path.ends_with("/v3/contacts"))
        .map(|r| r.real_ms)
        .collect();
    let gaps: Vec<u64> = feed
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g < 5_000)
        .collect();
    let mean = gaps.iter().sum::<u64>() as f64 / gaps.len().max(1) as f64;
    eprintln!(
        "{} events for {} opt-outs ({repeats} repeats after the kill); {} feed requests, mean gap {mean:.0} ms",
        got.len(),
        3 * N,
        feed.len()
    );
    assert!(gaps.len() >= 4, "too few polls to judge: {feed:?}");
    assert!(
        mean >= 750.0,
        "feed requests {mean:.0} ms apart on average with a 1 s interval: more than one replica polled"
    );
    for (_, w) in workers {
        drop(w);
    }
    feed_cleanup(world, &exchange, &queue).await;
}

/// Done when, second point with CC's own opt-out: a contact unsubscribes in the simulator (the
/// link in an email); the feed publishes it and records it, so a replayed explicit sign-up from
/// before that time does not re-subscribe them (its fields still land), and one from after does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cc_side_opt_out_keeps_an_older_replayed_sign_up_from_re_subscribing() {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let (exchange, queue) = feed_world(&mut world).await;
    let worker = world.spawn_worker();
    let rfc = |t: OffsetDateTime| t.format(&Rfc3339).unwrap();
    let p = "p@example.com";
    let start = world.sim.now();
    world
        .publish(&[signup(p, &rfc(start - Duration::from_secs(600)), "first")])
        .await;
    wait_for(Duration::from_secs(30), "signed up", || async {
        world
            .sim
            .contact(p)
            .is_some_and(|c| c.permission_to_send == "explicit")
    })
    .await;
    let out_at = world
        .sim
        .unsubscribe_by_link(p, Some("too many emails"))
        .unwrap()
        .opt_out_date
        .unwrap();
    // The feed publishes the opt-out (after recording it in the ledger).
    let mut got = Vec::new();
    collect_until(&world, &queue, &mut got, "the opt-out event", |g| {
        !g.is_empty()
    })
    .await;
    assert_eq!(body(&got[0])["reason"], "too many emails");
    // A sign-up from a minute before the opt-out, replayed now: fields yes, consent no.
    world
        .publish(&[signup(
            p,
            &rfc(out_at - Duration::from_secs(60)),
            "replayed",
        )])
        .await;
    wait_for(
        Duration::from_secs(30),
        "the replay's fields imported",
        || async {
            world
                .sim
                .contact(p)
                .is_some_and(|c| c.fields.get("first_name").map(String::as_str) == Some("replayed"))
        },
    )
    .await;
    assert_eq!(
        world.sim.contact(p).unwrap().permission_to_send,
        "unsubscribed",
        "never a machine re-subscribe"
    );
    assert_eq!(
        world.metric("ccsync_resubscribes_prevented_total").await,
        Some(1.0)
    );
    assert_eq!(
        world
            .sim
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/sign_up_form"))
            .count(),
        1,
        "only the first sign-up went through sign_up_form"
    );
    // The person signs up again after opting out: that one re-subscribes.
    world
        .publish(&[signup(p, &rfc(out_at + Duration::from_secs(1)), "again")])
        .await;
    wait_for(
        Duration::from_secs(30),
        "re-subscribed by the newer sign-up",
        || async {
            world
                .sim
                .contact(p)
                .is_some_and(|c| c.permission_to_send == "explicit")
        },
    )
    .await;
    assert_eq!(
        world.metric("ccsync_optouts_published_total").await,
        Some(1.0)
    );
    drop(worker);
    feed_cleanup(world, &exchange, &queue).await;
}

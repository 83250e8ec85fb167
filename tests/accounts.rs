//! Issue 13: many CC accounts on one API key. A message for an account nobody authorized is
//! dead-lettered `unknown_account` without stopping anyone; an account whose connection dies
//! mid-run parks only its own messages while the others finish, and they sync by themselves
//! after `ccsync auth login` for it.

mod common;

use std::time::Duration;

use ccsync::sim::SimConfig;
use common::{World, message, store, store_of, wait_for};
use serde_json::{Value, json};

fn for_account(account: &str, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut v: Value = serde_json::from_slice(&message(
                &format!("{prefix}{i}@example.com"),
                "2026-11-23T10:00:00Z",
                json!({"first_name": account}),
            ))
            .unwrap();
            v["account"] = json!(account);
            serde_json::to_vec(&v).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_an_account_nobody_authorized_are_dead_lettered_and_stop_nobody() {
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let mut bodies = for_account("default", "ok", 1000);
    // Interleaved, as an upstream typo would send them.
    for (i, b) in for_account("nosuch-account", "typo", 20)
        .into_iter()
        .enumerate()
    {
        bodies.insert(i * 50, b);
    }
    world.publish(&bodies).await;
    let worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(60),
        "valid ones synced, unknown ones dead-lettered",
        || async { store(&world.sim).len() == 1000 && world.dead_len().await == 20 },
    )
    .await;
    // Nobody paused for it.
    assert_eq!(
        world.metric("ccsync_paused{reason=\"auth\"}").await,
        Some(0.0)
    );
    assert!(world.terminate(worker).await.success());
    for d in world.dead_letters().await {
        assert_eq!(d.reason.as_deref(), Some("unknown_account"));
        assert!(
            d.detail
                .unwrap()
                .contains("ccsync auth login --account nosuch-account")
        );
    }
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_revoked_mid_run_parks_only_its_messages_and_they_sync_after_login() {
    let mut world = World::new(World::fast_sim()).await;
    // Each account has its own lists (its own default list) and its own contacts in CC.
    let acme_lists = world.lists_for("acme");
    let beta_lists = world.lists_for("beta");
    for a in ["default", "acme", "beta"] {
        world.seed_tokens(a).await;
    }
    let total = |w: &World| {
        store(&w.sim).len() + store_of(&w.sim, "acme").len() + store_of(&w.sim, "beta").len()
    };
    let port_b = common::free_port();
    let a = world.spawn_worker();
    let b = world.spawn_worker_on(port_b);
    world.publish(&for_account("acme", "early", 10)).await;
    wait_for(Duration::from_secs(30), "acme works at first", || async {
        store_of(&world.sim, "acme").len() == 10
    })
    .await;
    // acme's connection dies (logged out: a tombstone replaces its token set).
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
        .args(["auth", "logout", "--account", "acme"])
        .envs(world.env())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both replicas notice (within a second: they watch the record) before the messages come;
    // a batch already holding a token when the connection dies still lands (CC took it).
    for port in [world.metrics_port, port_b] {
        wait_for(
            Duration::from_secs(30),
            "replica sees acme dead",
            || async {
                let text = common::metrics_text(port).await.unwrap_or_default();
                common::metric_value(&text, "ccsync_auth_state{account=\"acme\"}") == Some(0.0)
            },
        )
        .await;
    }
    let mut bodies = Vec::new();
    for i in 0..300 {
        let acct = ["default", "acme", "beta"][i % 3].to_string();
        let prefix = format!("{acct}-");
        bodies.extend(for_account(&acct, &prefix, 1).into_iter().map(|b| {
            // Distinct emails per message.
            let mut v: Value = serde_json::from_slice(&b).unwrap();
            v["contact"]["email"] = json!(format!("{prefix}{i}@example.com"));
            serde_json::to_vec(&v).unwrap()
        }));
    }
    world.publish(&bodies).await;
    // The other two accounts finish while acme's 100 wait in its parking queue.
    wait_for(
        Duration::from_secs(60),
        "default and beta synced, acme parked",
        || async {
            let (n, p) = (total(&world), world.parked_len("acme").await);
            n == 10 + 200 && p == 100
        },
    )
    .await;
    assert_eq!(world.dead_len().await, 0);
    // A login for acme: its messages come back and sync by themselves.
    world.seed_tokens("acme").await;
    wait_for(
        Duration::from_secs(90),
        "acme's messages synced",
        || async { store_of(&world.sim, "acme").len() == 10 + 100 },
    )
    .await;
    // Each account's contacts landed in its own store only, on its own default list.
    for (account, lists) in [("acme", &acme_lists), ("beta", &beta_lists)] {
        let held = store_of(&world.sim, account);
        assert!(
            held.keys()
                .all(|e| e.starts_with(account) || e.starts_with("early"))
        );
        assert!(held.values().all(|c| c.list_ids.contains(&lists[0])));
    }
    assert_eq!(store(&world.sim).len(), 100);
    assert!(store(&world.sim).keys().all(|e| e.starts_with("default-")));
    wait_for(Duration::from_secs(30), "parking queue drained", || async {
        world.parked_len("acme").await == 0
    })
    .await;
    assert!(world.terminate(a).await.success());
    assert!(world.terminate(b).await.success());
    assert_eq!(world.dead_len().await, 0);
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

/// `ccsync auth status` without `--account` lists every account; `--json` is for scripts, and the
/// exit code says whether any account needs a login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_status_lists_every_account_as_json() {
    let world = World::new(World::fast_sim()).await;
    for a in ["default", "acme"] {
        world.seed_tokens(a).await;
    }
    let run = |args: &'static [&'static str]| {
        let env = world.env();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
                .args(args)
                .envs(env)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(&["auth", "status", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "default"]);
    for a in v.as_array().unwrap() {
        assert_eq!(a["state"], "live");
        assert_eq!(a["needs_login"], false);
        assert!(a["days_to_idle_expiry"].as_i64().unwrap() >= 179);
    }
    // One account logged out: listed as dead, and the command exits non-zero.
    let out = run(&["auth", "logout", "--account", "acme"]).await;
    assert!(out.status.success());
    let out = run(&["auth", "status", "--json"]).await;
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["account"], "acme");
    assert_eq!(v[0]["state"], "dead");
    assert_eq!(v[0]["needs_login"], true);
    let text = run(&["auth", "status"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("acme") && l.contains("ccsync auth login --account acme"))
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("default") && l.contains("live"))
    );
    world.cleanup().await;
}

/// Issue 13: one account's backlog of 50,000 and another account's trickle share the key. Every
/// trickle contact waits at most its linger's worth of the backlog's requests (counted in what
/// CC saw, per account), not behind the backlog's imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_one_account_does_not_hold_up_anothers_trickle() {
    let mut world = World::new(SimConfig {
        processing_per_1000_rows: Duration::from_millis(1000),
        ..World::fast_sim()
    })
    .await;
    world.lists_for("acme");
    world.lists_for("beta");
    for a in ["default", "acme", "beta"] {
        world.seed_tokens(a).await;
    }
    // Imports of 1,000 contacts: the backlog is 50 imports and their polls, a minute of the
    // key's 4 requests/s.
    world.set("CCSYNC_WORKER__BATCH_MAX_CONTACTS", "1000");
    world.publish(&for_account("acme", "backlog", 50_000)).await;
    let worker = world.spawn_worker();
    // The worker has read the whole backlog (its byte budget holds 50,000 such messages) and
    // is working through it: the trickle's messages are next in the queue. (A backlog deeper
    // than a replica holds still delays what is queued behind it until the replica has read
    // past it; see docs/operations.md "Many accounts".)
    wait_for(
        Duration::from_secs(120),
        "the backlog is read and under way",
        || async {
            // Acked ones leave `held` before they count as synced: the sum reaches 50,000 only
            // once every message has been read.
            let held = world.metric("ccsync_held_messages").await.unwrap_or(0.0);
            let synced = world
                .metric("ccsync_messages_total{outcome=\"synced\"}")
                .await
                .unwrap_or(0.0);
            synced >= 2_000.0 && held + synced == 50_000.0
        },
    )
    .await;
    let account_of = |r: &ccsync::sim::RequestRecord| r.account.clone().unwrap_or_default();
    for i in 0..3 {
        let before = world.sim.requests().len();
        world
            .publish(&for_account("beta", &format!("trickle{i}-"), 1))
            .await;
        wait_for(
            Duration::from_secs(60),
            "the trickle contact synced",
            || async { store_of(&world.sim, "beta").len() == i + 1 },
        )
        .await;
        assert!(
            store_of(&world.sim, "acme").len() < 50_000,
            "the backlog must still be running for the measure to mean anything"
        );
        let log = world.sim.requests();
        let import = log[before..]
            .iter()
            .position(|r| account_of(r) == "beta" && r.path.ends_with("contacts_json_import"))
            .expect("beta's contact came through an import");
        let backlog_requests = log[before..before + import]
            .iter()
            .filter(|r| account_of(r) == "acme")
            .count();
        // The linger (2 s) at 4 requests/s, plus the turn and the slots in progress: without
        // fair shares the trickle waited behind the backlog's ready imports (dozens of
        // requests each time).
        assert!(
            backlog_requests <= 14,
            "trickle {i} waited behind {backlog_requests} backlog requests"
        );
    }
    // Nothing lost, and the requests per account are exported.
    wait_for(Duration::from_secs(300), "the backlog synced", || async {
        store_of(&world.sim, "acme").len() == 50_000
    })
    .await;
    let beta = world
        .metric("ccsync_account_requests_total{account=\"beta\"}")
        .await
        .unwrap_or(0.0);
    let acme = world
        .metric("ccsync_account_requests_total{account=\"acme\"}")
        .await
        .unwrap_or(0.0);
    assert!(beta >= 3.0 && acme > beta, "acme {acme}, beta {beta}");
    assert!(world.terminate(worker).await.success());
    assert_eq!(world.dead_len().await, 0);
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

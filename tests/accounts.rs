//! Issue 13: many CC accounts on one API key. A message for an account nobody authorized is
//! dead-lettered `unknown_account` without stopping anyone; an account whose connection dies
//! mid-run parks only its own messages while the others finish, and they sync by themselves
//! after `ccsync auth login` for it. Issue 14: a customer connects a new account through a
//! connect link (`ccsync auth invite`, served by `ccsync ingest`), and a worker already running
//! syncs its messages at once; used, tampered, expired and denied links store nothing.

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
        processing_per_1000_rows: Duration::from_millis(2000),
        ..World::fast_sim()
    })
    .await;
    world.lists_for("acme");
    world.lists_for("beta");
    for a in ["default", "acme", "beta"] {
        world.seed_tokens(a).await;
    }
    // Imports of 2,000 contacts: the backlog is 25 imports and their polls; all but the 4 in
    // flight wait in the worker as ready batches, ahead of anything that arrives later.
    world.set("CCSYNC_WORKER__BATCH_MAX_CONTACTS", "2000");
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

// ---------------------------------------------------------------------------------------------
// Connect links (issue 14): `ccsync auth invite` prints a link, `ccsync ingest` serves it, the
// test's HTTP client is the customer's browser (signed in to the simulated CC as the account).

const APP_SECRET: &str = "s3cret-app-secret";
const INVITE_SECRET: &str = "invite-secret-for-the-tests-0123456789";

/// A world whose CC app has the ingest's callback registered (and a client secret, long-lived
/// refresh tokens), with connect links configured; returns it and the ingest port.
async fn connect_world() -> (World, u16) {
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let cfg = ccsync::sim::SimConfig {
        redirect_uris: vec![format!("{public}/oauth/callback")],
        client_secret: Some(APP_SECRET.into()),
        refresh_mode: ccsync::sim::RefreshMode::LongLived,
        ..World::fast_sim()
    };
    let mut world = World::new(cfg).await;
    world.set("CCSYNC_CLIENT_SECRET", APP_SECRET);
    world.set("CCSYNC_AUTH__INVITE_SECRET", INVITE_SECRET);
    world.set("CCSYNC_INGEST__PUBLIC_URL", &public);
    world.set("CCSYNC_INGEST__ADDR", &format!("127.0.0.1:{port}"));
    (world, port)
}

/// `ccsync ingest` as its own process, its log captured; returns once it answers.
async fn start_ingest(world: &World, port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
        .arg("ingest")
        .envs(world.env())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ingest starts");
    wait_for(Duration::from_secs(20), "ingest answers", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    child
}

/// SIGTERM ingest; its log.
async fn stop_ingest(child: tokio::process::Child) -> String {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("ingest exits on SIGTERM")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

async fn ccsync(env: Vec<(String, String)>, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .await
        .unwrap()
}

/// `ccsync auth invite ARGS`: the link it printed, and everything it printed.
async fn invite(world: &World, args: &[&str]) -> (String, String) {
    let mut all = vec!["auth", "invite"];
    all.extend_from_slice(args);
    let out = ccsync(world.env(), &all).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = text
        .lines()
        .find(|l| l.starts_with("http") && l.contains("/connect/"))
        .unwrap_or_else(|| panic!("no link printed:\n{text}"))
        .trim()
        .to_string();
    (link, text)
}

/// `ccsync auth status --account A --json`.
async fn status_json(world: &World, account: &str) -> Value {
    let out = ccsync(
        world.env(),
        &["auth", "status", "--account", account, "--json"],
    )
    .await;
    serde_json::from_slice(&out.stdout).unwrap()
}

fn code_exchanges(world: &World) -> usize {
    world
        .sim
        .requests()
        .iter()
        .filter(|r| r.grant_type.as_deref() == Some("authorization_code"))
        .count()
}

fn newco_message(email: &str, list: uuid::Uuid) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&message(
        email,
        "2026-11-23T10:00:00Z",
        json!({"first_name": "New", "list_ids": [list.to_string()]}),
    ))
    .unwrap();
    v["account"] = json!("newco");
    serde_json::to_vec(&v).unwrap()
}

async fn ingest_metric(port: u16, series: &str) -> Option<f64> {
    common::metric_value(&common::metrics_text(port).await?, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_link_connects_an_account_that_a_running_worker_syncs_at_once() {
    let (world, port) = connect_world().await;
    // newco is a new customer: its own list in CC, no configuration in ccsync.
    let newco_list = world.sim.create_list_for("newco", "Customers");
    world.seed_tokens("default").await;
    let worker = world.spawn_worker();
    let ingest = start_ingest(&world, port).await;
    // Before any approval newco is an account nobody authorized: its message is dead-lettered.
    world
        .publish(&[newco_message("before@example.com", newco_list)])
        .await;
    wait_for(
        Duration::from_secs(60),
        "unknown account dead-lettered",
        || async { world.dead_len().await == 1 },
    )
    .await;

    // The operator makes a link; the customer's browser, signed in to CC as newco, opens it and
    // follows every redirect: ingest → CC's authorize page (approves) → ingest's callback.
    let (link, printed) = invite(&world, &["--account", "newco"]).await;
    assert!(link.starts_with(&format!("http://127.0.0.1:{port}/connect/")));
    assert!(printed.contains("single use"), "{printed}");
    assert!(
        printed.contains(&format!("http://127.0.0.1:{port}/oauth/callback")),
        "names the redirect URI to register: {printed}"
    );
    world.sim.sign_in("newco");
    let page = reqwest::get(&link).await.unwrap();
    let landed = page.url().clone();
    assert_eq!(landed.path(), "/oauth/callback");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("is connected"));
    assert_eq!(code_exchanges(&world), 1);
    // Stored as `auth login --flow code` stores it: flow, and the mode one refresh told.
    let st = status_json(&world, "newco").await;
    assert_eq!(st["state"], "live", "{st}");
    assert_eq!(st["login_flow"], "code", "{st}");
    assert_eq!(st["refresh_token_mode"], "long-lived", "{st}");
    let generation = st["generation"].as_u64().unwrap();

    // The worker, started before the link existed, follows newco within seconds, no restart...
    wait_for(
        Duration::from_secs(10),
        "the worker follows newco",
        || async { world.metric("ccsync_auth_state{account=\"newco\"}").await == Some(1.0) },
    )
    .await;
    // ...and a message published right after lands in newco's own CC account.
    world
        .publish(&[newco_message("after@example.com", newco_list)])
        .await;
    wait_for(
        Duration::from_secs(60),
        "newco's message synced",
        || async { store_of(&world.sim, "newco").contains_key("after@example.com") },
    )
    .await;
    assert_eq!(world.dead_len().await, 1, "only the message from before");

    // A second use of the link: refused before CC is asked.
    let again = reqwest::get(&link).await.unwrap();
    assert_eq!(again.status(), 410);
    assert!(again.text().await.unwrap().contains("already used"));
    // CC's redirect replayed (same code, same state): refused as used, the code not sent again.
    let replay = reqwest::get(landed.clone()).await.unwrap();
    assert_eq!(replay.status(), 410);
    assert_eq!(code_exchanges(&world), 1);
    // A tampered link (one character of its signature changed).
    let mut bytes = link.clone().into_bytes();
    let i = bytes.len() - 3;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = reqwest::get(String::from_utf8(bytes).unwrap())
        .await
        .unwrap();
    assert_eq!(tampered.status(), 403);
    assert!(tampered.text().await.unwrap().contains("not valid"));
    // A callback whose state ingest never signed.
    let forged = reqwest::get(format!(
        "http://127.0.0.1:{port}/oauth/callback?code=abc&state=forged"
    ))
    .await
    .unwrap();
    assert_eq!(forged.status(), 400);
    assert_eq!(code_exchanges(&world), 1);
    assert_eq!(
        status_json(&world, "newco").await["generation"].as_u64(),
        Some(generation),
        "nothing stored by the refused requests"
    );
    // Every outcome counted.
    for (outcome, n) in [
        ("opened", 1.0),
        ("connected", 1.0),
        ("used", 2.0),
        ("tampered", 1.0),
        ("bad_state", 1.0),
    ] {
        let series = format!("ccsync_ingest_connect_total{{outcome=\"{outcome}\"}}");
        assert_eq!(ingest_metric(port, &series).await, Some(n), "{series}");
    }
    assert!(world.terminate(worker).await.success());
    // Logged, and never the link, the code, the state or a token.
    let log = stop_ingest(ingest).await;
    assert!(log.contains("connect link: token set stored"), "{log}");
    let store = ccsync::auth::store::Store::from_settings(&world.settings()).unwrap();
    let ccsync::auth::store::Stored::Live(set) = store.load("newco").await.unwrap() else {
        panic!("no set")
    };
    let q: std::collections::HashMap<String, String> = landed.query_pairs().into_owned().collect();
    let token = link.rsplit('/').next().unwrap();
    for secret in [
        token,
        q["code"].as_str(),
        q["state"].as_str(),
        set.access.expose(),
        set.refresh.expose(),
        INVITE_SECRET,
        APP_SECRET,
    ] {
        assert!(!log.contains(secret), "the log holds a secret:\n{log}");
    }
    let _ = store.wipe("newco").await;
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_links_refuse_when_expired_or_denied_and_config_check_names_the_redirect_uri() {
    let (world, port) = connect_world().await;
    let ingest = start_ingest(&world, port).await;
    let store = ccsync::auth::store::Store::from_settings(&world.settings()).unwrap();
    let absent = |account: &'static str| {
        let store = store.clone();
        async move {
            matches!(
                store.load(account).await.unwrap(),
                ccsync::auth::store::Stored::Absent
            )
        }
    };

    // An expired link: refused, nothing exchanged or stored.
    world.sim.sign_in("late");
    let (link, printed) = invite(&world, &["--account", "late", "--ttl", "1s"]).await;
    let expires = printed
        .split("expires ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap();
    let expires =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the link's expiry passes",
        || async { time::OffsetDateTime::now_utc() > expires },
    )
    .await;
    let page = reqwest::get(&link).await.unwrap();
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("has expired"));
    assert_eq!(code_exchanges(&world), 0);
    assert!(absent("late").await);

    // The customer denies at CC: a clear page, nothing stored, and the link still works.
    let (link, _) = invite(&world, &["--account", "shy"]).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let hop = |r: reqwest::Response| {
        assert_eq!(r.status(), 302, "{}", r.url());
        url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap()
    };
    let authorize = hop(browser.get(&link).send().await.unwrap());
    let q: std::collections::HashMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    assert!(authorize.as_str().starts_with(&world.sim.auth_base_url()));
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["scope"], "contact_data offline_access");
    assert_eq!(
        q["redirect_uri"],
        format!("http://127.0.0.1:{port}/oauth/callback")
    );
    assert_eq!(q["client_id"], common::CLIENT_ID);
    assert!(
        !q.contains_key("code_challenge"),
        "the code flow with the secret"
    );
    let mut deny = authorize.clone();
    deny.query_pairs_mut().append_pair("decision", "deny");
    let back = hop(browser.get(deny).send().await.unwrap());
    assert!(back.as_str().contains("error=access_denied"), "{back}");
    let page = browser.get(back).send().await.unwrap();
    assert_eq!(page.status(), 403);
    assert!(page.text().await.unwrap().contains("did not approve"));
    assert!(absent("shy").await);
    world.sim.sign_in("shy");
    let page = reqwest::get(&link).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(!absent("shy").await, "connected on the second try");
    assert_eq!(code_exchanges(&world), 1);
    for (outcome, n) in [("expired", 1.0), ("denied", 1.0), ("connected", 1.0)] {
        let series = format!("ccsync_ingest_connect_total{{outcome=\"{outcome}\"}}");
        assert_eq!(ingest_metric(port, &series).await, Some(n), "{series}");
    }
    stop_ingest(ingest).await;

    // `config check` names the redirect URI to register, and warns when only half is set.
    let out = ccsync(world.env(), &["config", "check"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "register this redirect URI on the CC app: http://127.0.0.1:{port}/oauth/callback"
        )),
        "{text}"
    );
    assert!(!text.contains(INVITE_SECRET), "{text}");
    let half: Vec<(String, String)> = world
        .env()
        .into_iter()
        .filter(|(k, _)| k != "CCSYNC_INGEST__PUBLIC_URL")
        .collect();
    let out = ccsync(half.clone(), &["config", "check"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CCSYNC_AUTH__INVITE_SECRET is set but CCSYNC_INGEST__PUBLIC_URL is not"),
        "{text}"
    );
    // Connect links without the client secret: ingest refuses to start, naming the key.
    let no_secret: Vec<(String, String)> = world
        .env()
        .into_iter()
        .filter(|(k, _)| k != "CCSYNC_CLIENT_SECRET")
        .collect();
    let out = tokio::time::timeout(Duration::from_secs(30), ccsync(no_secret, &["ingest"]))
        .await
        .expect("ingest stops at once");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CCSYNC_CLIENT_SECRET is not set"), "{err}");
    // Without the public URL no link can be made, and the error says what to set.
    let out = ccsync(half, &["auth", "invite", "--account", "x"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CCSYNC_INGEST__PUBLIC_URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for a in ["late", "shy"] {
        let _ = store.wipe(a).await;
    }
    world.cleanup().await;
}

/// Issue 13: a replica restarted with no traffic at all keeps every stored account's refresh
/// token alive: it finds the accounts in Redis, not from use. The clocks move instead of
/// sleeping: 170 idle days, then 20 more, which would have killed tokens nobody refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_with_no_traffic_every_stored_account_is_kept_alive() {
    use ccsync::auth::store::{Store, Stored};
    const DAY: u64 = 86_400;
    let mut world = World::new(World::fast_sim()).await;
    let accounts = ["default", "acme", "beta"];
    let lists: Vec<_> = ["acme", "beta"].map(|a| world.lists_for(a)).to_vec();
    for a in accounts {
        world.seed_tokens(a).await;
    }
    let tokens = Store::from_settings(&world.settings()).unwrap();
    let generation = |s: Stored| match s {
        Stored::Live(t) => t.generation,
        other => panic!("expected a live token set, got {other:?}"),
    };
    let mut before = Vec::new();
    for a in accounts {
        before.push(generation(tokens.load(a).await.unwrap()));
    }
    // 170 days later the replica starts again; nobody publishes anything.
    world.sim.advance_clock(Duration::from_secs(170 * DAY));
    world.set(
        "CCSYNC_TESTING__CLOCK_OFFSET_SECS",
        &(170 * DAY).to_string(),
    );
    world.set("CCSYNC_AUTH__KEEPALIVE_SECS", &(30 * DAY).to_string());
    let worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(60),
        "every account's refresh token refreshed by the keep-alive",
        || async {
            for (a, g0) in accounts.iter().zip(&before) {
                match tokens.load(a).await {
                    Ok(Stored::Live(t)) if t.generation > *g0 => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
    assert!(world.terminate(worker).await.success());
    // 20 days more: 190 days after the login, 20 after the keep-alive. Each account's messages
    // still sync (their access tokens expired long ago: each needs its refresh token).
    world.sim.advance_clock(Duration::from_secs(20 * DAY));
    world.set(
        "CCSYNC_TESTING__CLOCK_OFFSET_SECS",
        &(190 * DAY).to_string(),
    );
    let worker = world.spawn_worker();
    for a in accounts {
        world
            .publish(&for_account(a, &format!("{a}-alive"), 5))
            .await;
    }
    wait_for(Duration::from_secs(60), "every account synced", || async {
        store(&world.sim).len() == 5
            && store_of(&world.sim, "acme").len() == 5
            && store_of(&world.sim, "beta").len() == 5
    })
    .await;
    assert!(
        store_of(&world.sim, "acme")
            .values()
            .all(|c| c.list_ids.contains(&lists[0][0]))
    );
    assert!(world.terminate(worker).await.success());
    assert_eq!(world.dead_len().await, 0);
    for a in ["acme", "beta"] {
        assert_eq!(world.parked_len(a).await, 0);
    }
    for a in accounts {
        let _ = tokens.wipe(a).await;
    }
    world.cleanup().await;
}

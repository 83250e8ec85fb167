//! Every Redis user on a Redis Cluster (`CCSYNC_REDIS__CLUSTER_NODES`): the three-master cluster
//! on 127.0.0.1:7001-7003 that `scripts/services.sh` starts. The refresh race and the shared
//! limit are the very tests that run against one server (`auth_support::refresh_race`,
//! `ratelimit_common::shared_limit`), parameterized by the Redis settings; the ledger and the
//! token-set listing check what a cluster changes: keys spread over masters, scripts whose keys
//! must share a slot, `SCAN` on every master.
//!
//! The tests take turns (one lock): the multi-process runs are timing-sensitive on two cores.

mod auth_support;
mod ratelimit_common;

use ccsync::config::Settings;
use ccsync::ledger::{Ledger, Verdict};

const NODES: &str = "redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003";
const CLUSTER: &[(&str, &str)] = &[("CCSYNC_REDIS__CLUSTER_NODES", NODES)];

static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_race_on_a_cluster_refreshes_once_per_expiry() {
    let _turn = TURNS.lock().await;
    auth_support::refresh_race(CLUSTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_limit_on_a_cluster_allows_no_second_above_four() {
    let _turn = TURNS.lock().await;
    ratelimit_common::shared_limit(CLUSTER).await;
}

fn cluster_settings(prefix: &str) -> Settings {
    Settings::from_pairs([
        ("CCSYNC_REDIS__CLUSTER_NODES", NODES),
        ("CCSYNC_REDIS__KEY_PREFIX", prefix),
    ])
    .unwrap()
}

/// How many keys under `prefix` each master holds (straight to each node, not through the
/// product's connector).
async fn keys_per_master(prefix: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for port in [7001, 7002, 7003] {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("cluster node answers (bash scripts/services.sh)");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut c)
            .await
            .unwrap();
        out.push(keys.len());
    }
    out
}

/// A claim of 1,200 emails spreads them over every master, runs each script on keys of one slot
/// (a cross-slot script would fail the claim), answers each email in its place, and `forget_all`
/// finds the keys on every master.
#[tokio::test]
async fn ledger_claims_spread_over_the_masters_and_keep_their_order() {
    let _turn = TURNS.lock().await;
    let prefix = format!("test-cl-{}", uuid::Uuid::new_v4().simple());
    let ledger = Ledger::connect(&cluster_settings(&prefix)).unwrap();
    let emails: Vec<String> = (0..1200).map(|i| format!("c{i}@example.com")).collect();
    let items: Vec<ccsync::ledger::Claim> = emails
        .iter()
        .map(|e| {
            (
                "default",
                e.as_str(),
                vec![("first_name".to_string(), 2_000)],
            )
        })
        .collect();
    let first = ledger.claim("imp1", &items).await.unwrap();
    assert!(first.iter().all(|v| *v == Verdict::Go { stale: vec![] }));
    let per_master = keys_per_master(&prefix).await;
    assert!(
        per_master.iter().all(|&n| n > 0),
        "ledger keys per master: {per_master:?}"
    );
    // In flight under imp1: every email is busy for imp2, whatever slot it lives in.
    let second = ledger.claim("imp2", &items).await.unwrap();
    assert!(second.iter().all(|v| *v == Verdict::Busy));
    // imp1 lets go of half of them: exactly those go for imp2, in their places.
    let half: Vec<(&str, &str)> = emails
        .iter()
        .step_by(2)
        .map(|e| ("default", e.as_str()))
        .collect();
    ledger.let_go("imp1", &half).await.unwrap();
    let older: Vec<ccsync::ledger::Claim> = emails
        .iter()
        .map(|e| {
            (
                "default",
                e.as_str(),
                vec![("first_name".to_string(), 1_000)],
            )
        })
        .collect();
    let third = ledger.claim("imp2", &older).await.unwrap();
    for (i, v) in third.iter().enumerate() {
        let want = if i % 2 == 0 {
            // Free now, but imp1's newer first_name stays: the older value is stale.
            Verdict::Go {
                stale: vec!["first_name".into()],
            }
        } else {
            Verdict::Busy
        };
        assert_eq!(v, &want, "email {i}");
    }
    // imp1 settles: one DEL per tag it used (on every master) frees the other half.
    let all: Vec<(&str, &str)> = emails.iter().map(|e| ("default", e.as_str())).collect();
    ledger.release("imp1", &all).await.unwrap();
    let fourth = ledger.claim("imp2", &older).await.unwrap();
    assert!(
        fourth.iter().all(|v| *v
            == Verdict::Go {
                stale: vec!["first_name".into()]
            }),
        "every email is imp2's now"
    );
    let gone = ledger.forget_all().await.unwrap();
    assert!(gone >= 1200, "forget_all removed {gone} keys");
    assert_eq!(keys_per_master(&prefix).await, vec![0, 0, 0]);
}

/// `config check` and the replicas list accounts with `SCAN`: on a cluster the sets of different
/// accounts lie on different masters, and every one is found.
#[tokio::test]
async fn token_sets_of_every_master_are_listed() {
    let _turn = TURNS.lock().await;
    let w = auth_support::World::start(ccsync::sim::SimConfig::default(), CLUSTER).await;
    let accounts: Vec<String> = (0..12).map(|i| format!("acct{i}")).collect();
    for a in &accounts {
        w.seed(a).await;
    }
    let per_master = keys_per_master(&w.prefix).await;
    assert!(
        per_master.iter().all(|&n| n > 0),
        "token sets per master: {per_master:?}"
    );
    assert_eq!(w.store().accounts().await.unwrap(), {
        let mut v = accounts.clone();
        v.sort();
        v
    });
    let names: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let prefix = w.prefix.clone();
    w.cleanup(&names).await;
    let r = ccsync::redis::Redis::from_settings(&cluster_settings(&prefix)).unwrap();
    r.unlink_matching(&format!("{prefix}:*")).await.unwrap();
}

//! Sentinel (`CCSYNC_REDIS__SENTINELS` + `CCSYNC_REDIS__SENTINEL_MASTER`) against the set that
//! `scripts/services.sh` starts: a master and its replica on 127.0.0.1:6391/6392 and one
//! sentinel on 127.0.0.1:26391 watching `ccsync-test`. Which of the two is the master depends on
//! earlier runs: the test asks the sentinel.

use crate::auth_support;

use std::time::Duration;

use auth_support::*;
use ccsync::auth::TokenProvider;
use ccsync::auth::store::Stored;
use ccsync::sim::SimConfig;
use tokio_util::sync::CancellationToken;

const SENTINEL: &str = "redis://127.0.0.1:26391";
const MASTER: &str = "ccsync-test";

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{url} answers (bash scripts/services.sh): {e}"))
}

/// The master's port as the sentinel names it now.
async fn master_port() -> u16 {
    let (_, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER)
        .query_async(&mut conn(SENTINEL).await)
        .await
        .unwrap();
    port
}

async fn role(port: u16) -> String {
    let r: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut conn(&format!("redis://127.0.0.1:{port}")).await)
        .await
        .unwrap();
    match r.first() {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("ROLE: {other:?}"),
    }
}

/// A failover whose new master lacks the token set (asynchronous replication: the set was written
/// after the last write the replica received) loses nothing: the provider keeps serving the set
/// from memory, its pool leaves the demoted master, and it writes the set back to the new master
/// without a refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_loses_no_token_set() {
    let cfg = SimConfig {
        token_ttl: Duration::from_secs(3600),
        per_second: 10_000,
        daily_quota: 1_000_000,
        ..Default::default()
    };
    let w = World::start(
        cfg,
        &[
            ("CCSYNC_REDIS__SENTINELS", SENTINEL),
            ("CCSYNC_REDIS__SENTINEL_MASTER", MASTER),
        ],
    )
    .await;
    let old = master_port().await;
    let (g0, _) = w.seed("default").await;
    // The set went to the master the sentinel names, not to the default Redis.
    let key = w.store().set_key("default");
    let on_old: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn(&format!("redis://127.0.0.1:{old}")).await)
        .await
        .unwrap();
    assert!(on_old, "the token set is on the master 127.0.0.1:{old}");
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    let t1 = p.access_token("default").await.unwrap();
    let stop = CancellationToken::new();
    let bg = p.spawn_background(stop.clone());

    // The replica must be in sync for Sentinel to promote it.
    let replica = if old == 6391 { 6392 } else { 6391 };
    wait_for(
        Duration::from_secs(30),
        "the replica is in sync",
        || async {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn(&format!("redis://127.0.0.1:{replica}")).await)
                .await
                .unwrap();
            info.contains("master_link_status:up")
        },
    )
    .await;
    let _: String = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(MASTER)
        .query_async(&mut conn(SENTINEL).await)
        .await
        .expect("SENTINEL FAILOVER");
    wait_for(
        Duration::from_secs(30),
        "Sentinel names the new master",
        || async { master_port().await == replica && role(replica).await == "master" },
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "the old master is a replica",
        || async { role(old).await == "slave" },
    )
    .await;
    // What asynchronous replication can lose in a failover: the set never reached the new master.
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn(&format!("redis://127.0.0.1:{replica}")).await)
        .await
        .unwrap();

    // The provider serves from memory meanwhile and writes the set back to the new master.
    assert_eq!(p.access_token("default").await.unwrap(), t1);
    let store = w.store();
    wait_for(
        Duration::from_secs(20),
        "the set is written back to the new master",
        || {
            let store = store.clone();
            async move {
                matches!(store.load("default").await, Ok(Stored::Live(s)) if s.generation == g0)
            }
        },
    )
    .await;
    let on_new: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn(&format!("redis://127.0.0.1:{replica}")).await)
        .await
        .unwrap();
    assert!(on_new, "the set is on the new master 127.0.0.1:{replica}");
    assert_eq!(w.refresh_requests().len(), 0, "no refresh was needed");
    assert_eq!(p.access_token("default").await.unwrap(), t1);
    stop.cancel();
    bg.await.unwrap();
    w.cleanup(&["default"]).await;
}

//! Three OS processes (`examples/ratelimit_hammer.rs`), each a replica with four tasks calling
//! `acquire(Import)` and then a real `GET /v3/contact_lists` on the simulator as fast as they can,
//! share one API key's budget through the real Redis. Asserted on the simulator's request log
//! (arrival times, as CC would count them): in no sliding 1-second window more than 4 requests,
//! fewer than 1% `throttled` 429s (in practice none), and the replicas together still use most of
//! the rate. The grant timestamps the processes write out are checked the same way.
//!
//! `CCSYNC_TEST_HAMMER_SECS` sets the run length (default 12 s, 3..=30 s).

mod ratelimit_common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ccsync::ratelimit::max_in_sliding_window;
use ccsync::sim::{Sim, SimConfig};
use ratelimit_common::*;

/// Build the example (a no-op when it is up to date) and return its path next to this test.
fn hammer_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--example", "ratelimit_hammer"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build --example ratelimit_hammer");
    assert!(status.success(), "building the hammer example failed");
    // target/debug/deps/<this test> → target/debug/examples/ratelimit_hammer
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    profile_dir.join("examples").join("ratelimit_hammer")
}

const CID: &str = "api-key-shared";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_four_per_second_as_the_simulator_counts() {
    let secs: u64 = std::env::var("CCSYNC_TEST_HAMMER_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
        .clamp(3, 30);
    let bin = tokio::task::spawn_blocking(hammer_binary).await.unwrap();
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let (access_token, _refresh) = sim.issue_tokens(CID, "default");
    let prefix = unique_prefix();
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();

    let mut children = Vec::new();
    for i in 0..3 {
        let out = dir.join(format!("grants-{i}.txt"));
        let child = tokio::process::Command::new(&bin)
            .args([CID, &(secs * 1000).to_string(), "4"])
            .arg(&out)
            .env("CCSYNC_REDIS_URL", REDIS_URL)
            .env("CCSYNC_REDIS__KEY_PREFIX", &prefix)
            .env("CCSYNC_RATELIMIT__PER_SECOND", "4")
            .env("HAMMER_API_BASE_URL", sim.api_base_url())
            .env("HAMMER_ACCESS_TOKEN", &access_token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the hammer");
        children.push((child, out));
    }
    let mut per_process = Vec::new();
    let mut grants = Vec::new();
    for (child, out) in children {
        let res = tokio::time::timeout(Duration::from_secs(secs + 45), child.wait_with_output())
            .await
            .expect("a hammer process did not finish in time")
            .unwrap();
        assert!(
            res.status.success(),
            "hammer failed: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        eprintln!(
            "hammer statuses: {}",
            String::from_utf8_lossy(&res.stdout).trim()
        );
        let g: Vec<Duration> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| Duration::from_nanos(l.parse::<u64>().unwrap()))
            .collect();
        per_process.push(g.len());
        grants.extend(g);
    }
    grants.sort();
    let _ = std::fs::remove_dir_all(&dir);
    cleanup(&prefix).await;

    // What CC would have seen: every API request of this key, by arrival.
    let log: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.client_id.as_deref() == Some(CID))
        .collect();
    sim.shutdown().await;
    let total = log.len();
    let throttled = log
        .iter()
        .filter(|r| r.error.as_deref() == Some("throttled"))
        .count();
    let ok = log.iter().filter(|r| r.status == Some(200)).count();
    let mut arrivals: Vec<Duration> = log
        .iter()
        .map(|r| Duration::from_millis(r.real_ms))
        .collect();
    arrivals.sort();
    let worst = max_in_sliding_window(&arrivals, Duration::from_secs(1));
    let span = (*arrivals.last().unwrap() - arrivals[0]).as_secs_f64();
    let rate = (total - 1) as f64 / span;
    let tightest = arrivals.windows(5).map(|w| w[4] - w[0]).min();
    eprintln!(
        "simulator saw {total} requests ({ok} ok, {throttled} throttled) in {span:.1} s \
         ({rate:.2}/s); per process {per_process:?}; worst window {worst}; tightest 5 {tightest:?}"
    );
    assert_eq!(
        total,
        grants.len(),
        "every grant became exactly one request"
    );
    assert!(
        worst <= 4,
        "the simulator saw {worst} requests in one sliding second"
    );
    assert!(
        (throttled as f64) < 0.01 * total as f64,
        "{throttled} of {total} requests were throttled"
    );
    assert_eq!(ok + throttled, total, "unexpected statuses in the log");
    // Shared, not split: together they use most of the 3.64/s the spacing allows, and no process
    // was starved (first come, first served: the split varies from run to run).
    assert!(rate >= 3.0, "only {rate:.2} requests/s over {span:.1} s");
    assert!(
        per_process.iter().all(|&n| n >= 2),
        "starved: {per_process:?}"
    );
    // The grants themselves (taken when acquire returned) obey the window as well.
    assert!(max_in_sliding_window(&grants, Duration::from_secs(1)) <= 4);
}

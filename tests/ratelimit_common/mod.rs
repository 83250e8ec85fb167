//! Shared helpers of the `ratelimit_*` integration tests: each test gets its own Redis key prefix
//! (so tests run in parallel against one real Redis) and cleans it up.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ccsync::config::Settings;
use ccsync::ratelimit::max_in_sliding_window;
use ccsync::sim::{Sim, SimConfig};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

pub fn unique_prefix() -> String {
    format!("test-rl-{}", uuid::Uuid::new_v4().simple())
}

/// Defaults plus the test's prefix and overrides (named as environment variables).
pub fn settings(prefix: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut pairs = vec![
        ("CCSYNC_REDIS_URL", REDIS_URL),
        ("CCSYNC_REDIS__KEY_PREFIX", prefix),
        // A loaded 2-core CI machine can keep Redis from answering within the production default
        // (500 ms), which turns into a fallback decision these tests do not expect. Tests about the
        // timeout itself override this (later pairs win).
        ("CCSYNC_RATELIMIT__REDIS_TIMEOUT_MS", "5000"),
    ];
    pairs.extend_from_slice(overrides);
    Settings::from_pairs(pairs).expect("test settings are valid")
}

/// Two limiters of one deployment (`client_id`) recording into one registry of their own, as one
/// worker's `/metrics` would show them: other tests of the binary report 429s at the same time.
pub async fn two_limiters(
    s: &Settings,
    client_id: &str,
) -> (
    &'static ccsync::telemetry::Metrics,
    std::sync::Arc<ccsync::ratelimit::SharedLimiter>,
    std::sync::Arc<ccsync::ratelimit::SharedLimiter>,
) {
    let m = ccsync::telemetry::Metrics::isolated();
    let connect = || ccsync::ratelimit::SharedLimiter::connect_with_metrics(s, client_id, m);
    (m, connect().await.unwrap(), connect().await.unwrap())
}

pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 (bash scripts/services.sh)")
}

/// The documented key layout (module docs of `ccsync::ratelimit`).
pub fn key(prefix: &str, client_id: &str, rest: &str) -> String {
    format!("{prefix}:rl:{{{client_id}}}:{rest}")
}

pub fn day_key(prefix: &str, client_id: &str) -> String {
    key(
        prefix,
        client_id,
        &format!("day:{}", ccsync::clock::utc_day(ccsync::clock::now_utc())),
    )
}

pub async fn pttl(key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut redis().await)
        .await
        .expect("PTTL")
}

pub async fn get_u64(key: &str) -> Option<u64> {
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut redis().await)
        .await
        .expect("GET")
}

/// Remove every key the test wrote on the Redis `redis_env` names (through the product's
/// connector, so a cluster is cleaned on every master), after checking that none landed on the
/// default server when `redis_env` names another.
pub async fn cleanup_on(prefix: &str, redis_env: &[(&str, &str)]) {
    if !redis_env.is_empty() {
        let default = ccsync::redis::Redis::from_settings(&settings(prefix, &[])).unwrap();
        let stray = default.keys_matching(&format!("{prefix}:*")).await.unwrap();
        assert!(stray.is_empty(), "keys on the default Redis: {stray:?}");
    }
    let r = ccsync::redis::Redis::from_settings(&settings(prefix, redis_env)).unwrap();
    let _ = r.unlink_matching(&format!("{prefix}:*")).await;
}

/// Remove every key the test wrote.
pub async fn cleanup(prefix: &str) {
    // SCAN, not KEYS: one KEYS over a Redis holding millions of keys (a developer's, after
    // benchmark runs) blocks it for seconds and times out every test running beside this one.
    let mut c = redis().await;
    let mut cursor = 0u64;
    loop {
        let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("UNLINK").arg(keys).query_async(&mut c).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Poll `cond` every 20 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    ccsync_kit::wait_until(within, Duration::from_millis(20), cond).await
}

/// Captures this thread's log lines (a `current_thread` test runtime runs everything on it).
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Install as this thread's subscriber until the guard drops.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || me.clone())
            .finish();
        tracing::subscriber::set_default(sub)
    }

    /// How many captured lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buf)
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// The `ratelimit_hammer` example binary, built first ([`ccsync_kit::example_bin`]).
fn hammer_binary() -> PathBuf {
    ccsync_kit::example_bin("ratelimit_hammer")
}

const CID: &str = "api-key-shared";

/// Three hammer processes share one key's 4/s through Redis: no sliding second above 4 as the
/// simulator counts. `redis_env` picks the Redis (`[]`: the default server), for the hammers and
/// the clean-up.
pub async fn shared_limit(redis_env: &[(&str, &str)]) {
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
            .envs(redis_env.iter().copied())
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
    cleanup_on(&prefix, redis_env).await;

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

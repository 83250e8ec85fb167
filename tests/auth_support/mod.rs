//! Shared helpers of the `auth_*` integration tests: a world per test (random Redis prefix, an
//! in-process simulator; its settings, token sets and waiting come from the kit, `ccsync-kit`),
//! test gates, the hammer process.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ccsync::auth::RefreshMode;
use ccsync::auth::store::Store;
use ccsync::auth::store::Stored;
use ccsync::config::Settings;
use ccsync::ratelimit::{CallKind, Gate, RateLimitError};
use ccsync::sim::{RefreshMode as SimMode, Sim, SimConfig};

#[allow(unused_imports)] // not every binary that includes this module waits
pub use ccsync_kit::wait_for;

pub const CLIENT_ID: &str = "ccsync-test-client";

/// A gate that lets every call through (for tests that are not about the token rate).
pub struct OpenGate;

#[async_trait::async_trait]
impl Gate for OpenGate {
    async fn acquire(&self, _kind: CallKind) -> Result<(), RateLimitError> {
        Ok(())
    }
    async fn report_429(&self, _kind: CallKind, _key: &str) {}
}

/// A per-process 1 request/s gate (the shape of the shared limiter, without Redis).
pub struct OnePerSecond(governor::DefaultDirectRateLimiter);

impl OnePerSecond {
    pub fn new() -> OnePerSecond {
        // 1.1 s: margin over the simulator's sliding 1-second window.
        OnePerSecond(governor::RateLimiter::direct(
            governor::Quota::with_period(Duration::from_millis(1100)).unwrap(),
        ))
    }
}

#[async_trait::async_trait]
impl Gate for OnePerSecond {
    async fn acquire(&self, _kind: CallKind) -> Result<(), RateLimitError> {
        self.0.until_ready().await;
        Ok(())
    }
    async fn report_429(&self, _kind: CallKind, _key: &str) {}
}

pub fn open_gate() -> Arc<dyn Gate> {
    Arc::new(OpenGate)
}

/// One test's world: a simulator and a Redis key prefix of its own.
pub struct World {
    pub sim: Sim,
    pub prefix: String,
    /// `CCSYNC_*` pairs pointing at this world (also given to child processes as env).
    pub pairs: Vec<(String, String)>,
}

impl World {
    pub async fn start(cfg: SimConfig, extra: &[(&str, &str)]) -> World {
        let sim = Sim::start(cfg).await.expect("simulator starts");
        let prefix = format!("test-auth-{}", uuid::Uuid::new_v4());
        let mut pairs = ccsync_kit::sim_env(&sim, CLIENT_ID, &prefix);
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            pairs.push((k.to_string(), v.to_string()));
        }
        World { sim, prefix, pairs }
    }

    pub fn settings(&self) -> Settings {
        ccsync_kit::settings_of(&self.pairs).expect("valid test settings")
    }

    pub fn store(&self) -> Store {
        Store::from_settings(&self.settings()).expect("store")
    }

    /// What a finished `auth login` leaves behind: a fresh token set from the simulator, stored as
    /// the next generation. Returns (generation, refresh token).
    pub async fn seed(&self, account: &str) -> (u64, String) {
        ccsync_kit::seed_tokens(
            &self.sim,
            &self.store(),
            CLIENT_ID,
            account,
            RefreshMode::Unknown,
        )
        .await
        .expect("seed token set")
    }

    /// Token-endpoint requests with `grant_type=refresh_token` seen by the simulator.
    pub fn refresh_requests(&self) -> Vec<ccsync::sim::RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.grant_type.as_deref() == Some("refresh_token"))
            .collect()
    }

    pub async fn cleanup(self, accounts: &[&str]) {
        let st = self.store();
        for a in accounts {
            let _ = st.wipe(a).await;
        }
        self.sim.shutdown().await;
    }
}

/// A `Write` into a shared buffer (stdout of an in-process `auth login`).
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    /// The user code `auth login` printed, once it has.
    pub fn user_code(&self) -> Option<String> {
        let t = self.text();
        let line = t.lines().find(|l| l.contains("enter the code:"))?;
        Some(line.rsplit(' ').next()?.trim().to_string())
    }
}

impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SharedBuf {
    type Writer = SharedBuf;
    fn make_writer(&'a self) -> SharedBuf {
        self.clone()
    }
}

/// The `auth_hammer` example binary, built first ([`ccsync_kit::example_bin`]).
pub fn hammer_bin() -> std::path::PathBuf {
    ccsync_kit::example_bin("auth_hammer")
}

/// Start a hammer process for this world.
pub fn spawn_hammer(world: &World, extra_env: &[(&str, String)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(hammer_bin());
    cmd.env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in &world.pairs {
        cmd.env(k, v);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd.spawn().expect("spawn auth_hammer")
}

/// Wait for a hammer process and parse its JSON line.
pub async fn hammer_result(child: tokio::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().await.expect("hammer runs");
    assert!(out.status.success(), "hammer failed: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("hammer output {text:?}: {e}"))
}

/// `GET {api_base}{path}` with a bearer token over a plain TCP socket (the simulator speaks
/// http://; reqwest stays inside `src/cc/`). Returns the HTTP status.
pub async fn api_get(api_base: &str, path: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = url::Url::parse(api_base).unwrap();
    let host = format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    );
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    let req = format!(
        "GET {}{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        u.path().trim_end_matches('/')
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).into_owned();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn race_cfg(ttl_secs: u64, grace_secs: u64) -> SimConfig {
    SimConfig {
        token_ttl: Duration::from_secs(ttl_secs),
        refresh_mode: SimMode::Rotating,
        grace: Duration::from_secs(grace_secs),
        // The API limits are not under test here.
        per_second: 1_000_000,
        daily_quota: 100_000_000,
        token_per_second: 1,
        ..Default::default()
    }
}

/// Three hammer processes of fifty callers on one account with 4-second tokens: exactly one
/// refresh per expiry, none wasted, racing or failed. `redis_env` picks the Redis (`[]`: the
/// default server; `CCSYNC_REDIS__CLUSTER_NODES`: a cluster), for this process and the hammers.
pub async fn refresh_race(redis_env: &[(&str, &str)]) {
    let secs: u64 = std::env::var("CCSYNC_TEST_HAMMER_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let ttl = 4;
    let w = World::start(race_cfg(ttl, 0), redis_env).await;
    let (g0, _) = w.seed("default").await;
    let started = Instant::now();
    let env = [
        ("HAMMER_CALLERS", "50".to_string()),
        ("HAMMER_SECS", secs.to_string()),
        ("HAMMER_PACE_MS", "250".to_string()),
    ];
    let procs: Vec<_> = (0..3).map(|_| spawn_hammer(&w, &env)).collect();
    let mut results = Vec::new();
    for p in procs {
        results.push(hammer_result(p).await);
    }
    let elapsed = started.elapsed().as_secs_f64();

    let requests = w.sim.requests();
    let refreshes = w.refresh_requests();
    let invalid_grants = requests
        .iter()
        .filter(|r| r.error.as_deref() == Some("invalid_grant"))
        .count();
    let api_401 = requests
        .iter()
        .filter(|r| r.path.starts_with("/v3/") && r.status == Some(401))
        .count();
    let api_ok: u64 = results.iter().map(|r| r["ok"].as_u64().unwrap()).sum();
    let dead: u64 = results.iter().map(|r| r["dead"].as_u64().unwrap()).sum();
    let Stored::Live(last) = w.store().load("default").await.unwrap() else {
        panic!("token set lost")
    };
    let report = format!(
        "elapsed {elapsed:.1}s, refreshes {}, generations {}..{}, 401s {api_401}, results {results:?}",
        refreshes.len(),
        g0,
        last.generation
    );
    eprintln!("{report}");
    for r in requests
        .iter()
        .filter(|r| r.status == Some(401) || r.grant_type.is_some())
    {
        eprintln!(
            "  {} {} {:?} {:?}",
            r.real_ms, r.path, r.grant_type, r.status
        );
    }
    assert_eq!(invalid_grants, 0, "{report}");
    assert_eq!(dead, 0, "{report}");
    assert!(refreshes.iter().all(|r| r.status == Some(200)), "{report}");
    // Every refresh produced exactly one new generation: no duplicate, racing or wasted refresh.
    assert_eq!(refreshes.len() as u64, last.generation - g0, "{report}");
    // And there was one per token lifetime: a token lives `ttl` s and is refreshed when 20 % is
    // left, so while the callers ran there were about window / (0.8 ttl) refreshes. The window is
    // read from the simulator's log (first to last API call), not from the test's clock, so a slow
    // process start on a busy machine does not count as idle token time.
    let api_ms: Vec<u64> = requests
        .iter()
        .filter(|r| r.path.starts_with("/v3/"))
        .map(|r| r.real_ms)
        .collect();
    let window = (api_ms.iter().max().unwrap() - api_ms.iter().min().unwrap()) as f64 / 1000.0;
    let lifetimes = window / (0.8 * ttl as f64);
    assert!(
        (refreshes.len() as f64) >= lifetimes - 2.0 && (refreshes.len() as f64) <= lifetimes + 2.0,
        "window {window:.1}s: {report}"
    );
    // No API request carried an expired token, except at most one 401 per expiry.
    assert!(api_401 <= refreshes.len(), "{report}");
    assert!(api_ok > 1000, "the callers really ran: {report}");
    if !redis_env.is_empty() {
        // The sets really lived where `redis_env` says, not on the default server.
        let default =
            ccsync::redis::Redis::from_settings(&Settings::from_pairs([]).unwrap()).unwrap();
        let stray = default
            .keys_matching(&format!("{}:*", w.prefix))
            .await
            .unwrap();
        assert!(stray.is_empty(), "keys on the default Redis: {stray:?}");
    }
    w.cleanup(&["default"]).await;
}

//! Shared helpers of the `auth_*` integration tests: a world per test (random Redis prefix, an
//! in-process simulator), test gates, bounded polls, the hammer process.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ccsync::auth::cli::store_new_set;
use ccsync::auth::store::Store;
use ccsync::auth::{AccessToken, RefreshMode, RefreshToken};
use ccsync::config::Settings;
use ccsync::ratelimit::{CallKind, Gate, RateLimitError};
use ccsync::sim::{Sim, SimConfig};

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
        let mut pairs: Vec<(String, String)> = vec![
            ("CCSYNC_API_BASE_URL".into(), sim.api_base_url()),
            ("CCSYNC_AUTH_BASE_URL".into(), sim.auth_base_url()),
            ("CCSYNC_CLIENT_ID".into(), CLIENT_ID.into()),
            ("CCSYNC_REDIS__KEY_PREFIX".into(), prefix.clone()),
            ("CCSYNC_LOG_FORMAT".into(), "text".into()),
        ];
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            pairs.push((k.to_string(), v.to_string()));
        }
        World { sim, prefix, pairs }
    }

    pub fn settings(&self) -> Settings {
        Settings::from_pairs(self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .expect("valid test settings")
    }

    pub fn store(&self) -> Store {
        Store::from_settings(&self.settings()).expect("store")
    }

    /// What a finished `auth login` leaves behind: a fresh token set from the simulator, stored as
    /// the next generation. Returns (generation, refresh token).
    pub async fn seed(&self, account: &str) -> (u64, String) {
        let (access, refresh) = self.sim.issue_tokens(CLIENT_ID, account);
        let g = store_new_set(
            &self.store(),
            account,
            AccessToken::new(access),
            RefreshToken::new(refresh.clone()),
            None,
            RefreshMode::Unknown,
        )
        .await
        .expect("seed token set");
        (g, refresh)
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

/// Poll `cond` every 50 ms until it holds or `limit` passes (then panic with `what`).
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
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

/// The `auth_hammer` example binary, built (incrementally) first: `cargo test --test NAME` does
/// not build examples, and a stale binary would test old code.
pub fn hammer_bin() -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut args = vec!["build", "--quiet", "--example", "auth_hammer"];
        if dir.file_name().is_some_and(|n| n == "release") {
            args.push("--release");
        }
        let status = std::process::Command::new(cargo)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example auth_hammer");
        assert!(status.success(), "building examples/auth_hammer.rs failed");
    });
    let p = dir.join("examples").join("auth_hammer");
    assert!(p.exists(), "{} missing", p.display());
    p
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

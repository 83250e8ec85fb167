//! Shared helpers of the `ratelimit_*` integration tests: each test gets its own Redis key prefix
//! (so tests run in parallel against one real Redis) and cleans it up.
#![allow(dead_code)]

use ccsync::config::Settings;

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
pub async fn eventually<F, Fut>(within: std::time::Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
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

//! A worker-like process for the multi-replica auth tests (issue 3): builds a `TokenProvider` from
//! the environment (`CCSYNC_*`, as a replica would), runs N concurrent callers that call a CC API
//! endpoint with `access_token` (and `token_rejected` after a 401) for a while, then prints its
//! counts as one JSON line on stdout.
//!
//! Knobs (environment): `HAMMER_ACCOUNT` (default `default`), `HAMMER_CALLERS` (50),
//! `HAMMER_SECS` (20), `HAMMER_PACE_MS` (pause between one caller's requests, 250),
//! `HAMMER_PATH` (under the API base, default `/contact_lists`).
//!
//! HTTP is spoken by hand over a TCP socket (plain `http://` only, the simulator): reqwest belongs
//! to `src/cc/` and this harness is not part of the product.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ccsync::auth::{AuthError, TokenProvider};
use ccsync::config::Settings;
use ccsync::ratelimit::{CallKind, Gate, RateLimitError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The shared limiter lands with issue 4; each hammer process paces its token calls at 1/s.
struct OnePerSecond(governor::DefaultDirectRateLimiter);

#[async_trait::async_trait]
impl Gate for OnePerSecond {
    async fn acquire(&self, _kind: CallKind) -> Result<(), RateLimitError> {
        self.0.until_ready().await;
        Ok(())
    }
    async fn report_429(&self, _kind: CallKind, _key: &str) {}
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    unauthorized: AtomicU64,
    throttled: AtomicU64,
    other_status: AtomicU64,
    transport: AtomicU64,
    dead: AtomicU64,
    unavailable: AtomicU64,
    /// The first `Dead` reason seen (diagnostics for a failing test).
    dead_reason: std::sync::Mutex<String>,
}

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// `GET path` with a bearer token; the HTTP status, or `None` on a transport failure.
async fn get(host: &str, path: &str, token: &str) -> Option<u16> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(host))
        .await
        .ok()?
        .ok()?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::with_capacity(1024);
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let line = std::str::from_utf8(&buf[..buf.len().min(64)]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    ccsync::clock::set_offset_secs(settings.testing.clock_offset_secs);
    let account: String = env_or("HAMMER_ACCOUNT", "default".to_string());
    let callers: usize = env_or("HAMMER_CALLERS", 50);
    let secs: u64 = env_or("HAMMER_SECS", 20);
    let pace = Duration::from_millis(env_or("HAMMER_PACE_MS", 250));
    let api = settings.api_base_url.clone();
    let host = format!(
        "{}:{}",
        api.host_str().unwrap_or("127.0.0.1"),
        api.port_or_known_default().unwrap_or(80)
    );
    let path = format!(
        "{}{}",
        api.path().trim_end_matches('/'),
        env_or("HAMMER_PATH", "/contact_lists".to_string())
    );

    // 1.1 s: margin over the authorization server's sliding 1-second window.
    let gate: Arc<dyn Gate> = Arc::new(OnePerSecond(governor::RateLimiter::direct(
        governor::Quota::with_period(Duration::from_millis(1100)).expect("non-zero period"),
    )));
    let provider = TokenProvider::connect(&settings, gate).await?;
    let shutdown = CancellationToken::new();
    let bg = provider.spawn_background(shutdown.clone());
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs(secs);
    eprintln!("hammer: ready");

    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (p, c, account, host, path) = (
            provider.clone(),
            counts.clone(),
            account.clone(),
            host.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match p.access_token(&account).await {
                    Ok(token) => match get(&host, &path, token.expose()).await {
                        Some(200..=299) => {
                            c.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(401) => {
                            c.unauthorized.fetch_add(1, Ordering::Relaxed);
                            if let Err(AuthError::Dead { .. }) =
                                p.token_rejected(&account, &token).await
                            {
                                c.dead.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(429) => {
                            c.throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => {
                            c.other_status.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            c.transport.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(AuthError::Dead { reason, .. }) => {
                        c.dead.fetch_add(1, Ordering::Relaxed);
                        {
                            let mut r = c.dead_reason.lock().unwrap_or_else(|p| p.into_inner());
                            if r.is_empty() {
                                *r = reason;
                            }
                        }
                        // Paused like the pipeline: wait for a new token set (bounded by the run).
                        let left = deadline.saturating_duration_since(Instant::now());
                        let _ = tokio::time::timeout(left, p.wait_until_alive(&account)).await;
                    }
                    Err(AuthError::Unavailable(_)) => {
                        c.unavailable.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                tokio::time::sleep(pace).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    shutdown.cancel();
    let _ = bg.await;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "ok": l(&counts.ok),
            "unauthorized": l(&counts.unauthorized),
            "throttled": l(&counts.throttled),
            "other_status": l(&counts.other_status),
            "transport": l(&counts.transport),
            "dead": l(&counts.dead),
            "unavailable": l(&counts.unavailable),
            "dead_reason": counts.dead_reason.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    );
    Ok(())
}

//! One "replica" hammering the shared rate limit, for `tests/ratelimit_multiprocess.rs`.
//!
//! Configuration comes from the environment like the worker's (`CCSYNC_REDIS_URL`,
//! `CCSYNC_REDIS__KEY_PREFIX`, `CCSYNC_RATELIMIT__*`). Usage:
//!
//! ```text
//! ratelimit_hammer <client_id> <duration_ms> <tasks> <out_file>
//! ```
//!
//! `tasks` concurrent tasks call `acquire(Import)` as fast as they can for `duration_ms`; every
//! grant's wall-clock time (Unix nanoseconds, taken the moment `acquire` returns, i.e. when a real
//! worker would send the request) is written to `out_file`, one per line.
//!
//! With `HAMMER_API_BASE_URL` and `HAMMER_ACCESS_TOKEN` set (the simulator's `/v3` and a token it
//! issued), each grant is followed by a real `GET /contact_lists`, and a 429 is handed to
//! `report_429` with its `error_key`, as the worker's CC client does. The statuses seen are
//! printed to stdout as one line: `status=count ...`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ccsync::cc::{CcError, Endpoint};
use ccsync::config::Settings;
use ccsync::ratelimit::{CallKind, Gate, SharedLimiter};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: ratelimit_hammer <client_id> <duration_ms> <tasks> <out_file>".into());
    }
    let client_id = args[1].clone();
    let duration = Duration::from_millis(args[2].parse()?);
    let tasks: usize = args[3].parse()?;
    let out = args[4].clone();
    let api = match (
        std::env::var("HAMMER_API_BASE_URL"),
        std::env::var("HAMMER_ACCESS_TOKEN"),
    ) {
        (Ok(base), Ok(token)) => Some(Arc::new((base, token))),
        _ => None,
    };

    let settings = Settings::load()?;
    let limiter = SharedLimiter::connect(&settings, &client_id).await?;
    let http = ccsync::cc::http_client(Duration::from_secs(10));
    let grants = Arc::new(Mutex::new(Vec::<u128>::new()));
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    let deadline = tokio::time::Instant::now() + duration;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (limiter, grants, statuses) = (limiter.clone(), grants.clone(), statuses.clone());
        let (api, http) = (api.clone(), http.clone());
        handles.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout_at(deadline, limiter.acquire(CallKind::Import)).await {
                    Err(_) => return Ok(()),
                    Ok(Err(e)) => return Err(e.to_string()),
                    Ok(Ok(())) => {}
                }
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                grants
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(t.as_nanos());
                let Some(api) = api.as_deref() else { continue };
                let resp = http
                    .get(format!("{}/contact_lists", api.0))
                    .bearer_auth(&api.1)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                *statuses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(status)
                    .or_default() += 1;
                if let CcError::RateLimited { error_key } =
                    CcError::from_response(Endpoint::ContactLists, status, &body)
                {
                    limiter
                        .report_429(CallKind::Import, error_key.as_str())
                        .await;
                }
            }
        }));
    }
    for h in handles {
        h.await??;
    }
    let grants = grants.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&out)?);
    for g in grants {
        writeln!(f, "{g}")?;
    }
    f.flush()?;
    let statuses = statuses.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let line: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}={n}")).collect();
    println!("{}", line.join(" "));
    if limiter.is_degraded() {
        return Err("the limiter fell back to its local share: Redis was unreachable".into());
    }
    Ok(())
}

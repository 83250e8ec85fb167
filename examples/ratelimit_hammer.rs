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

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

    let settings = Settings::load()?;
    let limiter = SharedLimiter::connect(&settings, &client_id).await?;
    let grants = Arc::new(Mutex::new(Vec::<u128>::new()));
    let deadline = tokio::time::Instant::now() + duration;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (limiter, grants) = (limiter.clone(), grants.clone());
        handles.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout_at(deadline, limiter.acquire(CallKind::Import)).await {
                    Err(_) => return Ok(()),
                    Ok(Err(e)) => return Err(e.to_string()),
                    Ok(Ok(())) => {
                        let t = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default();
                        grants
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(t.as_nanos());
                    }
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
    if limiter.is_degraded() {
        return Err("the limiter fell back to its local share: Redis was unreachable".into());
    }
    Ok(())
}

//! Waiting on a condition, the one way every test and the bench do it: poll until it holds or a
//! limit passes.

use std::future::Future;
use std::time::Duration;

/// Poll `cond` every `every` until it holds (true) or `limit` passes (false). Time is tokio's:
/// real time in the integration tests and the bench, virtual time under a paused clock.
pub async fn wait_until<F, Fut>(limit: Duration, every: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if cond().await {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// Poll `cond` every 50 ms until it holds or `limit` passes; panics with `what` on timeout.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        wait_until(limit, Duration::from_millis(50), cond).await,
        "timed out after {limit:?} waiting for: {what}"
    );
}

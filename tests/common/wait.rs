//! Waiting on a condition, the one way every test does it: poll until it holds or a limit
//! passes, then fail naming what was awaited. Shared by every support module (`common`,
//! `auth_support`) through `#[path]`, so there is one copy.

use std::time::Duration;

/// Poll `cond` every 50 ms until it holds or `limit` passes; panics with `what` on timeout.
/// Time is tokio's: real time in the integration tests, virtual time under a paused clock.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! One CC call through the gate and the token source, with the retry policy of [`super::sender`].

use std::future::Future;
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;

use crate::cc::{CcError, RetryAction};
use crate::ratelimit::{CallKind, RateLimitError};
use crate::telemetry::metrics;

use super::ctx::*;

/// Why a call sequence stopped without a result.
pub(super) enum Stop {
    Pause(Pause),
    /// CC refused this content; resubmitting it unchanged cannot succeed.
    Reject(String),
    /// The hold bound is reached; requeue.
    Deadline,
}

/// One CC call through the gate and the token source, with the retry policy of the module docs.
pub(super) async fn call<T, F, Fut>(
    ctx: &Ctx,
    account: &str,
    kind: CallKind,
    deadline: Instant,
    f: F,
) -> Result<T, Stop>
where
    F: Fn(SecretString) -> Fut,
    Fut: Future<Output = Result<T, CcError>>,
{
    let mut transient = 0u32;
    let mut unauthorized = 0u32;
    let mut token = get_token(ctx, account, deadline).await?;
    loop {
        if Instant::now() >= deadline {
            return Err(Stop::Deadline);
        }
        let waited = Instant::now();
        match ctx.gate.acquire(kind).await {
            Ok(()) => {}
            Err(RateLimitError::QuotaPaused(wait)) => {
                return Err(Stop::Pause(Pause::Quota { wait }));
            }
        }
        metrics()
            .ratelimit_wait
            .observe(waited.elapsed().as_secs_f64());
        let err = match f(token.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match err.action() {
            RetryAction::Reauthenticate => {
                unauthorized += 1;
                if unauthorized > 1 {
                    backoff_sleep(unauthorized - 2, deadline).await;
                }
                token = match ctx.tokens.token_rejected(account, &token).await {
                    Ok(t) => t,
                    Err(TokenError::Dead(_)) => return Err(Stop::Pause(auth_pause(account))),
                    Err(TokenError::Unavailable(_)) => get_token(ctx, account, deadline).await?,
                };
            }
            RetryAction::RateLimited => {
                // The gate counts it in `ccsync_rate_limited_total` and shares the consequence.
                if let CcError::RateLimited { error_key } = &err {
                    ctx.gate.report_429(kind, error_key).await;
                }
            }
            RetryAction::Reject => return Err(Stop::Reject(err.to_string())),
            RetryAction::Halt => {
                tracing::error!(account, error = %err, "CC forbids the call; pausing");
                return Err(Stop::Pause(auth_pause(account)));
            }
            RetryAction::Retry => {
                tracing::warn!(account, kind = kind.as_str(), error = %err, "CC call failed; retrying");
                backoff_sleep(transient, deadline).await;
                transient += 1;
            }
        }
    }
}

pub(super) fn auth_pause(account: &str) -> Pause {
    Pause::Auth {
        account: account.to_string(),
    }
}

pub(super) async fn get_token(
    ctx: &Ctx,
    account: &str,
    deadline: Instant,
) -> Result<SecretString, Stop> {
    let mut n = 0;
    loop {
        match ctx.tokens.access_token(account).await {
            Ok(t) => return Ok(t),
            Err(TokenError::Dead(_)) => return Err(Stop::Pause(auth_pause(account))),
            Err(TokenError::Unavailable(e)) => {
                tracing::warn!(account, error = %e, "no access token yet; retrying");
                if Instant::now() >= deadline {
                    return Err(Stop::Deadline);
                }
                backoff_sleep(n, deadline).await;
                n += 1;
            }
        }
    }
}

/// Exponential backoff with jitter (0.5 s doubling to 30 s), never past the deadline.
pub(super) async fn backoff_sleep(attempt: u32, deadline: Instant) {
    let base = Duration::from_millis(500) * 2u32.saturating_pow(attempt.min(6));
    let base = base.min(Duration::from_secs(30));
    let jitter = rand::random_range(0.8..1.2);
    let wait = base.mul_f64(jitter);
    let until = (Instant::now() + wait).min(deadline);
    tokio::time::sleep_until(until).await;
}

//! One CC call through the gate and the token source, with the retry policy of [`super::sender`]
//! and CC's answer table ([`crate::cc::CcError::from_response`]).

use std::future::Future;
use std::time::Duration;

use crate::auth::AccessToken;
use tokio::time::Instant;

use crate::cc::{CcError, CcErrorKey, RetryAction};
use crate::ratelimit::{CallKind, RateLimitError};
use crate::telemetry::metrics;

use super::ctx::{Ctx, Pause, TokenError};

/// Why a call sequence stopped without a result.
#[derive(Debug)]
pub(super) enum Stop {
    /// The worker must stop consuming (nothing is blamed).
    Pause(Pause),
    /// CC refused this content; resubmitting it unchanged cannot succeed.
    Reject(String),
    /// CC refused the import as a whole for something outside its rows (lists, content type).
    Envelope(String),
    /// The activity is unknown to CC (404 on its poll): send the rows again.
    UnknownActivity,
    /// CC kept answering "try again" (409 on a sign-up) past the bounded retries: give the
    /// message back to the queue, without blame.
    Busy,
    /// The hold bound is reached; requeue (without blame).
    Deadline,
    /// The account's connection is dead: its messages go to its parking queue.
    Park(String),
    /// No token set was ever stored for this account and the configuration does not name it.
    UnknownAccount(String),
}

/// 409 retries on `sign_up_form` before the message goes back to the queue.
const CONFLICT_ATTEMPTS: u32 = 4;

/// One CC call through the gate and the token source, with the retry policy of the module docs.
pub(super) async fn call<T, F, Fut>(
    ctx: &Ctx,
    account: &str,
    kind: CallKind,
    deadline: Instant,
    f: F,
) -> Result<T, Stop>
where
    F: Fn(AccessToken) -> Fut,
    Fut: Future<Output = Result<T, CcError>>,
{
    let mut transient = 0u32;
    let mut unauthorized = 0u32;
    let mut conflicts = 0u32;
    let mut queued = 0u32;
    let mut token = get_token(ctx, account, deadline).await?;
    loop {
        if Instant::now() >= deadline {
            return Err(Stop::Deadline);
        }
        // Another call found CC down: do not add to the failures, pause with it.
        if ctx.outage.is_down() {
            return Err(Stop::Pause(outage_pause(account)));
        }
        let waited = Instant::now();
        match ctx.turns.acquire(&*ctx.gate, account, kind).await {
            Ok(()) => {}
            Err(RateLimitError::QuotaPaused(wait)) => {
                return Err(Stop::Pause(Pause::Quota { wait }));
            }
        }
        metrics().ratelimit_waited(waited.elapsed());
        let err = match f(token.clone()).await {
            Ok(v) => {
                ctx.outage.answered();
                return Ok(v);
            }
            Err(e) => e,
        };
        if !err.is_outage() {
            ctx.outage.answered();
        }
        match err.action() {
            RetryAction::Reauthenticate => {
                unauthorized += 1;
                if unauthorized > 1 {
                    backoff_sleep(unauthorized - 2, deadline).await;
                }
                token = match ctx.tokens.token_rejected(account, &token).await {
                    Ok(t) => t,
                    Err(TokenError::Unavailable(_)) => get_token(ctx, account, deadline).await?,
                    Err(e) => return Err(dead_account(ctx, account, e).await),
                };
            }
            RetryAction::RateLimited => {
                // The gate counts it in `ccsync_rate_limited_total` and shares the consequence.
                if let CcError::RateLimited { error_key } = &err {
                    ctx.gate.report_429(kind, error_key.as_str()).await;
                    if let CcErrorKey::Other(_) = error_key {
                        // The 1,000-queued-activities 429 (reference §4): the account's queue
                        // drains in minutes, not in the second a `throttled` cool-down lasts.
                        tracing::warn!(account, error_key = %error_key, "CC has too many queued activities for this account; backing off");
                        backoff_sleep(3 + queued, deadline).await;
                        queued += 1;
                    }
                }
            }
            RetryAction::RetrySoon => {
                conflicts += 1;
                if conflicts >= CONFLICT_ATTEMPTS {
                    return Err(Stop::Busy);
                }
                // CC's "simultaneous modification": the other writer is done within moments.
                let wait = Duration::from_millis(200 * 2u64.pow(conflicts))
                    .mul_f64(rand::random_range(0.5..1.5));
                tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
            }
            RetryAction::Reject => return Err(Stop::Reject(err.to_string())),
            RetryAction::RejectEnvelope => return Err(Stop::Envelope(err.to_string())),
            RetryAction::Forget => return Err(Stop::UnknownActivity),
            RetryAction::Forbidden => {
                return Err(Stop::Pause(Pause::Forbidden {
                    account: account.to_string(),
                }));
            }
            RetryAction::Retry => {
                tracing::warn!(account, kind = kind.as_str(), error = %err, "CC call failed; retrying");
                if ctx.outage.failed() {
                    return Err(Stop::Pause(outage_pause(account)));
                }
                backoff_sleep(transient, deadline).await;
                transient += 1;
            }
        }
    }
}

/// An account without a usable token set: an account nobody authorized (and the configuration
/// does not name) is unknown; any other waits in its parking queue.
async fn dead_account(ctx: &Ctx, account: &str, e: TokenError) -> Stop {
    if matches!(e, TokenError::Unknown(_)) && !ctx.configured_accounts.contains(account) {
        return Stop::UnknownAccount(account.to_string());
    }
    match ctx.parking.park(account).await {
        Ok(()) => Stop::Park(account.to_string()),
        Err(err) => {
            tracing::warn!(account, error = %err, "cannot record the parked account; requeueing");
            Stop::Busy
        }
    }
}

fn outage_pause(account: &str) -> Pause {
    Pause::Outage {
        account: account.to_string(),
    }
}

pub(super) async fn get_token(
    ctx: &Ctx,
    account: &str,
    deadline: Instant,
) -> Result<AccessToken, Stop> {
    let mut n = 0;
    loop {
        match ctx.tokens.access_token(account).await {
            Ok(t) => return Ok(t),
            Err(e @ (TokenError::Dead(_) | TokenError::Unknown(_))) => {
                return Err(dead_account(ctx, account, e).await);
            }
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

/// How a pause's probe found CC.
pub(super) enum Probe {
    /// CC answers this account normally (or something else, such as the token or the quota,
    /// is now the problem: the pipeline meets it and pauses for that).
    Answers,
    /// Still failing (5xx, transport) or still 403.
    Down,
}

/// One probe of a paused account (`GET /contact_lists?limit=1`), through the gate (it spends one
/// request of the day).
pub(super) async fn probe(ctx: &Ctx, account: &str) -> Probe {
    let Ok(token) = ctx.tokens.access_token(account).await else {
        return Probe::Answers;
    };
    if ctx
        .turns
        .acquire(&*ctx.gate, account, CallKind::Lookup)
        .await
        .is_err()
    {
        return Probe::Answers;
    }
    match ctx.api.probe(&token).await {
        Ok(()) => Probe::Answers,
        Err(e) if e.is_outage() || e.action() == RetryAction::Forbidden => Probe::Down,
        Err(_) => Probe::Answers,
    }
}

//! Waiting out a pause: the gauge, the log line that says what to do, and the probing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Ctx, Pause, call, lists};
use crate::telemetry::{health, metrics};

/// First probe of an outage or `forbidden` pause, and the cap its backoff doubles to: at most
/// three requests a minute per replica while CC is down (issue 11: "a few a minute at most").
pub(crate) const PROBE_FIRST: Duration = Duration::from_secs(5);
pub(crate) const PROBE_MAX: Duration = Duration::from_secs(20);

/// Wait until the reason for a pause is gone (or shutdown). The gauge `ccsync_paused{reason}`
/// is 1 meanwhile; the replica stays ready (a pause is on purpose: restarting or draining it
/// would not help, and a not-ready replica would block rollouts and node drains).
pub(super) async fn wait_out_pause(ctx: &Ctx, p: Pause, shutdown: &CancellationToken) {
    let m = metrics();
    let reason = p.reason();
    let account = p.account().to_string();
    m.set_paused(reason, &account, true);
    health()
        .paused
        .store(true, std::sync::atomic::Ordering::Relaxed);
    match p {
        Pause::Quota { wait } => {
            tracing::warn!(
                resume_in_secs = wait.as_secs(),
                "paused: CC's daily quota is spent; resuming after 00:00 UTC; messages stay queued"
            );
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        Pause::Outage { account } | Pause::Forbidden { account } => {
            if reason == "forbidden" {
                tracing::error!(account = %account, "paused: CC answers 403 Forbidden. Likely fixes: the app's scopes must include contact_data (re-run `ccsync auth login --account {account}` after changing them), the CC user who approved it needs the contacts privileges, or the app is deactivated in CC's developer portal; probing every {}s at most; messages stay queued", PROBE_MAX.as_secs());
            } else {
                tracing::error!(account = %account, "paused: CC is failing (5xx or timeouts, call after call); probing every {}s at most and resuming by itself; messages stay queued", PROBE_MAX.as_secs());
            }
            let mut wait = PROBE_FIRST;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                m.probe_sent(reason);
                if let call::Probe::Answers = call::probe(ctx, &account).await {
                    tracing::info!(account = %account, reason, "CC answers again; resuming");
                    break;
                }
                wait = (wait * 2).min(PROBE_MAX);
            }
            ctx.outage.answered();
        }
        Pause::Config { account, list } => {
            tracing::error!(account = %account, %list, "paused: the default list {list} (CCSYNC_DEFAULT_LIST_IDS) does not exist in CC account '{account}'; create it or fix the setting; checking again every {}s; messages stay queued", lists::LISTS_RECHECK.as_secs());
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(lists::LISTS_RECHECK) => {}
                }
                m.probe_sent(reason);
                match lists::missing_default_lists(ctx, &account).await {
                    Ok(gone) if !gone.contains(&list) => {
                        tracing::info!(account = %account, %list, "the default list exists again; resuming");
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    m.set_paused(reason, &account, false);
    health()
        .paused
        .store(false, std::sync::atomic::Ordering::Relaxed);
}

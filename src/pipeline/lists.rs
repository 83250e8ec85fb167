//! The account's lists in CC, checked before a batch is sent (issue 12: an import naming a list
//! CC lacks fails every row, and halving it costs 2N−1 imports for N contacts).
//!
//! `contacts_json_import` takes one `list_ids` (1–50 existing lists) for the whole payload
//! (reference §6.1), so a list CC lacks is an envelope problem, never a row's. The worker keeps a
//! view of each account's list ids (`GET /contact_lists`, one request for up to 1,000 lists),
//! refreshed every [`LISTS_REFRESH`] and, when a batch names a list the view lacks, once more at
//! most every [`LISTS_RECHECK`] (a list created a moment ago). Then:
//! * a list the message named that CC lacks → the message is dead-lettered `unknown_list`
//!   (a typo upstream, a deleted list; replay it once the list exists);
//! * a configured default list CC lacks (`CCSYNC_DEFAULT_LIST_IDS`) → the configuration is
//!   wrong, not the messages: the worker pauses (`ccsync_paused{reason="config"}`), checks again
//!   every [`LISTS_RECHECK`], and resumes when the list exists. `ccsync worker` and
//!   `ccsync config check` refuse to start on it (see [`missing_default_lists`]).

use crate::contact::Reason;
use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::queue::Settler;
use crate::ratelimit::CallKind;

use super::call::{Stop, call};
use super::ctx::{Ctx, Pause};
use super::settle::{Chunk, Disposition, apply};

/// How old the view of an account's lists may get before it is fetched again.
pub(crate) const LISTS_REFRESH: Duration = Duration::from_secs(3600);
/// The least time between two fetches caused by a list the view lacks.
pub(crate) const LISTS_RECHECK: Duration = Duration::from_secs(60);

/// Which of `wanted` the account lacks in CC (fetching the view when it is stale, or when it
/// lacks one of them and was fetched more than [`LISTS_RECHECK`] ago).
pub(super) async fn missing(
    ctx: &Ctx,
    account: &str,
    wanted: &[Uuid],
    deadline: Instant,
) -> Result<Vec<Uuid>, Stop> {
    let mut cache = ctx.lists.lock().await;
    let lacks = |known: &HashSet<Uuid>| -> Vec<Uuid> {
        wanted
            .iter()
            .filter(|l| !known.contains(*l))
            .copied()
            .collect()
    };
    let refetch = match cache.get(account) {
        None => true,
        Some((at, known)) => {
            at.elapsed() >= LISTS_REFRESH
                || (!lacks(known).is_empty() && at.elapsed() >= LISTS_RECHECK)
        }
    };
    if refetch {
        let known = call(ctx, account, CallKind::Lookup, deadline, |t| async move {
            ctx.api.lists(&t).await
        })
        .await?;
        cache.insert(account.to_string(), (Instant::now(), known));
    }
    Ok(lacks(&cache.get(account).expect("just filled").1))
}

/// Check the batch's list set; returns the entries to send. Entries naming a list CC lacks are
/// dead-lettered `unknown_list`; a missing default list pauses the worker.
pub(super) async fn check(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    lists: &[Uuid],
    entries: Chunk,
    deadline: Instant,
) -> Result<Chunk, (Chunk, Stop)> {
    let gone = match missing(ctx, account, lists, deadline).await {
        Ok(g) => g,
        Err(stop) => return Err((entries, stop)),
    };
    if gone.is_empty() {
        return Ok(entries);
    }
    if let Some(default) = gone.iter().find(|l| ctx.defaults_for(account).contains(l)) {
        let p = Pause::Config {
            account: account.to_string(),
            list: *default,
        };
        return Err((entries, Stop::Pause(p)));
    }
    let names: Vec<String> = gone.iter().map(Uuid::to_string).collect();
    let detail = format!(
        "CC account '{account}' has no list {}; create it in CC (or fix the list id upstream), then replay this message",
        names.join(", ")
    );
    tracing::warn!(account, lists = %names.join(","), contacts = entries.len(), "messages name a list CC lacks; dead-lettering them as unknown_list");
    let d = Disposition::DeadLetter {
        reason: Reason::UnknownList,
        detail,
    };
    apply(settler, entries, d).await;
    Ok(Vec::new())
}

/// The configured default lists `account` lacks in CC (for the start of `ccsync worker` and for
/// `ccsync config check`). One request.
pub(crate) async fn missing_default_lists(ctx: &Ctx, account: &str) -> Result<Vec<Uuid>, String> {
    let wanted = ctx.defaults_for(account);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    missing(ctx, account, wanted, deadline)
        .await
        .map_err(|stop| match stop {
            Stop::Park(_) | Stop::UnknownAccount(_) => {
                format!("account '{account}' has no usable token set")
            }
            Stop::Pause(p) => format!("CC cannot be asked now ({})", p.reason()),
            other => format!("{other:?}"),
        })
}

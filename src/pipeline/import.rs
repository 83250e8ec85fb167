//! Imports: one batch's rows through `POST /activities/contacts_json_import`, followed to a
//! terminal state, with the halving that finds the rows CC did not take (see [`super::sender`]
//! for what each outcome means).

use tokio::time::Instant;

use crate::cc::api::{ActivityState, Api};
use crate::contact::{Contact, Reason};
use crate::queue::Settler;
use crate::ratelimit::CallKind;
use crate::telemetry::metrics;

use super::call::{Stop, backoff_sleep, call};
use super::claims::InFlight;
use super::ctx::{Ctx, Pause};
use super::settle::{Chunk, Disposition, apply, halves, settle_stop};

/// Imports a batch may spend, beyond its first, finding the rows CC did not take.
pub(super) const MAX_FINDING_IMPORTS: u32 = 32;

pub(super) async fn import_all(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    lists: &[uuid::Uuid],
    entries: Chunk,
    deadline: Instant,
    inflight: &InFlight,
) -> Option<Pause> {
    // A work stack of (chunk, tries): a chunk that falls short is split in halves until the rows
    // CC does not take stand alone.
    let mut stack: Vec<(Chunk, u32)> = vec![(entries, 0)];
    let mut finding = 0u32;
    while let Some((chunk, tries)) = stack.pop() {
        let contacts: Vec<&Contact> = chunk.iter().map(|e| &*e.item).collect();
        let body = Api::import_body(lists, &contacts);
        if body.len() > ctx.worker.batch_max_bytes && chunk.len() > 1 {
            // The batcher's estimate was short: never let CC truncate at 4 MB.
            stack.extend(halves(chunk).into_iter().map(|c| (c, 0)));
            continue;
        }
        metrics().import_sent(chunk.len());
        let landed = import_once(ctx, account, body, chunk.len() as u64, deadline, inflight).await;
        let shortfall = match landed {
            Ok(Landed::All) => {
                apply(settler, chunk, Disposition::Ack).await;
                continue;
            }
            Ok(Landed::Shortfall(text)) => text,
            Err(Stop::Reject(text)) => text,
            Ok(Landed::Failed(state)) => {
                tracing::warn!(
                    account,
                    ?state,
                    "import activity ended without completing; retrying"
                );
                if tries >= 3 {
                    apply(settler, chunk, Disposition::Requeue).await;
                } else {
                    backoff_sleep(tries, deadline).await;
                    stack.push((chunk, tries + 1));
                }
                continue;
            }
            Err(Stop::UnknownActivity) => {
                // Nothing says whether it ran: send the same rows again (an upsert).
                tracing::warn!(account, "CC no longer knows the import; sending it again");
                if tries >= 3 {
                    apply(settler, chunk, Disposition::Requeue).await;
                } else {
                    stack.push((chunk, tries + 1));
                }
                continue;
            }
            Err(Stop::Envelope(text)) => {
                // Not the rows: halving cannot help. Forget the account's lists so the next
                // batch checks them again, and give everything back.
                tracing::error!(account, error = %text, "CC refused the import as a whole; checking the account's lists again and requeueing");
                ctx.lists.lock().await.remove(account);
                let mut rest = chunk;
                rest.extend(stack.into_iter().flat_map(|(c, _)| c));
                apply(settler, rest, Disposition::Requeue).await;
                return None;
            }
            Err(stop) => {
                let mut rest: Chunk = chunk;
                rest.extend(stack.into_iter().flat_map(|(c, _)| c));
                return settle_stop(settler, rest, stop).await;
            }
        };
        // Some rows did not land. A single row gets a second try (CC skips some rows for a
        // moment); then it is CC's refusal of that row.
        if chunk.len() == 1 && tries >= 1 {
            let d = Disposition::DeadLetter {
                reason: Reason::RejectedByCc,
                detail: shortfall,
            };
            apply(settler, chunk, d).await;
        } else if finding >= MAX_FINDING_IMPORTS
            || !ctx.finding.spend(if chunk.len() == 1 { 1 } else { 2 })
        {
            tracing::warn!(
                account,
                contacts = chunk.len(),
                "CC did not take every row and the imports for finding them are spent (this batch's or today's allowance); requeueing the rest"
            );
            apply(settler, chunk, Disposition::Requeue).await;
        } else if chunk.len() == 1 {
            finding += 1;
            stack.push((chunk, tries + 1));
        } else {
            finding += 2;
            stack.extend(halves(chunk).into_iter().map(|c| (c, 0)));
        }
    }
    None
}

enum Landed {
    All,
    Shortfall(String),
    Failed(ActivityState),
}

/// Create one import and follow it to a terminal state.
async fn import_once(
    ctx: &Ctx,
    account: &str,
    body: Vec<u8>,
    rows: u64,
    deadline: Instant,
    inflight: &InFlight,
) -> Result<Landed, Stop> {
    let created = call(ctx, account, CallKind::Import, deadline, |t| {
        let body = body.clone();
        async move { ctx.api.import(&t, body).await }
    })
    .await?;
    let started = Instant::now();
    let id = created.activity_id;
    inflight.set(Some(id.clone()));
    tracing::debug!(account, activity_id = %id, rows, "import created");
    let mut wait = ctx.worker.poll_initial;
    loop {
        if Instant::now() + wait > deadline {
            return Err(Stop::Deadline);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(ctx.worker.poll_max);
        let st = call(ctx, account, CallKind::Poll, deadline, |t| {
            let id = id.clone();
            async move { ctx.api.activity(&t, &id).await }
        })
        .await?;
        if !st.state.is_terminal() {
            continue;
        }
        inflight.set(None);
        metrics().activity_finished(started.elapsed());
        tracing::info!(account, activity_id = %id, state = ?st.state, rows, items = st.items_total, errors = st.errors, "import finished");
        return Ok(match st.state {
            ActivityState::Completed
                if st.errors == 0 && st.correctable == 0 && st.items_total >= rows =>
            {
                Landed::All
            }
            ActivityState::Completed => Landed::Shortfall(if st.activity_errors.is_empty() {
                format!(
                    "CC completed the import with {} of {rows} rows, {} errors and {} rows skipped as correctable but named no reason",
                    st.items_total, st.errors, st.correctable
                )
            } else {
                format!("CC rejected the row: {}", st.activity_errors.join("; "))
            }),
            other => Landed::Failed(other),
        });
    }
}

//! One batch's journey: custom fields resolved → import (or one `sign_up_form` per contact for
//! explicit consent) → activity polled to a terminal state → every delivery settled.
//!
//! What each CC outcome means for the deliveries (each is reported as a
//! [`Disposition`](super::settle::Disposition) and applied in one place, [`super::settle::apply`]):
//! * `completed` with every row accounted for → ack all.
//! * `completed` with `error_count` or `correctable_count` > 0, or fewer items than sent (CC
//!   does not say which rows, reference §6.5) → split the chunk in halves and import each
//!   again; a single row that still falls short on its second try is dead-lettered as
//!   `rejected_by_cc` with CC's text. The extra imports spent finding rows are capped per batch
//!   ([`super::import::MAX_FINDING_IMPORTS`]) and per UTC day ([`super::ctx::FINDING_PER_DAY`]); past either cap
//!   the rest goes back to the queue (without blame). Re-importing rows
//!   that did land is harmless: imports are create-or-update by email.
//! * 400 on the import for its rows → the same halving; for its envelope (a list id CC lacks)
//!   → never halved: the lists are checked again and the chunk requeued (see [`super::lists`]).
//! * a poll CC answers 404 (the activity is unknown) → the chunk is imported again.
//! * `failed` / `cancelled` / `timed_out`, 5xx, timeouts → retry with backoff; five transient
//!   failures in a row pause the worker (`outage`) and it probes CC at a capped rate.
//! * 409 on `sign_up_form` → retried after a short jittered delay, then requeued.
//! * 401 → one refresh through the token source, then retry; 429 → reported to the shared gate,
//!   which spreads the cool-down (`throttled`) or the daily pause (`quota_exceeded`) to all
//!   replicas. 403 → the `forbidden` pause.
//! * every requeue above is without blame: it never counts toward a redelivery limit.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::ContactBatch;
use crate::contact::{Action, Consent};
use crate::queue::Settler;
use crate::ratelimit::CallKind;

use super::call::{Stop, backoff_sleep, call};
use super::claims::{InFlight, claim, release_claims, renew_claims, watch_abandoned};
use super::ctx::{Ctx, Pause};
use super::fields::resolve_custom_fields;
use super::import::import_all;
use super::settle::{Chunk, Disposition, apply, settle_stop};

/// Send one batch and settle its deliveries. Returns a pause request when the worker must stop.
pub async fn send(ctx: Arc<Ctx>, settler: Settler, batch: ContactBatch) -> Option<Pause> {
    use tracing::Instrument as _;
    // Every log line of this batch carries its id, account and size (JSON logs: span fields).
    let batch_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!(
        "batch",
        batch_id = %batch_id,
        account = %batch.group.0,
        contacts = batch.entries.len(),
        deliveries = batch.deliveries(),
    );
    let started = Instant::now();
    let pause = send_batch(ctx, settler, batch, batch_id)
        .instrument(span.clone())
        .await;
    span.in_scope(|| {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            paused = pause.is_some(),
            "batch settled"
        )
    });
    pause
}

async fn send_batch(
    ctx: Arc<Ctx>,
    settler: Settler,
    batch: ContactBatch,
    batch_id: String,
) -> Option<Pause> {
    let (account, lists, consent, action) = batch.group.clone();
    let oldest = batch
        .entries
        .iter()
        .flat_map(|e| e.tags.iter().map(|h| h.received))
        .min()
        .unwrap_or_else(Instant::now);
    let deadline = oldest + ctx.worker.max_hold;
    let entries = batch.entries;
    // Custom fields and the import's lists matter to upserts only (a removal's lists are the
    // message's own: CC refuses an unknown one, and the message is dead-lettered with its text).
    let (entries, cf_ids) = if action == Action::Upsert {
        match resolve_custom_fields(&ctx, &settler, &account, entries, deadline).await {
            Ok(v) => v,
            Err((rest, stop)) => return settle_stop(&settler, rest, stop).await,
        }
    } else {
        (entries, HashMap::new())
    };
    let entries = if action == Action::Upsert {
        match super::lists::check(&ctx, &settler, &account, &lists, entries, deadline).await {
            Ok(v) => v,
            Err((rest, stop)) => return settle_stop(&settler, rest, stop).await,
        }
    } else {
        entries
    };
    let job = Job {
        ctx: &ctx,
        settler: &settler,
        account: &account,
        cf_ids: &cf_ids,
        deadline,
    };
    let ledger = ctx.ledger.clone();
    // Claim the emails in the shared ledger; send what is free, retry what another import carries
    // once this one has settled (see `crate::ledger`).
    let mut pending = entries;
    let mut round = 0u32;
    // Each claimed round is a claim of its own (`<batch id>.<n>`): releasing one is a single
    // `DEL` of its liveness key (`Ledger::release`), which must not free a later round's emails
    // or an earlier round's import still followed by `watch_abandoned`. A failed claim keeps its
    // owner, so its retry renews what it may have taken.
    let mut claimed = 0u32;
    while !pending.is_empty() {
        let owner = format!("{batch_id}.{claimed}");
        let (go, busy) = match claim(
            &settler, &ledger, &owner, &account, action, consent, pending,
        )
        .await
        {
            Ok(v) => {
                claimed += 1;
                v
            }
            Err((rest, e)) => {
                tracing::warn!(error = %e, "cannot claim emails; retrying");
                if Instant::now() >= deadline {
                    return settle_stop(&settler, rest, Stop::Deadline).await;
                }
                backoff_sleep(round, deadline).await;
                round += 1;
                pending = rest;
                continue;
            }
        };
        let emails: Vec<String> = go.iter().map(|e| e.item.email.clone()).collect();
        let inflight = InFlight::default();
        let pause = if go.is_empty() {
            None
        } else {
            // The claim holds for as long as the import is in flight, however long CC takes:
            // renewed every third of its lease until the group is settled.
            let renewing = renew_claims(&ledger, &owner, &account, &emails);
            tokio::select! {
                p = send_group(&job, action, go, &inflight) => p,
                never = renewing => match never {},
            }
        };
        match inflight.take() {
            // The deliveries went back to the queue (hold bound, pause) while CC still works on
            // their import: keep the claim until CC settles it, so a newer event for these
            // emails cannot land before it.
            Some(activity) => {
                tokio::spawn(watch_abandoned(
                    ctx.clone(),
                    ledger.clone(),
                    owner.clone(),
                    account.clone(),
                    emails,
                    activity,
                ));
            }
            None => release_claims(&ledger, &owner, &account, &emails).await,
        }
        if let Some(p) = pause {
            return settle_stop(&settler, busy, Stop::Pause(p)).await;
        }
        if !busy.is_empty() {
            if Instant::now() >= deadline {
                return settle_stop(&settler, busy, Stop::Deadline).await;
            }
            // The other import usually completes within seconds: look again soon.
            backoff_sleep(0, deadline).await;
            round += 1;
        }
        pending = busy;
    }
    None
}

/// What every part of one batch's journey shares.
struct Job<'a> {
    ctx: &'a Ctx,
    settler: &'a Settler,
    account: &'a str,
    /// CC's custom-field ids by name (upserts only).
    cf_ids: &'a HashMap<String, String>,
    /// The hold bound of the batch's oldest delivery.
    deadline: Instant,
}

async fn send_group(
    job: &Job<'_>,
    action: Action,
    entries: Chunk,
    inflight: &InFlight,
) -> Option<Pause> {
    if entries.is_empty() {
        return None;
    }
    let Job {
        ctx,
        settler,
        account,
        cf_ids,
        deadline,
    } = *job;
    match action {
        Action::Upsert => {
            send_upserts(ctx, settler, account, entries, cf_ids, deadline, inflight).await
        }
        Action::Unsubscribe => {
            super::consent::unsubscribe_each(ctx, settler, account, entries, deadline).await
        }
        Action::RemoveLists | Action::Delete => {
            super::consent::by_activity(ctx, settler, account, action, entries, deadline, inflight)
                .await
        }
    }
}

/// Upserts, by the lists and path each entry still has after its claim (a list removed later is
/// left out; an explicit one older than an opt-out goes through the import): one import per list
/// set, one `sign_up_form` per explicit contact. Without the ledger every entry has the batch's.
async fn send_upserts(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    entries: Chunk,
    cf_ids: &HashMap<String, String>,
    deadline: Instant,
    inflight: &InFlight,
) -> Option<Pause> {
    let mut parts: Vec<((Vec<uuid::Uuid>, Consent), Chunk)> = Vec::new();
    for e in entries {
        let k = (e.item.list_ids.clone(), e.item.consent);
        match parts.iter_mut().find(|(pk, _)| *pk == k) {
            Some((_, c)) => c.push(e),
            None => parts.push((k, vec![e])),
        }
    }
    let mut parts = parts.into_iter();
    while let Some(((lists, consent), chunk)) = parts.next() {
        let pause = match consent {
            Consent::Explicit => sign_up_each(ctx, settler, account, chunk, cf_ids, deadline).await,
            Consent::Implicit => {
                import_all(ctx, settler, account, &lists, chunk, deadline, inflight).await
            }
        };
        if let Some(p) = pause {
            let rest: Chunk = parts.flat_map(|(_, c)| c).collect();
            apply(settler, rest, Disposition::Requeue).await;
            return Some(p);
        }
    }
    None
}

async fn sign_up_each(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    entries: Chunk,
    cf_ids: &HashMap<String, String>,
    deadline: Instant,
) -> Option<Pause> {
    let mut it = entries.into_iter();
    while let Some(e) = it.next() {
        let res = call(ctx, account, CallKind::Upsert, deadline, |t| {
            let c = &e.item;
            async move { ctx.api.sign_up_form(&t, c, cf_ids).await }
        })
        .await;
        let d = match Disposition::of_one(res) {
            Ok(d) => d,
            Err(stop) => {
                let mut rest = vec![e];
                rest.extend(it);
                return settle_stop(settler, rest, stop).await;
            }
        };
        apply(settler, vec![e], d).await;
    }
    None
}

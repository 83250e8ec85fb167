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
//!   ([`MAX_FINDING_IMPORTS`]) and per UTC day ([`super::ctx::FINDING_PER_DAY`]); past either cap
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
use std::time::Duration;

use tokio::time::Instant;

use super::ContactBatch;
use crate::cc::api::{ActivityState, Api};
use crate::contact::{Action, Consent, Contact, Reason, unix_ms};
use crate::ledger::{Event, Kind, Ledger, Outcome};
use crate::queue::Settler;
use crate::ratelimit::CallKind;
use crate::telemetry::metrics;

use super::call::{Stop, backoff_sleep, call};
use super::ctx::*;
use super::fields::resolve_custom_fields;
use super::settle::{Chunk, Disposition, apply, halves, settle_stop};

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
    owner: String,
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
    let Some(ledger) = ctx.ledger.clone() else {
        return send_group(
            &ctx,
            &settler,
            &account,
            action,
            entries,
            &cf_ids,
            deadline,
            &InFlight::default(),
        )
        .await;
    };
    // Claim the emails in the shared ledger; send what is free, retry what another import carries
    // once this one has settled (see `crate::ledger`).
    let mut pending = entries;
    let mut round = 0u32;
    while !pending.is_empty() {
        let (go, busy) = match claim(&ledger, &owner, &account, action, consent, pending).await {
            Ok(v) => v,
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
                p = send_group(
                    &ctx, &settler, &account, action, go, &cf_ids, deadline, &inflight,
                ) => p,
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

/// The import a batch has in flight at CC (a batch sends its chunks one at a time), if any.
#[derive(Default)]
pub(super) struct InFlight(std::sync::Mutex<Option<String>>);

impl InFlight {
    pub(super) fn set(&self, activity: Option<String>) {
        *self.0.lock().expect("not poisoned") = activity;
    }
    fn take(&self) -> Option<String> {
        self.0.lock().expect("not poisoned").take()
    }
}

/// Renew `owner`'s claims on `emails` every third of the lease; never returns (drop it).
async fn renew_claims(
    ledger: &Ledger,
    owner: &str,
    account: &str,
    emails: &[String],
) -> std::convert::Infallible {
    let refs: Vec<(&str, &str)> = emails.iter().map(|e| (account, e.as_str())).collect();
    let every = ledger.lease() / 3;
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = ledger.renew(owner, &refs).await {
            tracing::warn!(error = %e, "cannot renew ledger claims; retrying at the next tick");
        }
    }
}

async fn release_claims(ledger: &Ledger, owner: &str, account: &str, emails: &[String]) {
    let refs: Vec<(&str, &str)> = emails.iter().map(|e| (account, e.as_str())).collect();
    if let Err(e) = ledger.release(owner, &refs).await {
        tracing::warn!(error = %e, "cannot release ledger leases; they expire on their own");
    }
}

/// How long an abandoned import is followed before its claim is let go anyway: CC takes minutes
/// for a 40,000-row import; one that is not done after a day is not coming.
const ABANDONED_WATCH: Duration = Duration::from_secs(24 * 3600);

/// Follow an import whose deliveries were requeued (hold bound, pause) until CC settles it,
/// holding its claims meanwhile; then release them. Polls at `worker.poll_max_ms` through the
/// shared budget; an activity CC no longer knows (404) or a dead connection ends the watch.
async fn watch_abandoned(
    ctx: Arc<Ctx>,
    ledger: Arc<Ledger>,
    owner: String,
    account: String,
    emails: Vec<String>,
    activity: String,
) {
    let watch = async {
        let started = Instant::now();
        let every = ctx.worker.poll_max;
        while started.elapsed() < ABANDONED_WATCH {
            tokio::time::sleep(every).await;
            if ctx.outage.is_down() {
                // No polls into an outage; the claim is renewed meanwhile.
                continue;
            }
            let deadline = Instant::now() + every.max(Duration::from_secs(60));
            let st = call(&ctx, &account, CallKind::Poll, deadline, |t| {
                let id = activity.clone();
                let ctx = &ctx;
                async move { ctx.api.activity(&t, &id).await }
            })
            .await;
            match st {
                Ok(st) if st.state.is_terminal() => return,
                Ok(_) | Err(Stop::Deadline) | Err(Stop::Busy) | Err(Stop::Pause(_)) => {}
                // The account's connection died meanwhile: the claim lapses with the watch (a
                // new login re-sends the parked messages; imports are upserts).
                Err(Stop::Park(_)) | Err(Stop::UnknownAccount(_)) => return,
                // CC no longer knows it (or refuses the poll for good): nothing left to wait for.
                Err(Stop::UnknownActivity) | Err(Stop::Reject(_)) | Err(Stop::Envelope(_)) => {
                    return;
                }
            }
        }
    };
    tracing::info!(
        account,
        activity_id = %activity,
        contacts = emails.len(),
        "holding the claims of an import whose messages were requeued until CC settles it"
    );
    tokio::select! {
        () = watch => {}
        never = renew_claims(&ledger, &owner, &account, &emails) => match never {},
    }
    release_claims(&ledger, &owner, &account, &emails).await;
}

#[allow(clippy::too_many_arguments)]
async fn send_group(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    action: Action,
    entries: Chunk,
    cf_ids: &HashMap<String, String>,
    deadline: Instant,
    inflight: &InFlight,
) -> Option<Pause> {
    if entries.is_empty() {
        return None;
    }
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

/// Claim entries of one action in the ledger. Returns (send now, busy elsewhere); what a newer
/// event made moot is settled here as superseded. Sent entries are stripped of stale fields and
/// lists, and an explicit upsert older than a known opt-out is turned to the import path.
async fn claim(
    ledger: &Ledger,
    owner: &str,
    account: &str,
    action: Action,
    consent: Consent,
    entries: Chunk,
) -> Result<(Chunk, Chunk), (Chunk, crate::ledger::LedgerError)> {
    let kind = match action {
        Action::Upsert => Kind::Upsert {
            explicit: consent == Consent::Explicit,
        },
        Action::Unsubscribe => Kind::Unsubscribe,
        Action::RemoveLists => Kind::RemoveLists,
        Action::Delete => Kind::Delete,
    };
    let outcomes = {
        let items: Vec<Event> = entries
            .iter()
            .map(|e| Event {
                account,
                email: e.item.email.as_str(),
                kind,
                occurred_at: unix_ms(e.item.occurred_at),
                fields: e.item.field_stamps(),
                lists: &e.item.list_ids,
            })
            .collect();
        match ledger.claim_events(owner, &items).await {
            Ok(v) => v,
            Err(e) => return Err((entries, e)),
        }
    };
    let (mut go, mut busy, mut moot) = (Vec::new(), Vec::new(), Vec::new());
    let (mut stale_fields, mut blocked) = (0, 0u64);
    for (mut e, o) in entries.into_iter().zip(outcomes) {
        let g = match o {
            Outcome::Busy => {
                busy.push(e);
                continue;
            }
            Outcome::Go(g) => g,
        };
        stale_fields += g.stale_fields.len();
        e.item.fields.drop_named(&g.stale_fields);
        e.item.list_ids.retain(|l| !g.stale_lists.contains(l));
        if g.signup_blocked {
            // Never a machine re-subscribe (issue 15): sign_up_form would set explicit
            // permission on a contact who opted out after this consent was given (reference
            // §5.1); its fields may still be imported, which never changes permission.
            e.item.consent = Consent::Implicit;
            blocked += 1;
        }
        let nothing_left =
            matches!(action, Action::Upsert | Action::RemoveLists) && e.item.list_ids.is_empty();
        if g.superseded || nothing_left {
            moot.push(e);
        } else {
            go.push(e);
        }
    }
    if blocked > 0 {
        metrics()
            .resubscribes_prevented
            .with_label_values(&[account])
            .inc_by(blocked);
        tracing::info!(
            account,
            contacts = blocked,
            "explicit consent older than the contact's latest opt-out: not sent through sign_up_form (its fields go through the import)"
        );
    }
    tracing::debug!(
        account,
        go = go.len(),
        busy = busy.len(),
        superseded = moot.len(),
        stale_fields,
        "claimed emails in the ordering ledger"
    );
    if !moot.is_empty() {
        // Their claims are released with the group's (this owner holds them).
        apply_superseded(ledger, owner, account, moot).await;
    }
    Ok((go, busy))
}

async fn apply_superseded(ledger: &Ledger, owner: &str, account: &str, moot: Chunk) {
    let emails: Vec<String> = moot.iter().map(|e| e.item.email.clone()).collect();
    // Settled without a CC call: ack, then let the claims go at once.
    super::settle::ack_superseded_chunk(moot).await;
    release_claims(ledger, owner, account, &emails).await;
}

/// Imports a batch may spend, beyond its first, finding the rows CC did not take.
pub(super) const MAX_FINDING_IMPORTS: u32 = 32;

async fn import_all(
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
        metrics().batch_size.observe(chunk.len() as f64);
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
                "CC did not take every row and this batch spent its imports for finding them; requeueing the rest"
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
        metrics()
            .activity_duration
            .observe(started.elapsed().as_secs_f64());
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

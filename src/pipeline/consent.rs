//! The consent actions (issue 15, DESIGN §5.1b), after their ledger claim (`super::sender`):
//!
//! * `contact.unsubscribe`: one look-up (`GET /contacts?email=`, non-deleted contacts) and one
//!   `PUT /contacts/{id}` that repeats the top-level properties it read and sets
//!   `permission_to_send = unsubscribed` with the reason (a PUT nulls what it leaves out,
//!   reference §5.3). Already unsubscribed: nothing to send. **CC does not have the contact**
//!   (never imported, or deleted): nothing is written to CC (creating a contact only to
//!   unsubscribe it would put an address into CC that CC never had); the ledger records a floor
//!   instead ([`crate::ledger::Ledger::record_floor`]), so an upsert older than the unsubscribe
//!   can never create the contact (with implicit permission) afterwards. An upsert newer than
//!   it is the person's newer business and goes through as usual.
//! * `contact.remove_lists` / `contact.delete`: one look-up per contact for its id (CC's bulk
//!   activities take contact ids, reference §6.2, §6.3), then one activity per 500 ids (per list
//!   set for removals), followed to a terminal state like an import. A contact CC does not have
//!   has nothing to remove or delete: acked.
//!
//! Outcomes map onto deliveries as for imports: a terminal `completed` acks; `failed` and an
//! activity CC forgets are retried three times, then requeued without blame; a refusal of the
//! content (400) dead-letters the messages with CC's text; a pause or the hold bound requeues.

use tokio::time::Instant;

use crate::cc::api::{ActivityState, ActivityStatus, ContactRecord};
use crate::contact::{Action, Reason, unix_ms};
use crate::queue::Settler;
use crate::ratelimit::CallKind;
use crate::telemetry::metrics;

use super::call::{Stop, backoff_sleep, call};
use super::claims::InFlight;
use super::ctx::{Ctx, Pause};
use super::settle::{Chunk, Disposition, apply, settle_stop};

/// Contacts CC has, with their ids, each with its entry.
type Found = Vec<(String, Chunk)>;

/// CC's limit on `contact_ids` per bulk activity (reference §6.2, §6.3, §11).
pub(crate) const MAX_IDS_PER_ACTIVITY: usize = 500;

/// Look up one contact through the gate (one `GET /contacts?email=`, a look-up call).
async fn look_up(
    ctx: &Ctx,
    account: &str,
    email: &str,
    deadline: Instant,
) -> Result<Option<ContactRecord>, Stop> {
    call(ctx, account, CallKind::Lookup, deadline, |t| async move {
        ctx.api.contact_record(&t, email).await
    })
    .await
}

/// One unsubscribe: its look-up, then the PUT when CC has the contact and it is not already
/// unsubscribed; a contact CC does not have gets a ledger floor instead (see the module docs).
async fn unsubscribe_one(
    ctx: &Ctx,
    account: &str,
    c: &crate::contact::Contact,
    deadline: Instant,
) -> Result<Disposition, Stop> {
    let rec = match look_up(ctx, account, &c.email, deadline).await {
        Ok(rec) => rec,
        Err(stop) => return Disposition::of_one(Err(stop)),
    };
    match rec {
        None => {
            let floor = ctx
                .ledger
                .record_floor(account, &c.email, unix_ms(c.occurred_at))
                .await;
            Ok(match floor {
                Ok(()) => {
                    tracing::debug!(
                        account,
                        "unsubscribe of a contact CC does not have: recorded, nothing sent"
                    );
                    Disposition::Ack
                }
                Err(err) => {
                    tracing::warn!(account, error = %err, "cannot record the unsubscribe of a contact CC does not have; requeueing");
                    Disposition::Requeue
                }
            })
        }
        Some(rec) if rec.permission == "unsubscribed" => Ok(Disposition::Ack),
        Some(rec) => {
            let reason = c.reason.as_deref().map(|r| &**r);
            let put = call(ctx, account, CallKind::Upsert, deadline, |t| {
                let rec = &rec;
                async move { ctx.api.unsubscribe(&t, rec, reason).await }
            })
            .await;
            Disposition::of_one(put)
        }
    }
}

/// Unsubscribe each entry (see the module docs); returns a pause when the worker must stop.
pub(super) async fn unsubscribe_each(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    entries: Chunk,
    deadline: Instant,
) -> Option<Pause> {
    let mut it = entries.into_iter();
    while let Some(e) = it.next() {
        let d = match unsubscribe_one(ctx, account, &e.item, deadline).await {
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

/// `contact.remove_lists` or `contact.delete` by bulk activity: look up the ids, then one
/// activity per 500 ids (per list set for removals).
pub(super) async fn by_activity(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    action: Action,
    entries: Chunk,
    deadline: Instant,
    inflight: &InFlight,
) -> Option<Pause> {
    // Look up every contact's id; a contact CC does not have is done already.
    let mut found: Found = Vec::new();
    let mut absent: Chunk = Vec::new();
    let mut it = entries.into_iter();
    while let Some(e) = it.next() {
        match look_up(ctx, account, &e.item.email, deadline).await {
            Ok(Some(rec)) => found.push((rec.contact_id, vec![e])),
            Ok(None) => absent.push(e),
            // A refused look-up dead-letters its entry, a busy one requeues it (as for one
            // entry sent on its own); any other stop ends the chunk.
            Err(stop) => match Disposition::of_one(Err(stop)) {
                Ok(d) => apply(settler, vec![e], d).await,
                Err(stop) => {
                    let mut rest = vec![e];
                    rest.extend(it);
                    rest.extend(found.into_iter().flat_map(|(_, c)| c));
                    apply(settler, absent, Disposition::Ack).await;
                    return settle_stop(settler, rest, stop).await;
                }
            },
        }
    }
    if !absent.is_empty() {
        tracing::debug!(
            account,
            contacts = absent.len(),
            "CC does not have these contacts: nothing to remove or delete"
        );
        apply(settler, absent, Disposition::Ack).await;
    }
    // One activity per list set (removals) and per 500 ids.
    let mut parts: Vec<(Vec<uuid::Uuid>, Found)> = Vec::new();
    for (id, chunk) in found {
        let lists = if action == Action::RemoveLists {
            chunk[0].item.list_ids.clone()
        } else {
            Vec::new()
        };
        match parts
            .iter_mut()
            .find(|(l, v)| *l == lists && v.len() < MAX_IDS_PER_ACTIVITY)
        {
            Some((_, v)) => v.push((id, chunk)),
            None => parts.push((lists, vec![(id, chunk)])),
        }
    }
    let mut parts = parts.into_iter();
    while let Some((lists, part)) = parts.next() {
        let ids: Vec<String> = part.iter().map(|(id, _)| id.clone()).collect();
        let chunk: Chunk = part.into_iter().flat_map(|(_, c)| c).collect();
        let mut tries = 0u32;
        let d = loop {
            match run_activity(ctx, account, action, &ids, &lists, deadline, inflight).await {
                Ok(st) if st.state == ActivityState::Completed => break Disposition::Ack,
                Ok(st) => {
                    tracing::warn!(account, state = ?st.state, "CC's {} activity ended without completing; retrying", action.message_type());
                }
                Err(Stop::UnknownActivity) => {
                    tracing::warn!(account, "CC no longer knows the activity; sending it again");
                }
                Err(Stop::Reject(text)) => {
                    break Disposition::DeadLetter {
                        reason: Reason::RejectedByCc,
                        detail: text,
                    };
                }
                Err(Stop::Envelope(text)) => {
                    break Disposition::DeadLetter {
                        reason: Reason::RejectedByCc,
                        detail: text,
                    };
                }
                Err(stop) => {
                    let mut rest = chunk;
                    rest.extend(
                        parts
                            .by_ref()
                            .flat_map(|(_, p)| p.into_iter().flat_map(|(_, c)| c)),
                    );
                    return settle_stop(settler, rest, stop).await;
                }
            }
            if tries >= 3 {
                break Disposition::Requeue;
            }
            backoff_sleep(tries, deadline).await;
            tries += 1;
        };
        apply(settler, chunk, d).await;
    }
    None
}

/// Create one removal or delete activity and follow it to a terminal state.
async fn run_activity(
    ctx: &Ctx,
    account: &str,
    action: Action,
    ids: &[String],
    lists: &[uuid::Uuid],
    deadline: Instant,
    inflight: &InFlight,
) -> Result<ActivityStatus, Stop> {
    let created = call(ctx, account, CallKind::Import, deadline, |t| async move {
        match action {
            Action::RemoveLists => ctx.api.remove_from_lists(&t, ids, lists).await,
            _ => ctx.api.delete_contacts(&t, ids).await,
        }
    })
    .await?;
    let started = Instant::now();
    let id = created.activity_id;
    inflight.set(Some(id.clone()));
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
        if st.state.is_terminal() {
            inflight.set(None);
            metrics().activity_finished(started.elapsed());
            tracing::info!(account, activity_id = %id, state = ?st.state, contacts = ids.len(), done = st.items_completed, "{} activity finished", action.message_type());
            return Ok(st);
        }
    }
}

//! Settling deliveries, in one place: the sender reports a [`Disposition`] per entry (ack;
//! requeue without blame; dead-letter with a reason) and [`apply`] carries it out, with the
//! metrics and the log line.

use super::{ContactBatch, Held};
use crate::batch::Entry;
use crate::contact::{Contact, Reason};
use crate::queue::{Requeued, Settler, Tag};
use crate::telemetry::metrics;

use super::call::Stop;
use super::ctx::*;

pub(super) type Chunk = Vec<Entry<Contact, Held>>;

pub(super) fn halves(mut chunk: Chunk) -> [Chunk; 2] {
    let b = chunk.split_off(chunk.len() / 2);
    [chunk, b]
}

/// What becomes of a chunk's deliveries.
#[derive(Debug)]
pub(super) enum Disposition {
    /// CC has the data.
    Ack,
    /// Not now, and not the message's fault (CC down or slow, a pause, the hold bound, CC busy):
    /// back to the queue, never counted toward a redelivery limit.
    Requeue,
    /// The message itself cannot be synced: to `<queue>.dlx` with a reason and one sentence.
    DeadLetter { reason: Reason, detail: String },
    /// The account's connection is dead: to `<queue>.parked.<account>` until a login.
    Park { account: String },
}

impl Disposition {
    /// The fate of one entry sent on its own (a `sign_up_form`, an unsubscribe's look-up or
    /// PUT): sent → ack; CC refused the content → dead letter; CC kept answering 409 → requeue.
    /// Any other stop ends the whole chunk ([`settle_stop`]) and is handed back.
    pub(super) fn of_one(res: Result<(), Stop>) -> Result<Disposition, Stop> {
        match res {
            Ok(()) => Ok(Disposition::Ack),
            Err(Stop::Reject(text)) => Ok(Disposition::DeadLetter {
                reason: Reason::RejectedByCc,
                detail: text,
            }),
            Err(Stop::Busy) => Ok(Disposition::Requeue),
            Err(stop) => Err(stop),
        }
    }
}

/// Carry out one disposition for every delivery of `chunk`.
pub(super) async fn apply(settler: &Settler, chunk: Chunk, d: Disposition) {
    match d {
        Disposition::Ack => ack_all(chunk).await,
        Disposition::Requeue => requeue(settler, chunk).await,
        Disposition::Park { account } => park(settler, &account, chunk).await,
        Disposition::DeadLetter { reason, detail } => {
            for e in chunk {
                for h in e.tags {
                    dead_letter(settler, &h.tag, &h.body, reason, &detail).await;
                }
            }
        }
    }
}

/// A stop that ends a chunk's journey: its deliveries go back to the queue without blame (a
/// pause, the hold bound, CC busy); a pause is handed to the worker.
pub(super) async fn settle_stop(settler: &Settler, rest: Chunk, stop: Stop) -> Option<Pause> {
    let n = rest.len();
    let pause = match stop {
        Stop::Park(account) => {
            apply(settler, rest, Disposition::Park { account }).await;
            return None;
        }
        Stop::UnknownAccount(account) => {
            let d = Disposition::DeadLetter {
                reason: Reason::UnknownAccount,
                detail: format!(
                    "no CC account '{account}' was ever authorized; run `ccsync auth login --account {account}`, then replay this message"
                ),
            };
            apply(settler, rest, d).await;
            return None;
        }
        Stop::Pause(p) => Some(p),
        Stop::Deadline => {
            tracing::warn!(
                contacts = n,
                "hold bound reached before CC completed; requeueing without blame"
            );
            None
        }
        other => {
            tracing::warn!(contacts = n, stop = ?other, "requeueing without blame");
            None
        }
    };
    apply(settler, rest, Disposition::Requeue).await;
    pause
}

async fn ack_all(chunk: Chunk) {
    let m = metrics();
    let entries = chunk.len() as u64;
    let account = chunk_account(&chunk);
    let deliveries: usize = chunk.iter().map(|e| e.tags.len()).sum();
    let tags: Vec<Tag> = chunk
        .into_iter()
        .flat_map(|e| e.tags.into_iter().map(|h| h.tag))
        .collect();
    for err in Tag::ack_many(&tags).await {
        tracing::warn!(error = %err, "ack failed; the broker will redeliver (safe: imports are upserts)");
    }
    m.contacts_synced.inc_by(entries);
    m.settled("synced", &account, entries);
    m.settled(
        "superseded",
        &account,
        (deliveries as u64).saturating_sub(entries),
    );
}

/// The account of a chunk's contacts (a batch holds one account's contacts).
fn chunk_account(chunk: &Chunk) -> String {
    chunk
        .first()
        .map(|e| e.item.account.clone())
        .unwrap_or_default()
}

/// Ack deliveries a newer event made moot (a newer delete, opt-in or re-added list decided what
/// CC holds): no CC call, outcome `superseded`.
pub(super) async fn ack_superseded_chunk(chunk: Chunk) {
    let account = chunk_account(&chunk);
    let tags: Vec<Tag> = chunk
        .into_iter()
        .flat_map(|e| e.tags.into_iter().map(|h| h.tag))
        .collect();
    let n = tags.len() as u64;
    for err in Tag::ack_many(&tags).await {
        tracing::warn!(error = %err, "ack failed; the broker will redeliver (the ledger supersedes it again)");
    }
    metrics().settled("superseded", &account, n);
}

/// Give deliveries back to the queue without blame: a confirmed copy at the back of the queue,
/// then the original acked, so the broker's delivery count starts again (RabbitMQ 4.x drops a
/// message returned more than its delivery limit; docs/operations.md "Delivery limits"). Where
/// the copy cannot be published the original is nack-requeued instead: never lost.
async fn requeue(settler: &Settler, chunk: Chunk) {
    let account = chunk_account(&chunk);
    let held: Vec<Held> = chunk.into_iter().flat_map(|e| e.tags).collect();
    // Many at once pipeline their publishes; bounded so one huge chunk is not one huge frame run.
    for part in held.chunks(1_000) {
        let pairs: Vec<(&Tag, &[u8])> = part.iter().map(|h| (&h.tag, h.body.as_slice())).collect();
        let mut counted = 0u64;
        let mut back = 0u64;
        for r in settler.requeue_blameless_many(&pairs).await {
            match r {
                Ok(Requeued::Blameless) => back += 1,
                Ok(Requeued::Counted) => {
                    back += 1;
                    counted += 1;
                }
                Ok(Requeued::AlreadySettled) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "requeue failed; the broker returns the message when the channel closes")
                }
            }
        }
        metrics().settled("requeued", &account, back);
        if counted > 0 {
            tracing::warn!(
                counted,
                "could not re-publish some requeued messages; nack-requeued them instead (the broker counts those returns)"
            );
        }
    }
}

/// Park deliveries in their account's parking queue (see [`crate::parking`]); a delivery that
/// cannot be parked stays held and returns to the queue when the channel closes.
pub(super) async fn park(settler: &Settler, account: &str, chunk: Chunk) {
    let held: Vec<Held> = chunk.into_iter().flat_map(|e| e.tags).collect();
    park_held(settler, account, &held).await;
}

/// [`park`] for deliveries not yet in a batch.
pub(super) async fn park_held(settler: &Settler, account: &str, held: &[Held]) {
    for part in held.chunks(1_000) {
        let pairs: Vec<(&Tag, &[u8])> = part.iter().map(|h| (&h.tag, h.body.as_slice())).collect();
        let mut parked = 0u64;
        for r in settler.park_many(account, &pairs).await {
            match r {
                Ok(()) => parked += 1,
                Err(e) => {
                    tracing::warn!(account, error = %e, "cannot park a message; it returns to the queue when the channel closes")
                }
            }
        }
        metrics().settled("parked", account, parked);
    }
}

/// Requeue every delivery of a batch that was never sent (shutdown, pause).
pub async fn requeue_batch(settler: &Settler, b: ContactBatch) {
    apply(settler, b.entries, Disposition::Requeue).await;
}

/// Dead-letter one delivery; a failure leaves it unsettled (the broker redelivers it).
pub async fn dead_letter(settler: &Settler, tag: &Tag, body: &[u8], reason: Reason, detail: &str) {
    let m = metrics();
    // The message id when the body has one (never the email).
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<String>,
        account: Option<String>,
    }
    let (message_id, account) = serde_json::from_slice::<IdOnly>(body)
        .ok()
        .map(|m| (m.id.unwrap_or_default(), m.account.unwrap_or_default()))
        .unwrap_or_default();
    let reason = reason.as_str();
    match settler.dead_letter(tag, body, reason, detail).await {
        Ok(()) => {
            m.settled("dead_lettered", &account, 1);
            m.dead_letters.with_label_values(&[reason]).inc();
            tracing::info!(
                outcome = "dead_lettered",
                message_id = %message_id,
                reason,
                detail,
                "message dead-lettered"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, reason, "dead-letter publish failed; the message stays in the queue")
        }
    }
}

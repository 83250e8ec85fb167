//! Settling deliveries, in one place: the sender reports a [`Disposition`] per entry (ack;
//! superseded; requeue without blame; dead-letter with a reason; park) and [`apply`] carries it
//! out, with the metrics and the log line. Nothing else in the pipeline acks, requeues,
//! dead-letters or parks a delivery.

use super::Held;
use super::call::Stop;
use super::ctx::Pause;
use crate::batch::Entry;
use crate::contact::{Action, Contact, Reason};
use crate::queue::{Requeued, Settler, Tag};
use crate::telemetry::metrics;

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
    /// A newer event made it moot (a newer delete, opt-in or re-added list decided what CC
    /// holds): acked without a CC call, outcome `superseded`.
    Superseded,
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
    /// Any other stop ends the whole chunk ([`Disposition::of_stop`]) and is handed back.
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

    /// The fate of what a stop leaves unsent, and the pause to hand to the worker: a dead
    /// connection parks; an account nobody authorized dead-letters `unknown_account`; anything
    /// else (a pause, the hold bound, CC busy) goes back to the queue without blame.
    pub(super) fn of_stop(stop: Stop) -> (Disposition, Option<Pause>) {
        match stop {
            Stop::Park(account) => (Disposition::Park { account }, None),
            Stop::UnknownAccount(account) => (
                Disposition::DeadLetter {
                    reason: Reason::UnknownAccount,
                    detail: format!(
                        "no CC account '{account}' was ever authorized; run `ccsync auth login --account {account}`, then replay this message"
                    ),
                },
                None,
            ),
            Stop::Pause(p) => (Disposition::Requeue, Some(p)),
            _ => (Disposition::Requeue, None),
        }
    }

    /// The fate of an entry its ledger claim made moot (`None`: it is sent): a newer event
    /// superseded it, or an upsert or list removal has no list left once the lists a newer
    /// event removed or re-added are taken out.
    pub(super) fn of_claim(action: Action, superseded: bool, lists_left: usize) -> Option<Self> {
        let nothing_left =
            matches!(action, Action::Upsert | Action::RemoveLists) && lists_left == 0;
        (superseded || nothing_left).then_some(Disposition::Superseded)
    }
}

/// The deliveries one disposition applies to: a chunk's (its entries coalesced repeats of one
/// email), or a single delivery not yet in a batch.
pub(super) struct Deliveries {
    /// The `account` label of the outcome metrics.
    account: String,
    /// Contacts (coalesced entries) the deliveries stand for.
    entries: usize,
    held: Vec<Held>,
}

impl Deliveries {
    /// One delivery on its own (`account`: its CC account when known).
    pub(super) fn one(account: &str, h: Held) -> Deliveries {
        Deliveries {
            account: account.to_string(),
            entries: 1,
            held: vec![h],
        }
    }
}

impl From<Chunk> for Deliveries {
    fn from(chunk: Chunk) -> Deliveries {
        // A batch holds one account's contacts.
        let account = chunk
            .first()
            .map(|e| e.item.account.clone())
            .unwrap_or_default();
        Deliveries {
            account,
            entries: chunk.len(),
            held: chunk.into_iter().flat_map(|e| e.tags).collect(),
        }
    }
}

/// Carry out one disposition for every delivery of `what`: the one place deliveries are settled.
pub(super) async fn apply(settler: &Settler, what: impl Into<Deliveries>, d: Disposition) {
    let Deliveries {
        account,
        entries,
        held,
    } = what.into();
    match d {
        Disposition::Ack => {
            let deliveries = held.len() as u64;
            ack(
                held,
                "ack failed; the broker will redeliver (safe: imports are upserts)",
            )
            .await;
            let m = metrics();
            let entries = entries as u64;
            m.contacts_synced(entries);
            m.settled("synced", &account, entries);
            m.settled("superseded", &account, deliveries.saturating_sub(entries));
        }
        Disposition::Superseded => {
            let n = held.len() as u64;
            ack(
                held,
                "ack failed; the broker will redeliver (the ledger supersedes it again)",
            )
            .await;
            metrics().settled("superseded", &account, n);
        }
        Disposition::Requeue => requeue(settler, &account, &held).await,
        Disposition::Park { account } => park(settler, &account, &held).await,
        Disposition::DeadLetter { reason, detail } => {
            for h in held {
                dead_letter(settler, &h.tag, &h.body, reason, &detail).await;
            }
        }
    }
}

/// A stop that ends a chunk's journey: its deliveries go where [`Disposition::of_stop`] says; a
/// pause is handed to the worker.
pub(super) async fn settle_stop(settler: &Settler, rest: Chunk, stop: Stop) -> Option<Pause> {
    let n = rest.len();
    match &stop {
        Stop::Deadline => tracing::warn!(
            contacts = n,
            "hold bound reached before CC completed; requeueing without blame"
        ),
        Stop::Park(_) | Stop::UnknownAccount(_) | Stop::Pause(_) => {}
        other => tracing::warn!(contacts = n, stop = ?other, "requeueing without blame"),
    }
    let (d, pause) = Disposition::of_stop(stop);
    apply(settler, rest, d).await;
    pause
}

/// Ack deliveries (through the ack window); a failure is logged with `failed`.
async fn ack(held: Vec<Held>, failed: &str) {
    let tags: Vec<Tag> = held.into_iter().map(|h| h.tag).collect();
    for err in Tag::ack_many(&tags).await {
        tracing::warn!(error = %err, "{failed}");
    }
}

/// Give deliveries back to the queue without blame: a confirmed copy at the back of the queue,
/// then the original acked, so the broker's delivery count starts again (RabbitMQ 4.x drops a
/// message returned more than its delivery limit; docs/operations.md "Delivery limits"). Where
/// the copy cannot be published the original is nack-requeued instead: never lost.
async fn requeue(settler: &Settler, account: &str, held: &[Held]) {
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
        metrics().settled("requeued", account, back);
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
async fn park(settler: &Settler, account: &str, held: &[Held]) {
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

/// Dead-letter one delivery; a failure leaves it unsettled (the broker redelivers it).
async fn dead_letter(settler: &Settler, tag: &Tag, body: &[u8], reason: Reason, detail: &str) {
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
            m.dead_lettered(reason);
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

#[cfg(test)]
mod tests {
    use super::{Disposition, Stop};
    use crate::contact::{Action, Reason};
    use crate::pipeline::Pause;

    #[test]
    fn one_entry_sent_acks_a_rejection_dead_letters_it_and_409s_requeue_it() {
        assert!(matches!(Disposition::of_one(Ok(())), Ok(Disposition::Ack)));
        match Disposition::of_one(Err(Stop::Reject("email_address: invalid".into()))) {
            Ok(Disposition::DeadLetter { reason, detail }) => {
                assert_eq!(reason, Reason::RejectedByCc);
                assert_eq!(detail, "email_address: invalid", "CC's text travels along");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Disposition::of_one(Err(Stop::Busy)),
            Ok(Disposition::Requeue)
        ));
        // Anything else ends the whole chunk: handed back, not decided per entry.
        for stop in [
            Stop::Deadline,
            Stop::UnknownActivity,
            Stop::Park("a".into()),
        ] {
            assert!(Disposition::of_one(Err(stop)).is_err());
        }
    }

    #[test]
    fn a_stop_requeues_without_blame_parks_a_dead_account_and_hands_on_its_pause() {
        // CC down (5xx, timeouts): requeued, and the worker pauses.
        let outage = Pause::Outage {
            account: "a".into(),
        };
        match Disposition::of_stop(Stop::Pause(outage)) {
            (Disposition::Requeue, Some(Pause::Outage { account })) => assert_eq!(account, "a"),
            other => panic!("{other:?}"),
        }
        // The hold bound, CC busy, an activity CC forgot: requeued, no pause.
        for stop in [Stop::Deadline, Stop::Busy, Stop::UnknownActivity] {
            assert!(matches!(
                Disposition::of_stop(stop),
                (Disposition::Requeue, None)
            ));
        }
        // A dead connection (auth): parked in the account's queue, the worker goes on.
        match Disposition::of_stop(Stop::Park("shop".into())) {
            (Disposition::Park { account }, None) => assert_eq!(account, "shop"),
            other => panic!("{other:?}"),
        }
        // An account nobody authorized: dead-lettered with the reason and what to run.
        match Disposition::of_stop(Stop::UnknownAccount("ghost".into())) {
            (Disposition::DeadLetter { reason, detail }, None) => {
                assert_eq!(reason, Reason::UnknownAccount);
                assert!(
                    detail.contains("ccsync auth login --account ghost"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn superseded_entries_and_upserts_without_lists_ack_as_superseded() {
        let moot = |a, s, l| Disposition::of_claim(a, s, l);
        assert!(moot(Action::Upsert, false, 1).is_none(), "sent");
        assert!(matches!(
            moot(Action::Upsert, true, 1),
            Some(Disposition::Superseded)
        ));
        assert!(matches!(
            moot(Action::Upsert, false, 0),
            Some(Disposition::Superseded)
        ));
        assert!(matches!(
            moot(Action::RemoveLists, false, 0),
            Some(Disposition::Superseded)
        ));
        // Unsubscribes and deletes carry no lists: only a newer event makes them moot.
        assert!(moot(Action::Unsubscribe, false, 0).is_none());
        assert!(moot(Action::Delete, false, 0).is_none());
        assert!(matches!(
            moot(Action::Delete, true, 0),
            Some(Disposition::Superseded)
        ));
    }
}

//! One delivery as the consumer hands it out ([`Incoming`]) and its settle handle ([`Tag`]).

use std::collections::BTreeMap;

use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use lapin::types::{AMQPValue, FieldTable};

use super::window::{Slot, Unsettled};
use super::{QueueError, Settler};

/// One message taken from the queue, not yet settled.
pub struct Incoming {
    pub body: Vec<u8>,
    /// How often the broker delivered it before (quorum queues' `x-delivery-count`).
    pub delivery_count: u32,
    pub redelivered: bool,
    /// How often ccsync gave it back with [`Tag::requeue_blameless`] (`x-ccsync-requeues`);
    /// for logs, never a reason to give up on a message.
    pub requeues: u32,
    pub tag: Tag,
}

/// Settles one delivery. Dropping it unsettled leaves the message to the broker, which redelivers
/// it when the channel closes.
#[derive(Clone)]
pub struct Tag {
    pub(super) delivery_tag: u64,
    pub(super) unsettled: std::sync::Arc<Unsettled>,
    /// What a blameless requeue re-publishes besides the body (see [`Kept`]).
    pub(super) kept: Kept,
}

/// The headers of a delivery that [`Tag::requeue_blameless`] carries over, kept small: the
/// pipeline holds up to a whole prefetch window (65,535) of deliveries at once.
#[derive(Debug, Clone, Default)]
pub(super) struct Kept {
    /// `x-ccsync-requeues` as delivered (0 when absent).
    requeues: u32,
    /// Every other header except the broker's `x-delivery-count`, boxed, and only when there is
    /// one: ccsync's own publishers (`ccsync publish`, ingest, `dlq replay`) send none, so the
    /// common case costs 8 bytes.
    other: Option<Box<FieldTable>>,
}

/// The header counting blameless requeues (visibility only).
const REQUEUES_HEADER: &str = "x-ccsync-requeues";

impl Kept {
    fn from_headers(headers: Option<&FieldTable>) -> Kept {
        let Some(h) = headers else {
            return Kept::default();
        };
        let requeues = h.inner().get(REQUEUES_HEADER).and_then(as_u32).unwrap_or(0);
        let mut other = BTreeMap::new();
        for (k, v) in h.inner() {
            if k.as_str() != "x-delivery-count" && k.as_str() != REQUEUES_HEADER {
                other.insert(k.clone(), v.clone());
            }
        }
        Kept {
            requeues,
            other: (!other.is_empty()).then(|| Box::new(FieldTable::from(other))),
        }
    }

    /// The headers of the re-published copy: the kept ones and one more requeue.
    pub(super) fn republished(&self) -> FieldTable {
        let mut h = self.other.as_deref().cloned().unwrap_or_default();
        h.insert(
            REQUEUES_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(self.requeues.saturating_add(1))),
        );
        h
    }
}

/// A header's integer value (RabbitMQ sends `x-delivery-count` as a signed 64-bit `l`; other
/// publishers pick other widths).
fn as_u32(v: &AMQPValue) -> Option<u32> {
    match *v {
        AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(n).ok(),
        AMQPValue::ShortInt(n) => u32::try_from(n).ok(),
        AMQPValue::ShortShortInt(n) => u32::try_from(n).ok(),
        AMQPValue::LongUInt(n) => Some(n),
        AMQPValue::ShortUInt(n) => Some(u32::from(n)),
        AMQPValue::ShortShortUInt(n) => Some(u32::from(n)),
        _ => None,
    }
}

/// How [`Tag::requeue_blameless`] gave a delivery back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    /// A confirmed copy is in the queue and the original is acked: the broker counts nothing
    /// against it (`x-delivery-count` starts again).
    Blameless,
    /// The copy could not be published or was returned, so the original was nack-requeued as
    /// [`Tag::requeue`] does: it is back in the queue, and the broker counts that return.
    Counted,
    /// It was settled before (acked, requeued or dead-lettered): nothing was done.
    AlreadySettled,
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tag")
    }
}

impl Tag {
    /// CC has the data: remove the message from the queue (at once, or with the next run of
    /// older deliveries; see [`Unsettled`]).
    pub async fn ack(&self) -> Result<(), QueueError> {
        Tag::ack_many(std::slice::from_ref(self))
            .await
            .into_iter()
            .next()
            .map_or(Ok(()), Err)
    }

    /// Ack many deliveries (a completed import's): returns the failures.
    pub async fn ack_many(tags: &[Tag]) -> Vec<QueueError> {
        let mut errors = Vec::new();
        // Tags of one channel share one `Unsettled` (a reconnect starts a new channel).
        let mut rest: Vec<&Tag> = tags.iter().collect();
        while let Some(first) = rest.first().copied() {
            let (mine, others): (Vec<&Tag>, Vec<&Tag>) = rest
                .into_iter()
                .partition(|t| std::sync::Arc::ptr_eq(&t.unsettled, &first.unsettled));
            rest = others;
            let u = &first.unsettled;
            let mut open = u.open.lock().await;
            for t in mine {
                open.settle(t.delivery_tag);
            }
            errors.extend(open.flush(&u.channel, false).await);
        }
        errors
    }

    /// Whether the pipeline still holds this delivery (not acked, requeued or dead-lettered).
    pub(super) async fn is_held(&self) -> bool {
        let mut open = self.unsettled.open.lock().await;
        matches!(open.slot(self.delivery_tag), Some(Slot::Held))
    }

    /// Not now, and not the message's fault: give it back so that it never counts toward a
    /// delivery limit (the worker's `worker.max_redeliveries` or the broker's `x-delivery-limit`).
    ///
    /// A nack with requeue (what [`Tag::requeue`] does) makes a quorum queue count a return in
    /// `x-delivery-count` (RabbitMQ 3.10–4.2; 4.0+ drop or dead-letter a message at 20 by
    /// default). Instead this publishes a copy of `body` (the original body the pipeline holds) to
    /// the queue through the default exchange, as upstream does (persistent, `application/json`),
    /// with the delivery's headers except `x-delivery-count` and with `x-ccsync-requeues`
    /// incremented; `mandatory`, and only once the broker confirmed it is the original acked
    /// (through the ack window). If the copy is not confirmed (returned, nacked, channel error)
    /// the original is nack-requeued instead: never lost, but counted ([`Requeued::Counted`]).
    /// The copy joins the back of the queue.
    ///
    /// `Err` only when even the fallback nack failed: the channel is gone, and the broker returns
    /// the delivery by itself.
    pub async fn requeue_blameless(
        &self,
        settler: &Settler,
        body: &[u8],
    ) -> Result<Requeued, QueueError> {
        settler
            .requeue_blameless_many(&[(self, body)])
            .await
            .pop()
            .unwrap_or(Ok(Requeued::AlreadySettled))
    }

    /// How often ccsync gave this delivery back with [`Tag::requeue_blameless`].
    pub fn requeues(&self) -> u32 {
        self.kept.requeues
    }

    /// Not now: return the message to the queue for a later attempt.
    pub async fn requeue(&self) -> Result<(), QueueError> {
        let u = &self.unsettled;
        let mut open = u.open.lock().await;
        if let Some(s @ Slot::Held) = open.slot(self.delivery_tag) {
            *s = Slot::Gone;
            u.channel
                .basic_nack(
                    self.delivery_tag,
                    BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    },
                )
                .await?;
            // It may have been the one the settled deliveries behind it waited for.
            if let Some(e) = open.flush(&u.channel, false).await.into_iter().next() {
                return Err(e);
            }
        }
        Ok(())
    }
}

pub(super) fn incoming(d: Delivery, unsettled: &std::sync::Arc<Unsettled>) -> Incoming {
    let headers = d.properties.headers().as_ref();
    let delivery_count = headers
        .and_then(|h| h.inner().get("x-delivery-count"))
        .and_then(as_u32)
        .unwrap_or(0);
    let kept = Kept::from_headers(headers);
    Incoming {
        body: d.data,
        delivery_count,
        redelivered: d.redelivered,
        requeues: kept.requeues,
        tag: Tag {
            delivery_tag: d.delivery_tag,
            unsettled: unsettled.clone(),
            kept,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{AMQPValue, FieldTable, Kept};

    #[test]
    fn a_blameless_copy_drops_the_brokers_count_keeps_the_rest_and_counts_requeues() {
        assert!(Kept::from_headers(None).other.is_none());
        let mut h = FieldTable::default();
        h.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        let only_count = Kept::from_headers(Some(&h));
        assert!(
            only_count.other.is_none(),
            "nothing else to keep: no allocation"
        );
        h.insert("x-ccsync-requeues".into(), AMQPValue::LongInt(4));
        h.insert("x-upstream".into(), AMQPValue::LongString("kept".into()));
        let kept = Kept::from_headers(Some(&h));
        assert_eq!(kept.requeues, 4);
        let copy = kept.republished();
        let copy = copy.inner();
        assert_eq!(copy.get("x-delivery-count"), None);
        assert_eq!(
            copy.get("x-ccsync-requeues"),
            Some(&AMQPValue::LongLongInt(5))
        );
        assert_eq!(
            copy.get("x-upstream"),
            Some(&AMQPValue::LongString("kept".into()))
        );
    }
}

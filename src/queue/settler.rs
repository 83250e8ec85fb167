//! Settling by publishing: dead letters, blameless requeues, parking; and the mandatory,
//! confirmed publishes they (and `ccsync ingest`) rest on.

use std::collections::BTreeMap;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};

use super::topology::{parked_arguments, parked_options};
use super::{Broker, Publisher, QueueError, Requeued, Tag, Topology};
use crate::telemetry::Metrics;

/// Settles deliveries by publishing: dead letters to `<queue>.dlx` with a reason, blameless
/// requeues to `<queue>`. Each publish is `mandatory` and confirmed before the original is acked.
///
/// Why `mandatory`: without it the broker confirms a message no queue is bound for and drops it,
/// and the worker would then ack the original: lost. With it, an unroutable message comes back
/// (`basic.return`, before its confirm) and the original is not acked.
#[derive(Clone)]
pub struct Settler {
    pub(super) dl: Publisher,
    topology: Topology,
    /// One batch of mandatory publishes at a time on `dl` (see [`Settler::publish_mandatory`]).
    returns: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Where this settler records: the process-wide registry, unless a test gave it its own.
    metrics: &'static Metrics,
}

/// One mandatory publish.
struct Outgoing {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    headers: FieldTable,
}

impl Settler {
    /// A settler publishing on `dl` (a confirm-mode channel) for the queues of `topology`.
    pub(super) fn new(dl: Publisher, topology: &Topology) -> Settler {
        Settler {
            dl,
            topology: topology.clone(),
            returns: std::sync::Arc::default(),
            metrics: crate::telemetry::metrics(),
        }
    }

    /// This settler recording into `metrics` instead of the process-wide registry: a test that
    /// asserts on what settling counted gives it a registry of its own ([`Metrics::isolated`]),
    /// since the other tests of its process record into the global one.
    pub fn with_metrics(self, metrics: &'static Metrics) -> Settler {
        Settler { metrics, ..self }
    }

    /// Publish `body` to `<queue>.dlx` with the reason headers (DESIGN §2), await the broker's
    /// confirm, then ack the delivery.
    ///
    /// Errors leave the delivery unsettled (it returns to the queue when the channel closes).
    /// [`QueueError::Unroutable`]: `<queue>.dlx` has no bound queue (someone deleted or unbound
    /// `<queue>.dead`); it is logged, counted in `ccsync_dead_letters_unroutable_total`, and the
    /// original is not acked. The caller should leave the delivery alone, not requeue it: a
    /// requeued poison message would come straight back and fail the same way in a hot loop.
    pub async fn dead_letter(
        &self,
        tag: &Tag,
        body: &[u8],
        reason: &str,
        detail: &str,
    ) -> Result<(), QueueError> {
        let failed_at = crate::clock::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut h = BTreeMap::new();
        h.insert(
            ShortString::from("x-ccsync-reason"),
            AMQPValue::LongString(LongString::from(reason)),
        );
        h.insert(
            ShortString::from("x-ccsync-detail"),
            AMQPValue::LongString(LongString::from(detail)),
        );
        h.insert(
            ShortString::from("x-ccsync-failed-at"),
            AMQPValue::LongString(LongString::from(failed_at.as_str())),
        );
        let out = Outgoing {
            exchange: self.topology.dlx.clone(),
            routing_key: String::new(),
            body: body.to_vec(),
            headers: FieldTable::from(h),
        };
        let published = self.publish_mandatory(vec![out]).await.pop();
        match published.unwrap_or_else(|| Err(QueueError::Broker("no publish result".into()))) {
            Ok(()) => tag.ack().await,
            Err(e @ QueueError::Unroutable { .. }) => {
                self.metrics.dead_letter_unroutable();
                let t = &self.topology;
                tracing::error!(
                    exchange = %t.dlx,
                    dead_queue = %t.dead,
                    reason,
                    "dead letter unroutable: no queue is bound to {dlx}, so the message stays \
                     unacked in {queue} (redelivered when this channel closes); re-declare {dead} \
                     and bind it to {dlx}, or restart a worker (it declares the topology)",
                    dlx = t.dlx,
                    queue = t.queue,
                    dead = t.dead,
                );
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Park deliveries: a confirmed copy (headers kept) in `<queue>.parked.<account>` (declared
    /// on first use), then the original acked. A delivery whose copy cannot be published stays
    /// held (it returns to `<queue>` when the channel closes). One result per delivery.
    pub(crate) async fn park_many(
        &self,
        account: &str,
        deliveries: &[(&Tag, &[u8])],
    ) -> Vec<Result<(), QueueError>> {
        let queue = self.topology.parked(account);
        if let Err(e) = self
            .dl
            .ch
            .queue_declare(queue.as_str().into(), parked_options(), parked_arguments())
            .await
        {
            return deliveries
                .iter()
                .map(|_| Err(QueueError::from(e.clone())))
                .collect();
        }
        self.copy_then_ack(&queue, deliveries).await
    }

    /// Move deliveries to `queue`: a `mandatory`, confirmed copy of each (the original's headers
    /// kept, see [`Kept::republished`]), then the copied originals acked through the ack window
    /// (so the `multiple` folding keeps working). One result per delivery, in order; an `Err`
    /// means no copy exists and the original is untouched. Blameless requeues and parking both
    /// move this way.
    async fn copy_then_ack(
        &self,
        queue: &str,
        deliveries: &[(&Tag, &[u8])],
    ) -> Vec<Result<(), QueueError>> {
        let outgoing = deliveries
            .iter()
            .map(|(tag, body)| Outgoing {
                exchange: String::new(),
                routing_key: queue.to_string(),
                body: body.to_vec(),
                headers: tag.kept.republished(),
            })
            .collect();
        let published = self.publish_mandatory(outgoing).await;
        let copied: Vec<Tag> = deliveries
            .iter()
            .zip(&published)
            .filter(|(_, p)| p.is_ok())
            .map(|((tag, _), _)| (*tag).clone())
            .collect();
        for e in Tag::ack_many(&copied).await {
            // The copy is stored and the original returns when the channel closes: a
            // duplicate, which is safe (imports are upserts).
            tracing::warn!(error = %e, "ack after moving a message failed; it may come twice");
        }
        published
    }

    /// Give deliveries back without blame: see [`Tag::requeue_blameless`]. One result per
    /// delivery, in order; many at once pipeline their publishes (one round trip, not one each).
    pub async fn requeue_blameless_many(
        &self,
        deliveries: &[(&Tag, &[u8])],
    ) -> Vec<Result<Requeued, QueueError>> {
        let mut results: Vec<Option<Result<Requeued, QueueError>>> =
            (0..deliveries.len()).map(|_| None).collect();
        // Only deliveries still held: a copy of a settled one would be a duplicate.
        let mut todo = Vec::new();
        for (i, (tag, _)) in deliveries.iter().enumerate() {
            if tag.is_held().await {
                todo.push(i);
            } else {
                results[i] = Some(Ok(Requeued::AlreadySettled));
            }
        }
        let held: Vec<(&Tag, &[u8])> = todo.iter().map(|&i| deliveries[i]).collect();
        let moved = self.copy_then_ack(&self.topology.queue, &held).await;
        for (&i, m) in todo.iter().zip(moved) {
            results[i] = Some(match m {
                Ok(()) => Ok(Requeued::Blameless),
                Err(e) => {
                    // Never lose it: the plain requeue, which the broker counts.
                    tracing::warn!(error = %e, "blameless requeue failed; requeueing the delivery itself");
                    deliveries[i].0.requeue().await.map(|()| Requeued::Counted)
                }
            });
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Ok(Requeued::AlreadySettled)))
            .collect()
    }

    /// Publish each message `mandatory` and await every confirm: per message `Ok` once the broker
    /// stored it, [`QueueError::Unroutable`] if it returned it, another error if it was nacked or
    /// the channel failed.
    ///
    /// lapin hands a returned message to whichever confirm it completes next, and a `multiple`
    /// confirm completes several in no set order, so with several publishes in flight the
    /// confirm carrying a return need not be the returned message's own. Hence one batch at a
    /// time on the channel (`returns`): every return that arrives belongs to this batch, and it
    /// is matched to its message by content (body and headers; two messages alike in both are
    /// interchangeable). A return that matches none marks the whole batch unconfirmed (a
    /// duplicate, never a loss). The batch runs in its own task so a caller that stops waiting
    /// cannot leave confirms or returns behind for the next batch.
    async fn publish_mandatory(&self, items: Vec<Outgoing>) -> Vec<Result<(), QueueError>> {
        let n = items.len();
        if n == 0 {
            return Vec::new();
        }
        let ch = self.dl.ch.clone();
        let lock = self.returns.clone();
        let batch = tokio::spawn(async move {
            let _one_batch = lock.lock_owned().await;
            let mut pending = Vec::with_capacity(items.len());
            for it in &items {
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_headers(it.headers.clone());
                pending.push(
                    ch.basic_publish(
                        it.exchange.as_str().into(),
                        it.routing_key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &it.body,
                        props,
                    )
                    .await,
                );
            }
            let mut results = Vec::with_capacity(items.len());
            let mut returned = Vec::new();
            for (it, p) in items.iter().zip(pending) {
                let r = match p {
                    Err(e) => Err(QueueError::from(e)),
                    Ok(confirm) => match confirm.await {
                        Err(e) => Err(QueueError::from(e)),
                        Ok(Confirmation::Ack(back)) => {
                            returned.extend(back);
                            Ok(())
                        }
                        Ok(Confirmation::Nack(back)) => {
                            returned.extend(back);
                            Err(QueueError::Nacked(it.routing_key.clone()))
                        }
                        Ok(Confirmation::NotRequested) => Err(QueueError::Broker(
                            "the settling channel is not in confirm mode".into(),
                        )),
                    },
                };
                results.push(r);
            }
            let mut unmatched = false;
            for back in returned {
                let headers = back
                    .delivery
                    .properties
                    .headers()
                    .clone()
                    .unwrap_or_default();
                let mine = items.iter().zip(results.iter()).position(|(it, r)| {
                    r.is_ok() && it.body == back.delivery.data && it.headers == headers
                });
                match mine {
                    Some(i) => {
                        results[i] = Err(QueueError::Unroutable {
                            exchange: items[i].exchange.clone(),
                            routing_key: items[i].routing_key.clone(),
                        })
                    }
                    None => unmatched = true,
                }
            }
            if unmatched {
                tracing::warn!(
                    "a returned message matched none of the batch; treating the batch as unconfirmed"
                );
                for (it, r) in items.iter().zip(results.iter_mut()) {
                    if r.is_ok() {
                        *r = Err(QueueError::Unroutable {
                            exchange: it.exchange.clone(),
                            routing_key: it.routing_key.clone(),
                        });
                    }
                }
            }
            results
        });
        match batch.await {
            Ok(r) => r,
            Err(e) => (0..n)
                .map(|_| Err(QueueError::Broker(format!("settling publish task: {e}"))))
                .collect(),
        }
    }
}

impl Broker {
    /// A confirm-mode channel that publishes `mandatory` to `t.queue` (default exchange), the way
    /// [`Settler`] settles: see [`QueuePublisher::publish_all`].
    pub(crate) async fn queue_publisher(&self, t: &Topology) -> Result<QueuePublisher, QueueError> {
        Ok(QueuePublisher {
            settler: Settler::new(self.publisher().await?, t),
        })
    }
}

/// Publishes message bodies to one queue, each persistent, `mandatory` and confirmed (the
/// approach of [`Settler`]): `Ok` for a body means the broker stored it in the queue; a body no
/// queue took (the queue was deleted) comes back [`QueueError::Unroutable`] instead of being
/// confirmed and dropped. For `ccsync ingest`, whose 2xx must mean durable.
#[derive(Clone)]
pub struct QueuePublisher {
    settler: Settler,
}

impl QueuePublisher {
    /// Publish every body to the queue and await every confirm; one result per body, in order.
    /// Bodies go as they are (no headers), `application/json`, delivery mode 2.
    pub(crate) async fn publish_all(&self, bodies: Vec<Vec<u8>>) -> Vec<Result<(), QueueError>> {
        let outgoing = bodies
            .into_iter()
            .map(|body| Outgoing {
                exchange: String::new(),
                routing_key: self.settler.topology.queue.clone(),
                body,
                headers: FieldTable::default(),
            })
            .collect();
        self.settler.publish_mandatory(outgoing).await
    }

    /// False once the channel closed (a broker error or a lost connection).
    pub(crate) fn is_open(&self) -> bool {
        self.settler.dl.ch.status().connected()
    }
}

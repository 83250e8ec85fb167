//! RabbitMQ, the only room that knows `lapin`: topology, consuming with manual acks, settling
//! (ack / requeue / dead-letter with a reason) and publishing with publisher confirms.
//!
//! Topology (declared idempotently by every worker and by `ccsync publish`):
//! * `<queue>`: a durable **quorum** queue (replicated, and it counts redeliveries in
//!   `x-delivery-count`, which the worker uses to dead-letter poison messages). If the queue
//!   already exists with other arguments (for example a classic queue an operator made), the
//!   worker uses it as it is and logs a warning instead of failing.
//! * `<queue>.dlx`: a durable fanout exchange, bound to `<queue>.dead`, a durable queue.
//!   Dead letters are published there by the worker with `x-ccsync-reason`, `x-ccsync-detail`
//!   and `x-ccsync-failed-at` headers, confirmed by the broker, and only then is the original
//!   acked (DESIGN §2): a crash in between leaves a duplicate dead letter, never a lost message.
//!
//! Following the lapin examples: `basic_qos` before `basic_consume`; on shutdown cancel the
//! consumer first, settle, then close the channel and the connection.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};

/// A broker failure. Every variant means: the connection or channel is gone or unusable;
/// unsettled deliveries return to the queue by themselves; reconnect with backoff.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "cannot reach RabbitMQ: {0} (start it with `bash scripts/services.sh`, or check CCSYNC_AMQP_URL)"
    )]
    Connect(String),
    #[error("RabbitMQ error: {0}")]
    Broker(String),
    #[error("RabbitMQ refused a publish (nack) for routing key {0}")]
    Nacked(String),
}

impl From<lapin::Error> for QueueError {
    fn from(e: lapin::Error) -> Self {
        QueueError::Broker(e.to_string())
    }
}

/// Names of the queue and its dead-letter pair.
#[derive(Debug, Clone)]
pub struct Topology {
    pub queue: String,
    pub dlx: String,
    pub dead: String,
}

impl Topology {
    pub fn for_queue(queue: &str) -> Topology {
        Topology {
            queue: queue.to_string(),
            dlx: format!("{queue}.dlx"),
            dead: format!("{queue}.dead"),
        }
    }
}

/// A connection to the broker.
pub struct Broker {
    conn: Connection,
}

impl Broker {
    /// Connect (amqp:// or amqps://; TLS through rustls with the platform's CA store).
    pub async fn connect(url: &SecretString) -> Result<Broker, QueueError> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("ccsync-{}", std::process::id()).into());
        let conn = Connection::connect(url.expose_secret(), props)
            .await
            .map_err(|e| QueueError::Connect(e.to_string()))?;
        Ok(Broker { conn })
    }

    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// Declare the queue, the dead-letter exchange and the dead-letter queue (idempotent).
    pub async fn declare(&self, t: &Topology) -> Result<(), QueueError> {
        let ch = self.conn.create_channel().await?;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        if let Err(e) = ch
            .queue_declare(t.queue.as_str().into(), durable, args)
            .await
        {
            // PRECONDITION_FAILED closes the channel: check the existing queue on a new one.
            tracing::warn!(queue = %t.queue, error = %e, "queue exists with other arguments; using it as it is");
            let ch2 = self.conn.create_channel().await?;
            ch2.queue_declare(
                t.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
            let _ = ch2.close(200, "ok".into()).await;
        }
        let ch = if ch.status().connected() {
            ch
        } else {
            self.conn.create_channel().await?
        };
        ch.exchange_declare(
            t.dlx.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare(t.dead.as_str().into(), durable, FieldTable::default())
            .await?;
        ch.queue_bind(
            t.dead.as_str().into(),
            t.dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let _ = ch.close(200, "ok".into()).await;
        Ok(())
    }

    /// Start consuming `queue` with manual acks and this prefetch.
    pub async fn consume(&self, t: &Topology, prefetch: u16) -> Result<Consumer, QueueError> {
        let ch = self.conn.create_channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let dl = self.publisher().await?;
        let tag = format!("ccsync-{}", uuid::Uuid::new_v4());
        let mut inner = ch
            .basic_consume(
                t.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // lapin keeps each pushed delivery in its full form (properties, the quorum queue's
        // header table, exchange and routing key: about 1 KB) until it is read, and the pipeline
        // stops reading while batches wait for CC, so up to the whole prefetch window waited in
        // that form (~30 MB at 65,535; heaptrack, BENCHMARKS.md figure 4). The pump reads every
        // delivery as it arrives and keeps only what the pipeline uses (body, count, tag).
        // Unbounded is bounded by the prefetch: the broker sends no more than that unsettled.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let unsettled = std::sync::Arc::new(Unsettled {
            channel: ch.clone(),
            open: tokio::sync::Mutex::new(Window::default()),
        });
        let pumped = unsettled.clone();
        let pump = tokio::spawn(async move {
            let unsettled = pumped;
            while let Some(d) = inner.next().await {
                if let Ok(d) = &d {
                    unsettled.open.lock().await.arrived(d.delivery_tag);
                }
                let item = d.map(|d| incoming(d, &unsettled)).map_err(QueueError::from);
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        Ok(Consumer {
            channel: ch,
            tag,
            rx,
            pump,
            unsettled,
            settler: Settler {
                dl,
                dlx: t.dlx.clone(),
            },
        })
    }

    /// A channel in confirm mode for publishing.
    pub async fn publisher(&self) -> Result<Publisher, QueueError> {
        let ch = self.conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { ch })
    }

    /// Number of messages ready in a queue (passive declare).
    pub async fn queue_len(&self, queue: &str) -> Result<u32, QueueError> {
        let ch = self.conn.create_channel().await?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = ch.close(200, "ok".into()).await;
        Ok(q.message_count())
    }

    /// Take one message from a queue (`basic.get`) and ack it; for `dlq` tools and tests.
    pub async fn take(&self, queue: &str) -> Result<Option<Fetched>, QueueError> {
        let ch = self.conn.create_channel().await?;
        let got = ch
            .basic_get(queue.into(), lapin::options::BasicGetOptions::default())
            .await?;
        let out = match got {
            None => None,
            Some(m) => {
                let f = fetched(&m.delivery);
                m.delivery.acker.ack(BasicAckOptions::default()).await?;
                Some(f)
            }
        };
        let _ = ch.close(200, "ok".into()).await;
        Ok(out)
    }

    /// Look at up to `limit` messages of a queue without removing them (they return to the queue
    /// when the channel closes).
    pub async fn peek(&self, queue: &str, limit: usize) -> Result<Vec<Fetched>, QueueError> {
        let ch = self.conn.create_channel().await?;
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(m) = ch
                .basic_get(queue.into(), lapin::options::BasicGetOptions::default())
                .await?
            else {
                break;
            };
            out.push(fetched(&m.delivery));
        }
        let _ = ch.close(200, "ok".into()).await;
        Ok(out)
    }

    /// Move up to `limit` dead letters back to the queue: each is republished (confirmed by the
    /// broker) before it is removed from `<queue>.dead`, so a crash duplicates, never loses.
    pub async fn replay(&self, t: &Topology, limit: usize) -> Result<usize, QueueError> {
        let ch = self.conn.create_channel().await?;
        let publisher = self.publisher().await?;
        let mut moved = 0;
        while moved < limit {
            let Some(m) = ch
                .basic_get(
                    t.dead.as_str().into(),
                    lapin::options::BasicGetOptions::default(),
                )
                .await?
            else {
                break;
            };
            publisher.publish(&t.queue, &m.delivery.data).await?;
            m.delivery.acker.ack(BasicAckOptions::default()).await?;
            moved += 1;
        }
        let _ = ch.close(200, "ok".into()).await;
        let _ = publisher.ch.close(200, "ok".into()).await;
        Ok(moved)
    }

    /// Delete the queue and its dead-letter pair (demo and test clean-up).
    pub async fn delete(&self, t: &Topology) -> Result<(), QueueError> {
        let ch = self.conn.create_channel().await?;
        for q in [&t.queue, &t.dead] {
            ch.queue_delete(
                q.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await?;
        }
        ch.exchange_delete(
            t.dlx.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await?;
        let _ = ch.close(200, "ok".into()).await;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }

    /// Benchmark baseline (`ccsync bench`, issue 7): a bare consume-and-ack loop. Consumes `queue`
    /// with manual acks and this prefetch, acks every delivery one by one as it arrives (as the
    /// worker does, but without decoding, batching or CC), and returns once `count` deliveries
    /// are acked. Times run from the first delivery to the last ack.
    pub async fn consume_and_ack(
        &self,
        queue: &str,
        prefetch: u16,
        count: u64,
    ) -> Result<AckLoopStats, QueueError> {
        let ch = self.conn.create_channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let tag = format!("ccsync-bench-{}", uuid::Uuid::new_v4());
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut first = None;
        let mut acked = 0u64;
        let mut bytes = 0u64;
        while acked < count {
            let Some(d) = consumer.next().await else {
                return Err(QueueError::Broker(
                    "consumer cancelled before every message arrived".into(),
                ));
            };
            let d = d?;
            first.get_or_insert_with(std::time::Instant::now);
            bytes += d.data.len() as u64;
            d.acker.ack(BasicAckOptions::default()).await?;
            acked += 1;
        }
        let last_ack = std::time::Instant::now();
        let _ = ch
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        let _ = ch.close(200, "bye".into()).await;
        Ok(AckLoopStats {
            first_delivery: first.unwrap_or(last_ack),
            last_ack,
            messages: acked,
            bytes,
        })
    }
}

/// What [`Broker::consume_and_ack`] measured.
#[derive(Debug, Clone, Copy)]
pub struct AckLoopStats {
    pub first_delivery: std::time::Instant,
    pub last_ack: std::time::Instant,
    pub messages: u64,
    pub bytes: u64,
}

fn fetched(d: &Delivery) -> Fetched {
    let header = |k: &str| {
        d.properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(k).cloned())
            .and_then(|v| match v {
                AMQPValue::LongString(s) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                AMQPValue::ShortString(s) => Some(s.to_string()),
                _ => None,
            })
    };
    Fetched {
        reason: header("x-ccsync-reason"),
        detail: header("x-ccsync-detail"),
        failed_at: header("x-ccsync-failed-at"),
        body: d.data.clone(),
    }
}

/// A message taken with [`Broker::take`], with the dead-letter headers when present.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub failed_at: Option<String>,
}

/// One message taken from the queue, not yet settled.
pub struct Incoming {
    pub body: Vec<u8>,
    /// How often the broker delivered it before (quorum queues' `x-delivery-count`).
    pub delivery_count: u32,
    pub redelivered: bool,
    pub tag: Tag,
}

/// Single acks awaited at once (each is a frame lapin writes; awaiting them all at once only
/// fills lapin's frame queue).
const ACKS_IN_FLIGHT: usize = 256;
/// A settled delivery is acked on its own at once when fewer than this many unacked deliveries
/// are older than it (see [`Unsettled`]: the broker's cost of a single ack).
const CHEAP_SCAN: usize = 1_024;
/// Settled deliveries kept waiting for an older one before they are acked one by one anyway
/// (they hold prefetch slots while they wait).
const DEFER_MAX: usize = 16_384;

/// The deliveries of one consumer channel the broker still counts as unacked, in tag order, and
/// the channel to settle them on.
///
/// Why not ack each delivery when it is settled: RabbitMQ looks a single ack up by walking the
/// channel's unacked deliveries from the oldest, so with a 65,535 prefetch window an import that
/// completes before an older one costs the broker up to 65,535 steps per row. While it walks, the
/// channel neither reads nor delivers: the pipeline moved 100,000 messages in 16–124 s where a
/// loop that acks each delivery at once took 8 s (BENCHMARKS.md, figure 1). Instead the oldest
/// run of settled deliveries goes in one `basic.ack` with `multiple` set, which the broker takes
/// from the front; a settled delivery behind an older unsettled one waits for it, unless it is
/// near the front anyway ([`CHEAP_SCAN`]) or too many wait ([`DEFER_MAX`]).
///
/// A `multiple` ack settles every unacked delivery up to its tag, and the broker closes the
/// channel on a tag it no longer counts as unacked; so every settlement updates this window and
/// hands its frames to lapin under the lock, in order.
///
/// Acks go straight to the channel (`Channel::basic_ack`), not through lapin's per-delivery
/// `Acker`: an `Acker` is ~50 bytes plus a shared flag per delivery and each of its acks is a
/// spawned task, where the window keeps one byte per delivery (the whole prefetch window is held
/// while batches wait for CC: BENCHMARKS.md figure 4).
struct Unsettled {
    channel: Channel,
    open: tokio::sync::Mutex<Window>,
}

/// The state of one delivery tag in the [`Window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The pipeline holds it.
    Held,
    /// Settled; its ack waits for an older delivery (or goes in the next `multiple` ack).
    Settled,
    /// No longer unacked at the broker (acked on its own, or requeued): never the tag of a
    /// `multiple` ack, skipped when the front run is acked.
    Gone,
}

/// Delivery tags `base..base + slots.len()`. The broker numbers a channel's deliveries 1, 2, 3…
/// (AMQP 0-9-1 §1.8.3.13 `delivery-tag`), so a window of one byte per delivery is enough.
#[derive(Default)]
struct Window {
    base: u64,
    slots: std::collections::VecDeque<Slot>,
    /// How many slots are `Settled`.
    waiting: usize,
}

impl Window {
    /// A new delivery arrived on the channel.
    fn arrived(&mut self, tag: u64) {
        if self.slots.is_empty() && self.base == 0 {
            self.base = tag;
        }
        let next = self.base + self.slots.len() as u64;
        if tag < next {
            // Not a tag this channel can send again; never ack it through the window.
            tracing::warn!(
                tag,
                next,
                "delivery tag out of order; ignored by the ack window"
            );
            return;
        }
        // A gap would be tags the broker never delivered here: nothing to ack for them.
        for _ in next..tag {
            self.slots.push_back(Slot::Gone);
        }
        self.slots.push_back(Slot::Held);
    }

    fn slot(&mut self, tag: u64) -> Option<&mut Slot> {
        let i = tag.checked_sub(self.base)?;
        self.slots.get_mut(usize::try_from(i).ok()?)
    }

    /// Mark a held delivery settled (false when it was settled before).
    fn settle(&mut self, tag: u64) -> bool {
        match self.slot(tag) {
            Some(s @ Slot::Held) => {
                *s = Slot::Settled;
                self.waiting += 1;
                true
            }
            _ => false,
        }
    }

    /// Send every ack that may go now (`everything`: every settled one, as on close); returns
    /// the failures.
    async fn flush(&mut self, channel: &Channel, everything: bool) -> Vec<QueueError> {
        let mut errors = Vec::new();
        // The oldest run of settled (or gone) deliveries: one frame, to its newest settled tag.
        let run = self.slots.iter().take_while(|s| **s != Slot::Held).count();
        let newest_settled = self
            .slots
            .iter()
            .take(run)
            .rposition(|s| *s == Slot::Settled);
        let acked = match newest_settled {
            None => Ok(()),
            Some(i) => {
                let tag = self.base + i as u64;
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
            }
        };
        match acked {
            Ok(()) => {
                let settled = self
                    .slots
                    .drain(..run)
                    .filter(|s| *s == Slot::Settled)
                    .count();
                self.base += run as u64;
                self.waiting -= settled;
            }
            Err(e) => errors.push(e.into()),
        }
        // Settled ones behind a held one: near the front, or all when too many wait.
        let all = everything || self.waiting > DEFER_MAX;
        let limit = if all { self.slots.len() } else { CHEAP_SCAN };
        let mut singles = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate().take(limit) {
            if *s == Slot::Settled {
                *s = Slot::Gone;
                singles.push(self.base + i as u64);
            }
        }
        self.waiting -= singles.len();
        let failed = futures_util::stream::iter(
            singles
                .into_iter()
                .map(|t| channel.basic_ack(t, BasicAckOptions::default())),
        )
        .buffer_unordered(ACKS_IN_FLIGHT)
        .filter_map(|r| std::future::ready(r.err()))
        .collect::<Vec<_>>()
        .await;
        errors.extend(failed.into_iter().map(QueueError::from));
        errors
    }
}

/// Settles one delivery. Dropping it unsettled leaves the message to the broker, which redelivers
/// it when the channel closes.
#[derive(Clone)]
pub struct Tag {
    delivery_tag: u64,
    unsettled: std::sync::Arc<Unsettled>,
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

/// The consuming side.
pub struct Consumer {
    channel: Channel,
    tag: String,
    /// Deliveries as the pump (see [`Broker::consume`]) converted them, in arrival order.
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<Incoming, QueueError>>,
    pump: tokio::task::JoinHandle<()>,
    unsettled: std::sync::Arc<Unsettled>,
    settler: Settler,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Consumer {
    /// The next delivery; `None` when the consumer was cancelled or the channel closed.
    pub async fn next(&mut self) -> Option<Result<Incoming, QueueError>> {
        self.rx.recv().await
    }

    pub fn settler(&self) -> Settler {
        self.settler.clone()
    }

    /// Stop receiving new deliveries; settled and unsettled ones stay valid until `close`.
    pub async fn cancel(&self) -> Result<(), QueueError> {
        self.channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await?;
        Ok(())
    }

    /// Close the channels: anything unsettled goes back to the queue.
    pub async fn close(self) {
        // Settled deliveries still waiting for an older one are acked now.
        let u = &self.unsettled;
        let _ = u.open.lock().await.flush(&u.channel, true).await;
        // A barrier before the close. On a quorum queue the channel's queue client (RabbitMQ
        // 3.10 `rabbit_fifo_client`) keeps settles to itself while 32 or more of its commands
        // are not yet applied, and sends them when the queue reports progress; closing the
        // channel in that moment drops them, and settled messages come back as redeliveries
        // (duplicate imports, never a loss; tests/queue_acks.rs saw 22-723 of 1,500). A consumer
        // cancel goes through the queue's log like the settles before it, so by its reply those
        // are applied and the held-back settles have gone out. When the pipeline cancelled
        // already (it does when it stops reading), this one is answered at once and is no
        // barrier; the acks sent after that are mostly a few folded `multiple` acks.
        let _ = self
            .channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await;
        let _ = self.channel.close(200, "bye".into()).await;
        let _ = self.settler.dl.ch.close(200, "bye".into()).await;
        self.pump.abort();
    }
}

fn incoming(d: Delivery, unsettled: &std::sync::Arc<Unsettled>) -> Incoming {
    let delivery_count = d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::ShortInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongUInt(n) => Some(n),
            _ => None,
        })
        .unwrap_or(0);
    Incoming {
        body: d.data,
        delivery_count,
        redelivered: d.redelivered,
        tag: Tag {
            delivery_tag: d.delivery_tag,
            unsettled: unsettled.clone(),
        },
    }
}

/// Dead-letters deliveries: publish to `<queue>.dlx` with the reason, await the confirm, then ack.
#[derive(Clone)]
pub struct Settler {
    dl: Publisher,
    dlx: String,
}

impl Settler {
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
        self.dl
            .publish_with_headers(&self.dlx, "", body, FieldTable::from(h))
            .await?;
        tag.ack().await
    }
}

/// A confirm-mode channel.
#[derive(Clone)]
pub struct Publisher {
    ch: Channel,
}

impl Publisher {
    /// Publish a `contact.upsert` body the way upstream systems do: default exchange, routing key
    /// = queue, persistent, `application/json`; returns once the broker confirmed it.
    pub async fn publish(&self, queue: &str, body: &[u8]) -> Result<(), QueueError> {
        self.send("", queue, body, FieldTable::default())
            .await?
            .await
    }

    /// Publish without waiting for the confirm; await the returned future later (pipelining).
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
    ) -> Result<impl std::future::Future<Output = Result<(), QueueError>> + use<>, QueueError> {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        let confirm = self
            .ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?;
        let rk = routing_key.to_string();
        Ok(async move {
            let c = confirm.await?;
            if c.is_nack() {
                return Err(QueueError::Nacked(rk));
            }
            Ok(())
        })
    }

    async fn publish_with_headers(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
    ) -> Result<(), QueueError> {
        self.send(exchange, routing_key, body, headers).await?.await
    }
}

#[cfg(test)]
mod tests {
    use super::{Slot, Window};

    #[test]
    fn the_window_follows_the_channels_tags_and_settles_each_once() {
        let mut w = Window::default();
        for t in 1..=3 {
            w.arrived(t);
        }
        // A gap (never delivered here) is never acked; an old tag is ignored.
        w.arrived(6);
        w.arrived(2);
        assert_eq!(w.base, 1);
        assert_eq!(
            w.slots.iter().copied().collect::<Vec<_>>(),
            [
                Slot::Held,
                Slot::Held,
                Slot::Held,
                Slot::Gone,
                Slot::Gone,
                Slot::Held
            ]
        );
        assert!(w.settle(2));
        assert!(!w.settle(2), "a second settle of one delivery is ignored");
        assert!(!w.settle(4), "a gap cannot be settled");
        assert!(!w.settle(0) && !w.settle(99));
        assert_eq!(w.waiting, 1);
    }
}

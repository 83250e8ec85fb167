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
        let inner = ch
            .basic_consume(
                t.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Consumer {
            channel: ch,
            tag,
            inner,
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

/// Acks [`Tag::ack_many`] hands to lapin at once.
const ACKS_IN_FLIGHT: usize = 256;

/// Settles one delivery. Dropping it unsettled leaves the message to the broker, which redelivers
/// it when the channel closes.
#[derive(Clone)]
pub struct Tag {
    acker: lapin::Acker,
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tag")
    }
}

impl Tag {
    /// CC has the data: remove the message from the queue.
    pub async fn ack(&self) -> Result<(), QueueError> {
        self.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Ack many deliveries (a completed import's): returns the failures. Many at a time, because
    /// awaiting each costs a round trip through lapin's I/O loop while the broker refills the
    /// prefetch window one message per ack (BENCHMARKS.md, figure 1); but at most
    /// [`ACKS_IN_FLIGHT`], because lapin spawns a task of about 3 KB per pending ack and 65,000 of
    /// them at once were the worker's peak memory (heaptrack, figure 4).
    pub async fn ack_many(tags: &[Tag]) -> Vec<QueueError> {
        futures_util::stream::iter(tags.iter().map(Tag::ack))
            .buffer_unordered(ACKS_IN_FLIGHT)
            .filter_map(|r| std::future::ready(r.err()))
            .collect()
            .await
    }

    /// Not now: return the message to the queue for a later attempt.
    pub async fn requeue(&self) -> Result<(), QueueError> {
        self.acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await?;
        Ok(())
    }
}

/// The consuming side.
pub struct Consumer {
    channel: Channel,
    tag: String,
    inner: lapin::Consumer,
    settler: Settler,
}

impl Consumer {
    /// The next delivery; `None` when the consumer was cancelled or the channel closed.
    pub async fn next(&mut self) -> Option<Result<Incoming, QueueError>> {
        let d = self.inner.next().await?;
        Some(d.map(incoming).map_err(QueueError::from))
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
        let _ = self.channel.close(200, "bye".into()).await;
        let _ = self.settler.dl.ch.close(200, "bye".into()).await;
    }
}

fn incoming(d: Delivery) -> Incoming {
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
        tag: Tag { acker: d.acker },
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

//! RabbitMQ, the only room that knows `lapin`: topology, consuming with manual acks, settling
//! (ack / requeue / dead-letter with a reason) and publishing with publisher confirms.
//!
//! Topology (declared idempotently by every worker and by `ccsync publish`):
//! * `<queue>`: a durable **quorum** queue (replicated, and it counts redeliveries in
//!   `x-delivery-count`, which the worker uses to dead-letter poison messages), with an explicit
//!   `x-delivery-limit` ([`DELIVERY_LIMIT`]) and `<queue>.dlx` as its dead-letter exchange
//!   (docs/operations.md, "Delivery limits"). If the queue already exists with other arguments
//!   (for example a classic queue an operator made, or one an older ccsync declared), the worker
//!   uses it as it is and logs a warning instead of failing.
//! * `<queue>.dlx`: a durable fanout exchange, bound to `<queue>.dead`, a durable queue.
//!   Dead letters are published there by the worker with `x-ccsync-reason`, `x-ccsync-detail`
//!   and `x-ccsync-failed-at` headers, `mandatory` and confirmed by the broker, and only then is
//!   the original acked (DESIGN §2): a crash in between leaves a duplicate dead letter, and an
//!   unroutable one leaves the original in the queue, never a lost message.
//!
//! * `CCSYNC_EVENTS_EXCHANGE` (default `ccsync.events`, [`Topology::events`]): a durable
//!   **topic** exchange for what ccsync tells upstream systems (`contact.unsubscribed`, the
//!   opt-out feed). The worker declares it with the queues; consumers bind their own queues.
//!   Events are persistent and confirmed ([`Publisher::publish_events`]), but **not**
//!   `mandatory`: an exchange nobody bound yet is a normal state of a fresh deployment, and a
//!   mandatory publish would come back unroutable and hold the feed (and every account's
//!   cursor) until someone binds a queue. So events published while no queue is bound are
//!   dropped by the broker, by design (README, "Events out").
//!
//! Giving a message back: [`Tag::requeue`] (a nack, which quorum queues count) or
//! [`Tag::requeue_blameless`] (a confirmed copy, then an ack: never counted).
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
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use secrecy::ExposeSecret;

use crate::config::{AmqpEndpoint, TlsFiles};

/// A broker failure. Every variant means: the connection or channel is gone or unusable;
/// unsettled deliveries return to the queue by themselves; reconnect with backoff.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "cannot reach RabbitMQ: {0} (start it with `bash scripts/services.sh`, or check CCSYNC_AMQP_URL)"
    )]
    Connect(String),
    /// The TLS handshake failed on the certificates (the broker's is not signed by the CA we
    /// trust, or ours was refused), or the TLS files cannot be read: retrying cannot help. Fatal.
    #[error(
        "RabbitMQ (CCSYNC_AMQP_URL): TLS failed: {0}; point CCSYNC_AMQP_CA_FILE at the CA that signed the broker's certificate (unset: the platform's roots), and check CCSYNC_AMQP_CLIENT_CERT_FILE/KEY_FILE if the broker requires a client certificate"
    )]
    Tls(String),
    #[error("RabbitMQ error: {0}")]
    Broker(String),
    #[error("RabbitMQ refused a publish (nack) for routing key {0}")]
    Nacked(String),
    /// A `mandatory` publish the broker returned: no queue is bound for it. The message was not
    /// stored anywhere, so the delivery it was meant to settle is left unsettled (not acked).
    #[error(
        "RabbitMQ could not route a message published to exchange {exchange:?} with routing key {routing_key:?}: no queue is bound there"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

impl From<lapin::Error> for QueueError {
    fn from(e: lapin::Error) -> Self {
        QueueError::Broker(e.to_string())
    }
}

/// The lapin TLS configuration of `CCSYNC_AMQP_*_FILE` (read at each connect, so a renewed
/// certificate is picked up by the next connection).
fn tls_config(files: &TlsFiles) -> Result<OwnedTLSConfig, QueueError> {
    let read = |key: &str, p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| QueueError::Tls(format!("{key}: cannot read {}: {e}", p.display())))
    };
    let cert_chain = match &files.ca_file {
        Some(p) => Some(
            String::from_utf8(read("CCSYNC_AMQP_CA_FILE", p)?)
                .map_err(|_| QueueError::Tls("CCSYNC_AMQP_CA_FILE is not PEM text".into()))?,
        ),
        None => None,
    };
    let identity = match (&files.client_cert_file, &files.client_key_file) {
        (Some(c), Some(k)) => Some(OwnedIdentity::PKCS8 {
            pem: read("CCSYNC_AMQP_CLIENT_CERT_FILE", c)?,
            key: read("CCSYNC_AMQP_CLIENT_KEY_FILE", k)?,
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Whether a connection error is about certificates (retrying cannot fix it).
fn is_certificate_problem(e: &str) -> bool {
    [
        "certificate",
        "UnknownIssuer",
        "BadSignature",
        "CertExpired",
        "NotValidForName",
    ]
    .iter()
    .any(|w| e.contains(w))
}

/// Names of the queue and its dead-letter pair.
#[derive(Debug, Clone)]
pub struct Topology {
    pub queue: String,
    pub dlx: String,
    pub dead: String,
    /// The events exchange the worker declares beside its queues (`None`: not declared, as by
    /// `ccsync publish` and `ingest`, which publish no events).
    pub events: Option<String>,
}

impl Topology {
    pub fn for_queue(queue: &str) -> Topology {
        Topology {
            queue: queue.to_string(),
            dlx: format!("{queue}.dlx"),
            dead: format!("{queue}.dead"),
            events: None,
        }
    }

    /// The same topology with the events exchange `exchange` (`CCSYNC_EVENTS_EXCHANGE`).
    pub fn with_events(mut self, exchange: &str) -> Topology {
        self.events = Some(exchange.to_string());
        self
    }

    /// `<queue>.parked.<account>`: where one account's messages wait while its CC connection is
    /// dead (account names are 1–64 of letters, digits, `-`, `_`, `.`: valid in a queue name).
    pub fn parked(&self, account: &str) -> String {
        format!("{}.parked.{account}", self.queue)
    }
}

/// The broker's own delivery limit the worker declares on `<queue>` (`x-delivery-limit`).
///
/// A backstop far above the worker's own poison limit (`worker.max_redeliveries`, 10 by
/// default), which dead-letters with a reason first. Why declare one at all: RabbitMQ 4.0+ gives
/// every quorum queue a default limit of 20, and on 3.10–4.2 every return counts toward it
/// (a nack with requeue, a channel closed or a consumer crashed while holding the message), so
/// an outage with reconnects could exhaust 20 without the message being at fault. Why not -1
/// ("unlimited" on 4.x): RabbitMQ 3.10 accepts -1 but then drops a message at its first return
/// (tested against 3.10.8; docs/operations.md, "Delivery limits"). A positive value means the
/// same on every version.
pub const DELIVERY_LIMIT: i64 = 1_000;

/// The arguments the worker declares `<queue>` with: a quorum queue (replicated, and it counts
/// returns in `x-delivery-count`), [`DELIVERY_LIMIT`], and `<queue>.dlx` as its dead-letter
/// exchange so a message the broker drops at that limit lands in `<queue>.dead`.
fn parked_options() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// A parking queue is a quorum queue like `<queue>` (replicated, durable), without a delivery
/// limit of its own that could drop what waits there (nothing consumes it but the mover).
fn parked_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

fn queue_arguments(t: &Topology) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(t.dlx.as_str().into()),
    );
    args
}

/// A connection to the broker.
pub struct Broker {
    conn: Connection,
}

impl Broker {
    /// Connect (amqp:// or amqps://). TLS runs through rustls, trusting the CA of
    /// `CCSYNC_AMQP_CA_FILE` besides the platform's roots, with the optional client certificate.
    /// A certificate problem is [`QueueError::Tls`] (fatal); anything else [`QueueError::Connect`].
    pub async fn connect(target: &AmqpEndpoint) -> Result<Broker, QueueError> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("ccsync-{}", std::process::id()).into());
        let tls = tls_config(&target.tls)?;
        let runtime =
            lapin::runtime::default_runtime().map_err(|e| QueueError::Connect(e.to_string()))?;
        let conn = Connection::connect_with_config(target.url.expose_secret(), props, tls, runtime)
            .await
            .map_err(|e| {
                let text = e.to_string();
                if is_certificate_problem(&text) {
                    QueueError::Tls(text)
                } else {
                    QueueError::Connect(text)
                }
            })?;
        Ok(Broker { conn })
    }

    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// Declare the dead-letter exchange and queue, then the queue (idempotent).
    ///
    /// The dead-letter pair goes first because the queue names `<queue>.dlx` as its
    /// `x-dead-letter-exchange`: whatever the broker itself drops from the queue (a delivery
    /// limit reached, a length limit or TTL an operator set by policy) lands in `<queue>.dead`
    /// instead of vanishing. See [`queue_arguments`] for the arguments and why.
    pub async fn declare(&self, t: &Topology) -> Result<(), QueueError> {
        let ch = self.conn.create_channel().await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
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
        if let Err(e) = ch
            .queue_declare(t.queue.as_str().into(), durable, queue_arguments(t))
            .await
        {
            // PRECONDITION_FAILED (the queue exists with other arguments: made by an operator, or
            // by an older ccsync that declared fewer) closes the channel: check on a new one that
            // it exists, and use it as it is. Operators give an existing queue the same settings
            // with a policy (docs/operations.md, "Delivery limits").
            tracing::warn!(
                queue = %t.queue,
                error = %e,
                "queue exists with other arguments; using it as it is (apply x-delivery-limit and \
                 x-dead-letter-exchange with a policy: docs/operations.md, Delivery limits)"
            );
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
        if ch.status().connected() {
            let _ = ch.close(200, "ok".into()).await;
        }
        if let Some(events) = &t.events {
            self.declare_events(events).await?;
        }
        Ok(())
    }

    /// Declare the durable topic exchange ccsync publishes its events to (idempotent).
    pub async fn declare_events(&self, exchange: &str) -> Result<(), QueueError> {
        let ch = self.conn.create_channel().await?;
        ch.exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
        let _ = ch.close(200, "ok".into()).await;
        Ok(())
    }

    /// Declare the durable queue `queue` and bind it to the events exchange `exchange` with
    /// `binding` (`contact.unsubscribed`, or a pattern such as `contact.#`): what a consumer of
    /// ccsync's events does once, before it relies on them (and what the tests do).
    pub async fn bind_events_queue(
        &self,
        queue: &str,
        exchange: &str,
        binding: &str,
    ) -> Result<(), QueueError> {
        self.declare_events(exchange).await?;
        let ch = self.conn.create_channel().await?;
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let _ = ch.close(200, "ok".into()).await;
        Ok(())
    }

    /// Delete an exchange (tests clean up their own events exchange).
    pub async fn delete_exchange(&self, exchange: &str) -> Result<(), QueueError> {
        let ch = self.conn.create_channel().await?;
        ch.exchange_delete(exchange.into(), Default::default())
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
        let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pump = spawn_pump(inner, unsettled.clone(), tx.clone(), stopping.clone());
        Ok(Consumer {
            channel: ch,
            queue: t.queue.clone(),
            tag,
            rx,
            tx,
            pump,
            stopping,
            unsettled,
            settler: Settler {
                dl,
                topology: t.clone(),
                returns: std::sync::Arc::default(),
            },
        })
    }

    /// A channel in confirm mode for publishing.
    pub async fn publisher(&self) -> Result<Publisher, QueueError> {
        let ch = self.conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { ch })
    }

    /// True while the broker has blocked this connection (a memory or disk alarm): publishes
    /// are not read until it unblocks, so a caller waiting for a confirm would wait that long.
    pub fn is_blocked(&self) -> bool {
        self.conn.status().blocked()
    }

    /// A confirm-mode channel that publishes `mandatory` to `t.queue` (default exchange), the way
    /// [`Settler`] settles: see [`QueuePublisher::publish_all`].
    pub async fn queue_publisher(&self, t: &Topology) -> Result<QueuePublisher, QueueError> {
        Ok(QueuePublisher {
            settler: Settler {
                dl: self.publisher().await?,
                topology: t.clone(),
                returns: std::sync::Arc::default(),
            },
        })
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

    /// Move up to `limit` dead letters back to the queue (see [`Broker::move_messages`]).
    pub async fn replay(&self, t: &Topology, limit: usize) -> Result<usize, QueueError> {
        // The dead-letter headers stay behind: the replayed message is the original again.
        self.move_messages(&t.dead, &t.queue, limit, false).await
    }

    /// Declare `queue` as a parking queue (durable quorum; idempotent).
    pub async fn declare_parked(&self, queue: &str) -> Result<(), QueueError> {
        let ch = self.conn.create_channel().await?;
        let r = ch
            .queue_declare(queue.into(), parked_options(), parked_arguments())
            .await;
        let _ = ch.close(200, "ok".into()).await;
        r?;
        Ok(())
    }

    /// Move every message of `from` to `to`, headers kept (parked messages back to the queue).
    /// Returns how many.
    pub async fn move_all(&self, from: &str, to: &str) -> Result<usize, QueueError> {
        self.move_messages(from, to, usize::MAX, true).await
    }

    /// Move up to `limit` messages of `from` to `to`: each republished and confirmed before it is
    /// removed from `from`, so a crash duplicates, never loses.
    async fn move_messages(
        &self,
        from: &str,
        to: &str,
        limit: usize,
        keep_headers: bool,
    ) -> Result<usize, QueueError> {
        let ch = self.conn.create_channel().await?;
        let publisher = self.publisher().await?;
        let mut moved = 0;
        while moved < limit {
            let Some(m) = ch
                .basic_get(from.into(), lapin::options::BasicGetOptions::default())
                .await?
            else {
                break;
            };
            let headers = if keep_headers {
                m.delivery.properties.headers().clone().unwrap_or_default()
            } else {
                FieldTable::default()
            };
            publisher
                .send("", to, &m.delivery.data, headers)
                .await?
                .await?;
            m.delivery.acker.ack(BasicAckOptions::default()).await?;
            moved += 1;
        }
        let _ = ch.close(200, "ok".into()).await;
        let _ = publisher.ch.close(200, "ok".into()).await;
        Ok(moved)
    }

    /// Delete one queue (test and demo clean-up; a missing queue is no error).
    pub async fn delete_queue(&self, queue: &str) -> Result<(), QueueError> {
        let ch = self.conn.create_channel().await?;
        let r = ch
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await;
        let _ = ch.close(200, "ok".into()).await;
        r.map(|_| ()).map_err(QueueError::from)
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

    /// Benchmark baseline (`ccsync bench`, issues 7 and 18): a plain lapin consumer. Consumes
    /// `queue` with manual acks and this prefetch, without decoding, batching or CC, and returns
    /// once `count` deliveries are acked. Times run from the first delivery to the last ack.
    ///
    /// `ack_every` = 1 acks each delivery on its own as it arrives (the slowest way to consume,
    /// issue 7's baseline). `ack_every` = k > 1 folds acks the way the worker does
    /// ([`Unsettled`]): one `basic.ack` with `multiple` set for every k deliveries (and one for
    /// the rest at the end), which the broker settles from the front of the channel's unacked
    /// deliveries in one step.
    pub async fn consume_and_ack(
        &self,
        queue: &str,
        prefetch: u16,
        count: u64,
        ack_every: u64,
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
        let ack_every = ack_every.max(1);
        let mut first = None;
        let mut received = 0u64;
        let mut bytes = 0u64;
        while received < count {
            let Some(d) = consumer.next().await else {
                return Err(QueueError::Broker(
                    "consumer cancelled before every message arrived".into(),
                ));
            };
            let d = d?;
            first.get_or_insert_with(std::time::Instant::now);
            bytes += d.data.len() as u64;
            received += 1;
            if ack_every == 1 {
                d.acker.ack(BasicAckOptions::default()).await?;
            } else if received.is_multiple_of(ack_every) || received == count {
                ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                    .await?;
            }
        }
        let last_ack = std::time::Instant::now();
        let _ = ch
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        let _ = ch.close(200, "bye".into()).await;
        Ok(AckLoopStats {
            first_delivery: first.unwrap_or(last_ack),
            last_ack,
            messages: received,
            bytes,
        })
    }

    /// Benchmark baseline (`ccsync bench`, issue 18): a bare confirmed lapin publisher. Publishes
    /// every body to `queue` through the default exchange, persistent and `application/json`,
    /// as `ccsync publish` does, on one confirm-mode channel with at most `window` publishes
    /// awaiting their confirm, and returns once every one is confirmed; no reading, no
    /// validation. Returns the time from the first publish to the last confirm.
    pub async fn publish_confirmed(
        &self,
        queue: &str,
        bodies: &[Vec<u8>],
        window: usize,
    ) -> Result<std::time::Duration, QueueError> {
        let ch = self.conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let started = std::time::Instant::now();
        let mut pending = std::collections::VecDeque::with_capacity(window.max(1));
        let settle = |c: Confirmation| {
            if c.is_nack() {
                Err(QueueError::Nacked(queue.to_string()))
            } else {
                Ok(())
            }
        };
        for body in bodies {
            if pending.len() >= window.max(1)
                && let Some(oldest) = pending.pop_front()
            {
                settle(oldest.await?)?;
            }
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    props.clone(),
                )
                .await?;
            pending.push_back(confirm);
        }
        for c in pending {
            settle(c.await?)?;
        }
        let took = started.elapsed();
        let _ = ch.close(200, "bye".into()).await;
        Ok(took)
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
        message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
        persistent: *d.properties.delivery_mode() == Some(2),
        body: d.data.clone(),
    }
}

/// A message taken with [`Broker::take`], with the dead-letter headers when present.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Vec<u8>,
    /// The AMQP `message_id` (ccsync's events carry their event id there).
    pub message_id: Option<String>,
    /// Published persistent (delivery mode 2).
    pub persistent: bool,
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
    /// How often ccsync gave it back with [`Tag::requeue_blameless`] (`x-ccsync-requeues`);
    /// for logs, never a reason to give up on a message.
    pub requeues: u32,
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

    /// The oldest run of settled (or gone) deliveries: its length, and the tag of the one
    /// `multiple` ack that settles it (its newest settled delivery; `None` when the run holds
    /// only gone ones, which need no ack).
    fn front(&self) -> (usize, Option<u64>) {
        let run = self.slots.iter().take_while(|s| **s != Slot::Held).count();
        let newest_settled = self
            .slots
            .iter()
            .take(run)
            .rposition(|s| *s == Slot::Settled);
        (run, newest_settled.map(|i| self.base + i as u64))
    }

    /// The front run of `run` slots was acked: forget it.
    fn drop_front(&mut self, run: usize) {
        let settled = self
            .slots
            .drain(..run)
            .filter(|s| *s == Slot::Settled)
            .count();
        self.base += run as u64;
        self.waiting -= settled;
    }

    /// Settled deliveries behind a held one that are acked one by one now: those near the front
    /// (`CHEAP_SCAN`), or every one when too many wait (`DEFER_MAX`) or `everything` is asked
    /// (closing). They count as gone from here on.
    fn take_singles(&mut self, everything: bool) -> Vec<u64> {
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
        singles
    }

    /// Send every ack that may go now (`everything`: every settled one, as on close); returns
    /// the failures. What to send is decided by the pure methods above.
    async fn flush(&mut self, channel: &Channel, everything: bool) -> Vec<QueueError> {
        let mut errors = Vec::new();
        let (run, multiple) = self.front();
        let acked = match multiple {
            None => Ok(()),
            Some(tag) => {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
            }
        };
        match acked {
            Ok(()) => self.drop_front(run),
            Err(e) => errors.push(e.into()),
        }
        let singles = self.take_singles(everything);
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
    /// What a blameless requeue re-publishes besides the body (see [`Kept`]).
    kept: Kept,
}

/// The headers of a delivery that [`Tag::requeue_blameless`] carries over, kept small: the
/// pipeline holds up to a whole prefetch window (65,535) of deliveries at once.
#[derive(Debug, Clone, Default)]
struct Kept {
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
    fn republished(&self) -> FieldTable {
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
    async fn is_held(&self) -> bool {
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

/// The consuming side.
pub struct Consumer {
    channel: Channel,
    queue: String,
    /// The current `basic.consume`'s tag (a new one after each [`Consumer::resume`]).
    tag: String,
    /// Deliveries as the pump (see [`Broker::consume`]) converted them, in arrival order.
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<Incoming, QueueError>>,
    /// Kept so a resumed consumer's pump feeds the same receiver.
    tx: tokio::sync::mpsc::UnboundedSender<Result<Incoming, QueueError>>,
    pump: tokio::task::JoinHandle<()>,
    /// Set while the worker itself cancels: the pump's stream then ends quietly; otherwise the
    /// end means the broker cancelled the consumer (a deleted queue), reported as an error.
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await?;
        Ok(())
    }

    /// Hold off new deliveries for a while (the worker's byte budget for held deliveries is
    /// spent): the consumer is cancelled, what it delivered stays valid and settleable on this
    /// channel. A prefetch count bounds messages, not bytes, and RabbitMQ does not apply a new
    /// `basic.qos` to a running consumer, so cancelling is the way to stop the flow.
    pub async fn pause(&mut self) -> Result<(), QueueError> {
        self.cancel().await
    }

    /// Receive again after [`Consumer::pause`]: a new `basic.consume` on the same channel (its
    /// delivery tags go on counting, so the ack window stays valid), with a new prefetch count
    /// when given (a channel's `basic.qos` applies to the consumers started after it).
    pub async fn resume(&mut self, prefetch: Option<u16>) -> Result<(), QueueError> {
        if let Some(p) = prefetch {
            self.channel
                .basic_qos(p.max(1), BasicQosOptions::default())
                .await?;
        }
        let tag = format!("ccsync-{}", uuid::Uuid::new_v4());
        let inner = self
            .channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.tag = tag;
        let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.stopping = stopping.clone();
        self.pump = spawn_pump(inner, self.unsettled.clone(), self.tx.clone(), stopping);
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

/// Read a consumer's deliveries as they arrive (see [`Broker::consume`]) into `tx`.
fn spawn_pump(
    mut inner: lapin::Consumer,
    unsettled: std::sync::Arc<Unsettled>,
    tx: tokio::sync::mpsc::UnboundedSender<Result<Incoming, QueueError>>,
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(d) = inner.next().await {
            if let Ok(d) = &d {
                unsettled.open.lock().await.arrived(d.delivery_tag);
            }
            let item = d.map(|d| incoming(d, &unsettled)).map_err(QueueError::from);
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                return;
            }
        }
        if !stopping.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = tx.send(Err(QueueError::Broker(
                "consumer cancelled by the broker".into(),
            )));
        }
    })
}

fn incoming(d: Delivery, unsettled: &std::sync::Arc<Unsettled>) -> Incoming {
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

/// Settles deliveries by publishing: dead letters to `<queue>.dlx` with a reason, blameless
/// requeues to `<queue>`. Each publish is `mandatory` and confirmed before the original is acked.
///
/// Why `mandatory`: without it the broker confirms a message no queue is bound for and drops it,
/// and the worker would then ack the original: lost. With it, an unroutable message comes back
/// (`basic.return`, before its confirm) and the original is not acked.
#[derive(Clone)]
pub struct Settler {
    dl: Publisher,
    topology: Topology,
    /// One batch of mandatory publishes at a time on `dl` (see [`Settler::publish_mandatory`]).
    returns: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// One mandatory publish.
struct Outgoing {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    headers: FieldTable,
}

impl Settler {
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
                crate::telemetry::metrics().dead_letters_unroutable.inc();
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
    pub async fn park_many(
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
    pub async fn publish_all(&self, bodies: Vec<Vec<u8>>) -> Vec<Result<(), QueueError>> {
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
    pub fn is_open(&self) -> bool {
        self.settler.dl.ch.status().connected()
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

    /// [`Publisher::publish`] for many bodies, in order, with up to 1,000 confirms outstanding
    /// (one round trip per thousand instead of one per message).
    pub async fn publish_many(&self, queue: &str, bodies: &[Vec<u8>]) -> Result<(), QueueError> {
        for chunk in bodies.chunks(1_000) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for b in chunk {
                confirms.push(self.send("", queue, b, FieldTable::default()).await?);
            }
            for c in confirms {
                c.await?;
            }
        }
        Ok(())
    }

    /// Publish events to the topic exchange `exchange` with `routing_key`, each persistent,
    /// `application/json`, its `message_id` the event's id (so consumers can dedupe on the AMQP
    /// property as well as in the body) and its `type` the routing key; returns once the broker
    /// confirmed every one. Not `mandatory` (see the module docs): a confirm means the broker
    /// took the event and routed it to whatever queues are bound.
    pub async fn publish_events(
        &self,
        exchange: &str,
        routing_key: &str,
        events: &[(String, Vec<u8>)],
    ) -> Result<(), QueueError> {
        let mut pending = Vec::with_capacity(events.len());
        for (id, body) in events {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(id.as_str().into())
                .with_type(routing_key.into())
                .with_app_id("ccsync".into());
            pending.push(
                self.ch
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions::default(),
                        body,
                        props,
                    )
                    .await?,
            );
        }
        // Pipelined: every event is on the wire before the first confirm is awaited.
        for confirm in pending {
            if confirm.await?.is_nack() {
                return Err(QueueError::Nacked(routing_key.to_string()));
            }
        }
        Ok(())
    }

    /// False once the channel closed (a broker error or a lost connection).
    pub fn is_open(&self) -> bool {
        self.ch.status().connected()
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
}

#[cfg(test)]
mod tests {
    use super::{AMQPValue, FieldTable, Kept, Slot, Window};

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

    /// What `flush` sends, decided without a channel: one `multiple` ack for the oldest settled
    /// run (through gaps), single acks for settled ones behind a held one, and nothing twice.
    #[test]
    fn the_window_acks_the_front_run_at_once_and_the_rest_one_by_one() {
        let mut w = Window::default();
        for t in 1..=5 {
            w.arrived(t);
        }
        w.arrived(8); // 6 and 7 never came to this channel
        // Nothing settled: nothing to send.
        assert_eq!(w.front(), (0, None));
        assert!(w.take_singles(false).is_empty());
        // 1 and 2 settled: one multiple ack to 2; 4 behind the held 3 goes on its own.
        for t in [1, 2, 4] {
            assert!(w.settle(t));
        }
        assert_eq!(w.front(), (2, Some(2)));
        w.drop_front(2);
        assert_eq!((w.base, w.waiting), (3, 1));
        assert_eq!(w.take_singles(false), vec![4]);
        assert_eq!(w.waiting, 0);
        assert!(
            w.take_singles(true).is_empty(),
            "an ack is never sent twice"
        );
        // 3 and 5 settle: the run 3..=7 (4 acked alone, 6 and 7 gaps) ends at the held 8, and
        // its one multiple ack goes to 5, the newest settled, never to a gap.
        assert!(w.settle(3) && w.settle(5));
        assert_eq!(w.front(), (5, Some(5)));
        w.drop_front(5);
        assert_eq!((w.base, w.slots.len(), w.waiting), (8, 1, 0));
        // A run of gaps alone needs no ack.
        let mut g = Window::default();
        g.arrived(1);
        g.arrived(3);
        assert!(g.settle(1));
        assert_eq!(g.front(), (2, Some(1)));
        g.drop_front(2);
        assert_eq!(g.front(), (0, None));
    }

    /// Settled deliveries far behind a held one wait for the front to move (a cheap scan), until
    /// too many wait or the channel closes (`everything`).
    #[test]
    fn far_settled_deliveries_wait_until_too_many_or_closing() {
        let mut w = Window::default();
        let far = (super::CHEAP_SCAN + 10) as u64;
        for t in 1..=far {
            w.arrived(t);
        }
        assert!(w.settle(far));
        assert!(w.take_singles(false).is_empty(), "beyond the cheap scan");
        assert_eq!(w.take_singles(true), vec![far], "closing acks everything");
        // More than DEFER_MAX waiting: all of them go, however far.
        let mut w = Window::default();
        let n = (super::DEFER_MAX + super::CHEAP_SCAN + 2) as u64;
        for t in 1..=n {
            w.arrived(t);
        }
        for t in 2..=n {
            assert!(w.settle(t));
        }
        let singles = w.take_singles(false);
        assert_eq!(singles.len() as u64, n - 1);
        assert_eq!(w.waiting, 0);
        assert_eq!(w.front(), (0, None), "1 is still held");
    }
}

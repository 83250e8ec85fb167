//! The names and the declarations: `<queue>` (quorum, delivery limit, dead-letter exchange),
//! `<queue>.dlx` → `<queue>.dead`, the events exchange, the parking queues; and their clean-up.

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::{Broker, QueueError};

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

/// The declare options of a parking queue: durable (its arguments: [`parked_arguments`]).
pub(super) fn parked_options() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// A parking queue is a quorum queue like `<queue>` (replicated, durable), without a delivery
/// limit of its own that could drop what waits there (nothing consumes it but the mover).
pub(super) fn parked_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// The arguments the worker declares `<queue>` with: a quorum queue (replicated, and it counts
/// returns in `x-delivery-count`), [`DELIVERY_LIMIT`], and `<queue>.dlx` as its dead-letter
/// exchange so a message the broker drops at that limit lands in `<queue>.dead`.
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

impl Broker {
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
    pub(crate) async fn declare_events(&self, exchange: &str) -> Result<(), QueueError> {
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

    /// Declare `queue` as a parking queue (durable quorum; idempotent).
    pub(crate) async fn declare_parked(&self, queue: &str) -> Result<(), QueueError> {
        let ch = self.conn.create_channel().await?;
        let r = ch
            .queue_declare(queue.into(), parked_options(), parked_arguments())
            .await;
        let _ = ch.close(200, "ok".into()).await;
        r?;
        Ok(())
    }

    /// Move every message of `from` to `to`, headers kept (parked messages back to the queue).
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
}

//! A confirm-mode channel for publishing contact events and ccsync's own events.

use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::QueueError;

/// A confirm-mode channel.
#[derive(Clone)]
pub struct Publisher {
    pub(super) ch: Channel,
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
    pub(crate) async fn publish_events(
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
    pub(crate) fn is_open(&self) -> bool {
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

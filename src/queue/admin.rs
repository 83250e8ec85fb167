//! The `dlq` tools and the tests' look into queues: count, take, peek, replay, move.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::{Broker, QueueError, Topology};

impl Broker {
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
    pub(crate) async fn replay(&self, t: &Topology, limit: usize) -> Result<usize, QueueError> {
        // The dead-letter headers stay behind: the replayed message is the original again.
        self.move_messages(&t.dead, &t.queue, limit, false).await
    }

    /// Returns how many.
    pub(crate) async fn move_all(&self, from: &str, to: &str) -> Result<usize, QueueError> {
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

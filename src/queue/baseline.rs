//! Benchmark baselines (`ccsync bench`): a plain lapin consumer and a bare confirmed publisher.
//!
//! Moves to the bench crate: nothing in the worker uses these; they stay here only while
//! `src/bench` still calls them.

use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

use super::{Broker, QueueError};

impl Broker {
    /// Benchmark baseline (`ccsync bench`, issues 7 and 18): a plain lapin consumer. Consumes
    /// `queue` with manual acks and this prefetch, without decoding, batching or CC, and returns
    /// once `count` deliveries are acked. Times run from the first delivery to the last ack.
    ///
    /// `ack_every` = 1 acks each delivery on its own as it arrives (the slowest way to consume,
    /// issue 7's baseline). `ack_every` = k > 1 folds acks the way the worker does
    /// (the ack window): one `basic.ack` with `multiple` set for every k deliveries (and one for
    /// the rest at the end), which the broker settles from the front of the channel's unacked
    /// deliveries in one step.
    #[doc(hidden)] // moves to the bench crate
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
    #[doc(hidden)] // moves to the bench crate
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
/// Moves to the bench crate.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct AckLoopStats {
    pub first_delivery: std::time::Instant,
    pub last_ack: std::time::Instant,
    pub messages: u64,
    pub bytes: u64,
}

//! The plain lapin baselines the figures compare the product against, written with lapin directly
//! (nothing of the product's `queue` room): a consumer without decoding, batching or CC
//! (figure 1), and a bare confirmed publisher (figure 8).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use secrecy::ExposeSecret;

use crate::BenchError;

/// What [`Plain::consume_and_ack`] measured.
#[derive(Debug, Clone, Copy)]
pub struct AckLoopStats {
    pub first_delivery: Instant,
    pub last_ack: Instant,
    pub messages: u64,
    pub bytes: u64,
}

/// One lapin connection of the bench's own, for the baselines.
pub struct Plain {
    conn: Connection,
}

fn broker(what: &str, e: lapin::Error) -> BenchError {
    BenchError::Setup(format!("plain lapin {what}: {e}"))
}

impl Plain {
    /// Connect to the broker the workers use (`CCSYNC_AMQP_URL`, else the default).
    pub async fn connect(settings: &ccsync::config::Settings) -> Result<Plain, BenchError> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("ccsync-bench-{}", std::process::id()).into());
        let conn = Connection::connect(settings.amqp().url.expose_secret(), props)
            .await
            .map_err(|e| broker("connect", e))?;
        Ok(Plain { conn })
    }

    /// A plain lapin consumer: consumes `queue` with manual acks and this prefetch (the worker's),
    /// without decoding, batching or CC, and returns once `count` deliveries are acked. Times run
    /// from the first delivery to the last ack.
    ///
    /// `ack_every` = 1 acks each delivery on its own as it arrives (the slowest way to consume,
    /// issue 7's baseline). `ack_every` = k > 1 folds acks the way the worker does: one
    /// `basic.ack` with `multiple` set for every k deliveries (and one for the rest at the end),
    /// which the broker settles from the front of the channel's unacked deliveries in one step.
    pub async fn consume_and_ack(
        &self,
        queue: &str,
        prefetch: u16,
        count: u64,
        ack_every: u64,
    ) -> Result<AckLoopStats, BenchError> {
        let err = |e| broker("consumer", e);
        let ch = self.conn.create_channel().await.map_err(err)?;
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(err)?;
        let tag = format!("ccsync-bench-{}", uuid::Uuid::new_v4());
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        let ack_every = ack_every.max(1);
        let mut first = None;
        let mut received = 0u64;
        let mut bytes = 0u64;
        while received < count {
            let Some(d) = consumer.next().await else {
                return Err(BenchError::Setup(
                    "plain lapin consumer cancelled before every message arrived".into(),
                ));
            };
            let d = d.map_err(err)?;
            first.get_or_insert_with(Instant::now);
            bytes += d.data.len() as u64;
            received += 1;
            if ack_every == 1 {
                d.acker.ack(BasicAckOptions::default()).await.map_err(err)?;
            } else if received.is_multiple_of(ack_every) || received == count {
                ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                    .await
                    .map_err(err)?;
            }
        }
        let last_ack = Instant::now();
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

    /// A bare confirmed lapin publisher: publishes every body to `queue` through the default
    /// exchange, persistent and `application/json`, as `ccsync publish` does, on one confirm-mode
    /// channel with at most `window` publishes awaiting their confirm, and returns once every one
    /// is confirmed; no reading, no validation. Returns the time from the first publish to the
    /// last confirm.
    pub async fn publish_confirmed(
        &self,
        queue: &str,
        bodies: &[Vec<u8>],
        window: usize,
    ) -> Result<Duration, BenchError> {
        let err = |e| broker("publisher", e);
        let ch = self.conn.create_channel().await.map_err(err)?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(err)?;
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let started = Instant::now();
        let mut pending: VecDeque<lapin::PublisherConfirm> = VecDeque::with_capacity(window.max(1));
        let settle = |c: lapin::Confirmation| {
            if c.is_nack() {
                Err(BenchError::Setup(format!(
                    "the broker nacked a publish to {queue}"
                )))
            } else {
                Ok(())
            }
        };
        for body in bodies {
            if pending.len() >= window.max(1)
                && let Some(oldest) = pending.pop_front()
            {
                settle(oldest.await.map_err(err)?)?;
            }
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    props.clone(),
                )
                .await
                .map_err(err)?;
            pending.push_back(confirm);
        }
        for c in pending {
            settle(c.await.map_err(err)?)?;
        }
        let took = started.elapsed();
        let _ = ch.close(200, "bye".into()).await;
        Ok(took)
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

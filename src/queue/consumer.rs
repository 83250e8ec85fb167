//! The consuming side: a consumer, its pump task, pause and resume, and the ordered close.

use futures_util::StreamExt as _;
use lapin::Channel;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use super::delivery::incoming;
use super::window::{Unsettled, Window};
use super::{Broker, Incoming, QueueError, Settler, Topology};

impl Broker {
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
            settler: Settler::new(dl, t),
        })
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

    /// A delivery that has already arrived, without waiting: lets the pipeline read a burst in
    /// one turn of its loop instead of one turn (timers, gauges, checks) per delivery.
    pub(crate) fn next_ready(&mut self) -> Option<Result<Incoming, QueueError>> {
        self.rx.try_recv().ok()
    }

    pub fn settler(&self) -> Settler {
        self.settler.clone()
    }

    /// Stop receiving new deliveries; settled and unsettled ones stay valid until `close`.
    pub(crate) async fn cancel(&self) -> Result<(), QueueError> {
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
    pub(crate) async fn pause(&mut self) -> Result<(), QueueError> {
        self.cancel().await
    }

    /// Receive again after [`Consumer::pause`]: a new `basic.consume` on the same channel (its
    /// delivery tags go on counting, so the ack window stays valid), with a new prefetch count
    /// when given (a channel's `basic.qos` applies to the consumers started after it).
    pub(crate) async fn resume(&mut self, prefetch: Option<u16>) -> Result<(), QueueError> {
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

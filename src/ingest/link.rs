//! The ingest server's broker link: one connection kept up in the background (reconnecting with
//! backoff), the worker's topology declared on each connect, and a few confirm-mode channels
//! that publish `mandatory` to the worker's queue in turn.
//!
//! Readiness is this link: `/readyz` answers 200 only while the connection is up, so a replica
//! that lost the broker leaves the Service instead of answering 503s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::AmqpEndpoint;
use tokio_util::sync::CancellationToken;

use crate::queue::{Broker, QueueError, QueuePublisher, Topology};

/// Why messages were not published (answered 503 with `Retry-After`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unavailable {
    #[error("the broker is not connected (reconnecting)")]
    Down,
    #[error("the broker has blocked publishing (a memory or disk alarm)")]
    Blocked,
    #[error("the broker did not confirm within {0:?}")]
    Timeout(Duration),
    #[error("the broker did not take every message: {0}")]
    Failed(QueueError),
}

struct Connected {
    broker: Broker,
    publishers: Vec<QueuePublisher>,
    next: AtomicUsize,
}

impl Connected {
    fn healthy(&self) -> bool {
        self.broker.is_connected() && self.publishers.iter().all(QueuePublisher::is_open)
    }
}

/// A broker connection kept up by a background task.
pub(crate) struct Link {
    current: Mutex<Option<Arc<Connected>>>,
}

/// How often the keeper looks at the connection.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// One connect attempt's bound (an address that drops packets must not hang the keeper).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Link {
    /// Start keeping a connection to `url` until `shutdown`; returns at once (not yet connected).
    pub(crate) fn spawn(
        url: AmqpEndpoint,
        topology: Topology,
        channels: usize,
        shutdown: CancellationToken,
    ) -> (Arc<Link>, tokio::task::JoinHandle<()>) {
        let link = Arc::new(Link {
            current: Mutex::new(None),
        });
        let keeper = tokio::spawn(keep(link.clone(), url, topology, channels, shutdown));
        (link, keeper)
    }

    fn connected(&self) -> Option<Arc<Connected>> {
        self.current.lock().expect("link lock").clone()
    }

    /// Up: connected, channels open (publishing may still be blocked).
    pub(crate) fn ready(&self) -> bool {
        self.connected().is_some_and(|c| c.healthy())
    }

    /// Publish every body and wait for every confirm, at most `timeout`.
    ///
    /// `Ok` means the broker stored each one in the worker's queue. On `Err` some may have been
    /// stored (a connection lost mid-batch): the sender retries with the same message ids, and a
    /// message applied twice is the same upsert.
    pub(crate) async fn publish(
        &self,
        bodies: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(), Unavailable> {
        let c = self.connected().ok_or(Unavailable::Down)?;
        if !c.broker.is_connected() {
            return Err(Unavailable::Down);
        }
        if c.broker.is_blocked() {
            return Err(Unavailable::Blocked);
        }
        let i = c.next.fetch_add(1, Ordering::Relaxed) % c.publishers.len();
        let results = tokio::time::timeout(timeout, c.publishers[i].publish_all(bodies))
            .await
            .map_err(|_| Unavailable::Timeout(timeout))?;
        match results.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(e) => Err(Unavailable::Failed(e)),
        }
    }
}

async fn keep(
    link: Arc<Link>,
    url: AmqpEndpoint,
    topology: Topology,
    channels: usize,
    shutdown: CancellationToken,
) {
    let m = crate::telemetry::metrics();
    let mut backoff = Duration::from_millis(250);
    loop {
        let healthy = link.connected().is_some_and(|c| c.healthy());
        if !healthy {
            m.set_ingest_broker_up(false);
            if let Some(old) = link.current.lock().expect("link lock").take() {
                tracing::warn!("broker connection lost; reconnecting");
                if let Ok(old) = Arc::try_unwrap(old) {
                    tokio::spawn(old.broker.close());
                }
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, connect(&url, &topology, channels)).await {
                Ok(Ok(c)) => {
                    tracing::info!(queue = %topology.queue, "broker connected; ingest is ready");
                    *link.current.lock().expect("link lock") = Some(Arc::new(c));
                    backoff = Duration::from_millis(250);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot connect to the broker");
                }
                Err(_) => {
                    tracing::warn!(retry_in = ?backoff, "connecting to the broker timed out");
                }
            }
        }
        if let Some(c) = link.connected() {
            m.set_ingest_broker_up(c.healthy() && !c.broker.is_blocked());
        }
        let wait = if link.ready() { CHECK_EVERY } else { backoff };
        if !link.ready() {
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    m.set_ingest_broker_up(false);
    let last = link.current.lock().expect("link lock").take();
    if let Some(Ok(c)) = last.map(Arc::try_unwrap) {
        // A broker that vanished without closing the socket never answers the close: do not
        // hold the shutdown for it (the process exits and the socket with it).
        if tokio::time::timeout(CONNECT_TIMEOUT, c.broker.close())
            .await
            .is_err()
        {
            tracing::warn!("the broker did not answer the connection close; leaving it");
        }
    }
}

async fn connect(
    url: &AmqpEndpoint,
    topology: &Topology,
    channels: usize,
) -> Result<Connected, QueueError> {
    let broker = Broker::connect(url).await?;
    // The worker's queue and its dead-letter pair, so a mandatory publish has somewhere to go
    // before the first worker starts.
    broker.declare(topology).await?;
    let mut publishers = Vec::with_capacity(channels);
    for _ in 0..channels {
        publishers.push(broker.queue_publisher(topology).await?);
    }
    Ok(Connected {
        broker,
        publishers,
        next: AtomicUsize::new(0),
    })
}

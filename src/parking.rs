//! Per-account parking (issue 13, DESIGN §3 "only that account's messages wait"): when one CC
//! account's connection is dead (revoked, 180 days idle, logged out), its messages move to their
//! own queue, `<queue>.parked.<account>`, and every other account keeps flowing through
//! `<queue>`. When a token set for the account appears again (`ccsync auth login --account A`),
//! the parked messages move back to `<queue>` by themselves, with no manual replay.
//!
//! Why a parking queue per account (rather than a delayed re-publish or a consumer per account):
//! the messages stay durable in the broker and out of `<queue>`'s way (a delayed re-publish would
//! cycle them through every replica all day, spending CPU and a redelivery at each turn), the
//! operator sees exactly what waits for whom in the RabbitMQ UI, and nothing changes for
//! upstream publishers (one queue, default exchange).
//!
//! Surviving restarts and replicas: the accounts with a parking queue are a set in Redis
//! (`<prefix>:parked`), written before the first message is parked. Every worker reads it at
//! start and every [`RESCAN`]; for each account it follows, it waits for a live token set, moves
//! the parked messages back (each republished and confirmed before it is removed, so a crash
//! duplicates, never loses) and drops the account from the set once its queue is empty. Several
//! replicas may move at once: each message still moves once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{AmqpEndpoint, Settings};
use crate::pipeline::TokenSource;
use crate::queue::{Broker, Topology};
use crate::redis::Redis;
use crate::telemetry::metrics;

/// The accounts Redis lists as parked (for `ccsync auth status`).
pub(crate) async fn parked_accounts(
    settings: &Settings,
) -> Result<std::collections::BTreeSet<String>, ParkingError> {
    let pool = Redis::from_settings(settings).map_err(|e| ParkingError(e.to_string()))?;
    let mut c = pool.get().await.map_err(|e| ParkingError(e.to_string()))?;
    let v: Vec<String> = redis::cmd("SMEMBERS")
        .arg(parked_key(settings))
        .query_async(&mut c)
        .await
        .map_err(|e| ParkingError(e.to_string()))?;
    Ok(v.into_iter().collect())
}

fn parked_key(settings: &Settings) -> String {
    format!("{}:parked", settings.redis.key_prefix)
}

/// How often a worker looks in Redis for accounts parked by another replica.
pub(crate) const RESCAN: Duration = Duration::from_secs(30);

/// Redis unavailable.
#[derive(Debug, thiserror::Error)]
#[error("parking registry unavailable (Redis): {0}")]
pub(crate) struct ParkingError(String);

/// The parked accounts, shared by every replica through Redis.
pub(crate) struct Parking {
    pool: Redis,
    key: String,
    amqp: AmqpEndpoint,
    topology: Topology,
    tokens: Arc<dyn TokenSource>,
    /// Accounts this process parks messages for (their messages skip CC).
    parked: Mutex<HashSet<String>>,
    /// The accounts `ccsync_paused{reason="auth"}` last showed as parked.
    shown: Mutex<HashSet<String>>,
    /// Accounts this process has a mover running for.
    following: Mutex<HashSet<String>>,
}

impl Parking {
    pub(crate) fn connect(
        settings: &Settings,
        tokens: Arc<dyn TokenSource>,
    ) -> Result<Arc<Parking>, ParkingError> {
        let pool = Redis::from_settings(settings).map_err(|e| ParkingError(e.to_string()))?;
        Ok(Arc::new(Parking {
            pool,
            key: parked_key(settings),
            amqp: settings.amqp(),
            topology: Topology::for_queue(&settings.queue),
            tokens,
            parked: Mutex::new(HashSet::new()),
            shown: Mutex::new(HashSet::new()),
            following: Mutex::new(HashSet::new()),
        }))
    }

    /// Whether this process parks `account`'s messages.
    pub(crate) fn is_parked(&self, account: &str) -> bool {
        self.parked.lock().expect("not poisoned").contains(account)
    }

    /// `account`'s connection is dead: park its messages from now on, record it in Redis (before
    /// any message is parked, so the mover of some replica always finds it), and follow it.
    pub(crate) async fn park(self: &Arc<Self>, account: &str) -> Result<(), ParkingError> {
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| ParkingError(e.to_string()))?;
        let _: i64 = redis::cmd("SADD")
            .arg(&self.key)
            .arg(account)
            .query_async(&mut c)
            .await
            .map_err(|e| ParkingError(e.to_string()))?;
        let first = self
            .parked
            .lock()
            .expect("not poisoned")
            .insert(account.to_string());
        if first {
            tracing::error!(account, queue = %self.topology.parked(account), "the CC connection of account '{account}' is dead: its messages wait in their parking queue while every other account goes on; run `ccsync auth login --account {account}` and they sync by themselves");
            self.update_metrics();
        }
        self.follow(account);
        Ok(())
    }

    /// Follow every account Redis lists as parked (at start and every [`RESCAN`]), until
    /// `shutdown`.
    pub(crate) async fn rescan_forever(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            match self.listed().await {
                Ok(accounts) => {
                    for a in accounts {
                        self.follow(&a);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the parked accounts; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESCAN) => {}
            }
        }
    }

    async fn listed(&self) -> Result<Vec<String>, ParkingError> {
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| ParkingError(e.to_string()))?;
        redis::cmd("SMEMBERS")
            .arg(&self.key)
            .query_async(&mut c)
            .await
            .map_err(|e| ParkingError(e.to_string()))
    }

    async fn unlist(&self, account: &str) -> Result<(), ParkingError> {
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| ParkingError(e.to_string()))?;
        let _: i64 = redis::cmd("SREM")
            .arg(&self.key)
            .arg(account)
            .query_async(&mut c)
            .await
            .map_err(|e| ParkingError(e.to_string()))?;
        Ok(())
    }

    fn follow(self: &Arc<Self>, account: &str) {
        let new = self
            .following
            .lock()
            .expect("not poisoned")
            .insert(account.to_string());
        if new {
            let me = self.clone();
            let account = account.to_string();
            tokio::spawn(async move { me.mover(account).await });
        }
    }

    /// `ccsync_parked_accounts`, and `ccsync_paused{reason="auth",account}` of every account
    /// this process parks or has stopped parking.
    fn update_metrics(&self) {
        let parked = self.parked.lock().expect("not poisoned").clone();
        let m = metrics();
        m.set_parked_accounts(parked.len());
        let mut shown = self.shown.lock().expect("not poisoned");
        for a in shown.iter().filter(|a| !parked.contains(*a)) {
            m.set_paused("auth", a, false);
        }
        for a in &parked {
            m.set_paused("auth", a, true);
        }
        *shown = parked;
    }

    /// Wait for the account's token set, move its parked messages back, and stop following it
    /// once its parking queue is empty.
    async fn mover(self: Arc<Self>, account: String) {
        let parked_q = self.topology.parked(&account);
        let mut backoff = Duration::from_secs(1);
        loop {
            self.tokens.wait_until_alive(&account).await;
            // From now on this process sends the account's messages to CC again.
            if self.parked.lock().expect("not poisoned").remove(&account) {
                tracing::info!(
                    account,
                    "token set is back; moving the parked messages to the queue"
                );
                self.update_metrics();
            }
            let moved = async {
                let broker = Broker::connect(&self.amqp).await?;
                broker.declare_parked(&parked_q).await?;
                let n = broker.move_all(&parked_q, &self.topology.queue).await?;
                let left = broker.queue_len(&parked_q).await?;
                broker.close().await;
                Ok::<_, crate::queue::QueueError>((n, left))
            }
            .await;
            match moved {
                Ok((n, 0)) => {
                    if n > 0 {
                        tracing::info!(account, moved = n, "parked messages are back in the queue");
                        metrics().settled("unparked", &account, n as u64);
                    }
                    if let Err(e) = self.unlist(&account).await {
                        tracing::warn!(account, error = %e, "cannot drop the account from the parked set; the next scan retries");
                    }
                    self.following
                        .lock()
                        .expect("not poisoned")
                        .remove(&account);
                    return;
                }
                Ok(_) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(account, error = %e, "cannot move parked messages yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

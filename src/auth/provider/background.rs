//! The per-process background task: metrics, proactive and keep-alive refreshes, adopting newer
//! records, and writing the set back when Redis lost it.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Account, Cached, TokenProvider, Want, now_ms};
use crate::auth::store::Stored;

/// How often the background task looks in Redis for accounts it does not follow yet, whatever
/// the change counter says (a `SCAN` of the keyspace: kept rare). Logins, imports, connect links
/// and logouts also bump `{prefix}:auth:changes`, which the task reads every second (one `GET`),
/// so a newly connected account is followed (keep-alive, `ccsync_auth_state`) within seconds.
pub(crate) const DISCOVER_EVERY: Duration = Duration::from_secs(60);

impl TokenProvider {
    /// Follow every account that has a token set in Redis (not only those this process has
    /// used): keep-alive refreshes and `ccsync_auth_state{account}` then cover all of them, from
    /// the start, whatever traffic there is (issue 13: after a restart with no traffic nothing
    /// refreshed, and the 180-day expiry could strike quietly).
    pub(crate) async fn discover(&self) {
        match self.store.accounts().await {
            Ok(names) => {
                for name in names {
                    let acct = self.account(&name);
                    if matches!(acct.snapshot(), Cached::Empty) {
                        self.load_discovered(&acct).await;
                    }
                }
                self.update_auth_state();
            }
            Err(e) => debug!(error = %e, "auth: cannot list the accounts in Redis"),
        }
    }

    /// A discovered account's record: adopt a live set, note a dead one.
    async fn load_discovered(&self, acct: &Arc<Account>) {
        match self.store.load(&acct.name).await {
            Ok(Stored::Live(set)) => {
                if self.check_jwt(&acct.name, &set).await.is_ok() {
                    self.adopt(acct, set);
                }
            }
            Ok(Stored::Dead { generation, reason }) => {
                self.declare_dead(acct, generation, &reason, "dead_record")
            }
            Ok(Stored::Absent) => {}
            Err(e) => {
                debug!(account = %acct.name, error = %e, "auth: cannot load a discovered account")
            }
        }
    }

    /// Keep-alive, proactive refresh, Redis write-back, revival and metrics, once per second for
    /// every account this process has used.
    pub fn spawn_background(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut discovered = tokio::time::Instant::now();
            // The change counter as last seen; `None` until the first read, which also discovers
            // (one more `SCAN` at start closes the gap between the caller's discovery and it).
            let mut seen: Option<u64> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // Accounts another replica, `ccsync auth login` or a connect link added since.
                let changed = match me.store.changes().await {
                    Ok(n) => {
                        let moved = seen != Some(n);
                        seen = Some(n);
                        moved
                    }
                    Err(e) => {
                        debug!(error = %e, "auth: cannot read the change counter");
                        false
                    }
                };
                if changed || discovered.elapsed() >= DISCOVER_EVERY {
                    me.discover().await;
                    discovered = tokio::time::Instant::now();
                }
                for acct in me.all_accounts() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = me.background_once(&acct) => {}
                    }
                }
            }
        })
    }

    async fn background_once(&self, acct: &Arc<Account>) {
        let name = acct.name.as_str();
        match acct.snapshot() {
            Cached::Live(set) => {
                self.metrics
                    .token_set_seen(name, set.expires_at, set.refreshed_at);
                // Write-back / adopt-newer, cheaply (one HGET).
                match self.store.generation(name).await {
                    Ok(None) => {
                        if let Ok(true) = self.store.restore(name, &set).await {
                            warn!(account = %name, generation = set.generation,
                                "auth: Redis had lost the token set; wrote ours back");
                        }
                    }
                    Ok(Some(g)) if g > set.generation => {
                        // Another replica refreshed, or an operator logged in / out: take the
                        // newer record now rather than at our next refresh.
                        if let Ok(_guard) = acct.flight.try_lock() {
                            match self.store.load(name).await {
                                Ok(Stored::Live(newer)) if newer.generation > set.generation => {
                                    let verified = self.check_jwt(name, &newer).await;
                                    if verified.is_ok() {
                                        self.adopt(acct, newer);
                                    }
                                }
                                Ok(Stored::Dead { generation, reason })
                                    if generation > set.generation =>
                                {
                                    self.declare_dead(acct, generation, &reason, "dead_record");
                                }
                                _ => {}
                            }
                        }
                        return;
                    }
                    Ok(Some(g)) if g < set.generation => {
                        let _ = self.store.restore(name, &set).await;
                    }
                    Ok(Some(_)) => {}
                    Err(e) => debug!(account = %name, error = %e, "auth: background check failed"),
                }
                let keepalive_due = crate::clock::now_unix() - set.refreshed_at
                    >= self.tuning.keepalive_secs as i64;
                let refresh_due = set.needs_refresh(now_ms(), self.tuning.refresh_before_secs);
                if (keepalive_due || refresh_due)
                    && let Ok(guard) = acct.flight.try_lock()
                {
                    let want = if keepalive_due {
                        Want::KeepAlive
                    } else {
                        Want::Fresh
                    };
                    if let Err(e) = self.refresh_locked(acct, guard, want).await {
                        debug!(account = %name, error = %e, "auth: background refresh did not complete");
                    }
                }
            }
            Cached::Dead { generation, .. } => {
                if let Ok(Some(g)) = self.store.generation(name).await
                    && g > generation
                    && let Ok(_guard) = acct.flight.try_lock()
                    && let Ok(Stored::Live(set)) = self.store.load(name).await
                {
                    self.adopt(acct, set);
                }
            }
            Cached::Empty => {}
        }
    }
}

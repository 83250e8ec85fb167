//! [`TokenProvider`]: the access token for every CC call, and the refresh protocol of DESIGN §3.
//!
//! # Hot path
//! Each account's token set is cached in memory; [`TokenProvider::access_token`] answers from that
//! cache while the token is outside its refresh window and never touches Redis then. Inside the
//! window one task of the process (single-flight, a per-account `tokio::sync::Mutex`) runs the
//! protocol below; other callers keep getting the still-valid cached token while more than half of
//! the window remains, and wait for the refresher only after that (so no request goes out with a
//! token about to lapse, and none of them queues behind Redis while the token is fine).
//!
//! # Refresh protocol (one account)
//! 1. Read the stored set. A newer generation than ours (another replica refreshed, or a new
//!    `auth login`) is adopted without calling CC. A dead record is honoured (no replica burns a
//!    token-endpoint call on a refresh token another one already found dead). An absent record
//!    while we hold a set in memory means Redis lost its data: we write ours back ("highest
//!    generation wins") instead of declaring the connection dead.
//! 2. `SET lock owner NX PX lease`. Not ours: wait with backoff (25 ms → 200 ms) for the generation
//!    to move, bounded by `auth.wait_bound_secs` ([`AuthError::Unavailable`] after that).
//! 3. Under the lock, re-read (someone may have refreshed between 1 and 2).
//! 4. Note any refresh-in-flight marker for this generation: its holder died or gave up mid-call,
//!    so the stored refresh token may already be spent. We try it exactly once more (a rotation
//!    grace window may still accept it); `invalid_grant` then means dead — no storm of retries.
//! 5. Write our own marker (generation + refresh-token fingerprint, never the token), pass the
//!    shared 1 request/s token gate, call the token endpoint.
//! 6. Success: write generation + 1 with a compare-and-set that also clears the marker
//!    atomically. Lost the CAS (our lease ran out and someone wrote a newer set): adopt theirs.
//!    Transport failure / 5xx / 429: retry with the *same* refresh token as soon as the gate
//!    allows, up to [`MAX_TOKEN_TRIES`] tries, then give up for now, leaving the marker (the token
//!    may be spent). `invalid_grant`: mark the set dead in Redis, log one line naming the fix.
//!
//! Strictest-reading choices where DESIGN is silent:
//! * A fresh set from `auth login`/`import` has refresh mode `Unknown`, handled as rotating.
//! * `invalid_client` (bad client id/secret, or a regenerated secret) makes the account dead for
//!   this replica only (its configuration is at fault, not the shared refresh token), with a fix
//!   naming the configuration keys.
//! * If Redis fails right after CC rotated the token, the new set is kept in memory and served;
//!   the background task writes it back when Redis returns (the restore path).
//! * A proactive refresh that fails transiently does not fail calls: the cached token is served
//!   while more than a quarter of the window is left (a 401 never falls back).
//! * A replica keeps using a still-valid access token after another replica found the refresh
//!   token dead (CC accepts it until `exp`); it pauses at its own next refresh, or sooner when its
//!   background task sees a newer record (logout).
//! * A login's generation is at least the Unix time in milliseconds, so it outranks any set held
//!   in a replica's memory even after Redis lost its data.
//!
//! Files: `cache` (the per-account in-memory state and the registry of accounts), `refresh`
//! (steps 1–6), `background` (keep-alive, proactive refresh, write-back, metrics), `state`
//! (adopt / dead / gauge / JWKS check), `jwks` (key set with refetch).

mod background;
mod cache;
mod jwks;
mod refresh;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::debug;

use super::store::{Store, StoreError, Stored};
use super::tokenset::{AccessToken, TokenSet};
use crate::cc::oauth::OAuthClient;
use crate::config::Settings;
use crate::ratelimit::Gate;
use crate::telemetry::{Metrics, metrics};
use cache::{Account, Cached};
use jwks::Jwks;

/// Token-endpoint calls per refresh attempt (the first plus retries with the same refresh token).
pub const MAX_TOKEN_TRIES: u32 = 4;

/// What the caller does next when no access token can be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Re-authorize: pause consuming for this account until a new token set appears
    /// (`ccsync auth login --account <account>`). [`TokenProvider::wait_until_alive`] returns then.
    #[error(
        "auth: the connection for account {account} is dead ({reason}); re-authorize with `ccsync auth login --account {account}`"
    )]
    Dead {
        account: String,
        reason: String,
        /// No token set was ever stored for this account (as far as Redis and this process
        /// know): a message for it names an account nobody authorized.
        never_authorized: bool,
    },
    /// Transient (Redis down, token endpoint 5xx/timeouts, waited too long for another replica):
    /// keep messages unacked and retry later.
    #[error("auth: temporarily unavailable ({0}); retry later")]
    Unavailable(String),
}

/// The dead reason of an account that has no token set in Redis (and none in this process):
/// never authorized, or logged out by deleting the set.
pub(crate) const NO_TOKEN_SET: &str = "no token set in Redis";

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Unavailable(e.to_string())
    }
}

/// Tunables taken from `settings.auth`.
#[derive(Debug, Clone)]
struct Tuning {
    refresh_before_secs: u64,
    lease_ms: u64,
    wait_bound: Duration,
    keepalive_secs: u64,
}

/// What the caller needs from a refresh.
#[derive(Clone, Copy)]
enum Want<'a> {
    /// A token outside its refresh window.
    Fresh,
    /// A token other than this one (CC answered 401 to it).
    Not(&'a AccessToken),
    /// A refresh newer than the keep-alive period (idle keep-alive).
    KeepAlive,
}

/// The access-token source for every CC call. One per process, shared as `Arc`.
pub struct TokenProvider {
    store: Store,
    oauth: OAuthClient,
    gate: Arc<dyn Gate>,
    tuning: Tuning,
    /// Signing keys when `auth.jwks_url` is set: every access token is verified before this
    /// process first uses it.
    jwks: Option<Jwks>,
    accounts: Mutex<HashMap<String, Arc<Account>>>,
    /// Where this provider records: the process-wide registry, unless a test gave it its own.
    metrics: &'static Metrics,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("store", &self.store)
            .field("tuning", &self.tuning)
            .finish()
    }
}

fn now_ms() -> i64 {
    (crate::clock::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl TokenProvider {
    /// Connect to Redis (one PING, so a wrong URL fails at start) and prepare the token-endpoint
    /// client. `gate` must be the shared limiter (`CallKind::Token`: 1 request/s across replicas).
    pub async fn connect(
        settings: &Settings,
        gate: Arc<dyn Gate>,
    ) -> Result<Arc<TokenProvider>, AuthError> {
        Self::connect_with_metrics(settings, gate, metrics()).await
    }

    /// [`TokenProvider::connect`], recording into `metrics` instead of the process-wide registry:
    /// a test that asserts on the provider's metrics gives it a registry of its own
    /// ([`Metrics::isolated`]), since the other tests of its process record into the global one.
    pub async fn connect_with_metrics(
        settings: &Settings,
        gate: Arc<dyn Gate>,
        metrics: &'static Metrics,
    ) -> Result<Arc<TokenProvider>, AuthError> {
        let store = Store::from_settings(settings)?;
        store
            .redis()
            .check()
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let oauth = OAuthClient::new(
            &settings.auth_base_url,
            &settings.client_id,
            settings.client_secret.clone(),
            Duration::from_secs(10),
        );
        let jwks = match &settings.auth.jwks_url {
            None => None,
            Some(url) => {
                let url = url.as_str();
                let keys = Jwks::fetch(&oauth, url).await?;
                Some(Jwks {
                    url: url.to_string(),
                    keys: RwLock::new(keys),
                    fetched: Mutex::new(Instant::now()),
                })
            }
        };
        Ok(Arc::new(TokenProvider {
            store,
            oauth,
            gate,
            tuning: Tuning {
                refresh_before_secs: settings.auth.refresh_before.as_secs(),
                lease_ms: settings.auth.lock_lease.as_millis() as u64,
                wait_bound: settings.auth.wait_bound,
                keepalive_secs: settings.auth.keepalive.as_secs(),
            },
            jwks,
            accounts: Mutex::new(HashMap::new()),
            metrics,
        }))
    }

    fn satisfies(&self, set: &TokenSet, want: Want<'_>) -> bool {
        let now = now_ms();
        if set.remaining_ms(now) <= 0 {
            return false;
        }
        match want {
            Want::Fresh => !set.needs_refresh(now, self.tuning.refresh_before_secs),
            Want::Not(rejected) => {
                &set.access != rejected && !set.needs_refresh(now, self.tuning.refresh_before_secs)
            }
            Want::KeepAlive => {
                crate::clock::now_unix() - set.refreshed_at < self.tuning.keepalive_secs as i64
                    && !set.needs_refresh(now, self.tuning.refresh_before_secs)
            }
        }
    }

    /// The access token for `account`: from memory while valid; runs the refresh protocol when it
    /// is in its refresh window.
    pub async fn access_token(&self, account: &str) -> Result<AccessToken, AuthError> {
        let acct = self.account(account);
        match acct.snapshot() {
            Cached::Live(set) => {
                let now = now_ms();
                if !set.needs_refresh(now, self.tuning.refresh_before_secs) {
                    return Ok(set.access);
                }
                // In the window: one task refreshes; the rest keep using the valid token while
                // more than half the window is left.
                match acct.flight.try_lock() {
                    Ok(guard) => {
                        let res = self.refresh_locked(&acct, guard, Want::Fresh).await;
                        return self.keep_valid_on_transient(&acct, res);
                    }
                    Err(_) => {
                        let window = set.refresh_window_ms(self.tuning.refresh_before_secs);
                        if set.remaining_ms(now) > window / 2 {
                            return Ok(set.access);
                        }
                    }
                }
            }
            Cached::Dead {
                generation,
                reason,
                checked,
            } => {
                // Dead: look at Redis at most once a second for a new set (login), never at CC.
                // An account nobody has authorized yet is looked up on every use: its messages
                // are dead-lettered `unknown_account` otherwise, and a connect link or a login
                // may have stored its first set a moment ago (one HGET per batch, cheaper than
                // the dead letter it saves).
                if reason != NO_TOKEN_SET && checked.elapsed() < Duration::from_secs(1) {
                    return Err(self.dead_error(&acct, &reason));
                }
                // A Redis error here changes nothing: still dead as far as we know.
                let stored = self.store.generation(account).await.ok().flatten();
                if stored.unwrap_or(0) <= generation {
                    acct.set(Cached::Dead {
                        generation,
                        reason: reason.clone(),
                        checked: Instant::now(),
                    });
                    return Err(self.dead_error(&acct, &reason));
                }
            }
            Cached::Empty => {}
        }
        let guard = acct.flight.lock().await;
        let res = self.refresh_locked(&acct, guard, Want::Fresh).await;
        self.keep_valid_on_transient(&acct, res)
    }

    /// A proactive refresh that failed transiently (Redis or the token endpoint down) must not
    /// fail calls while the cached token is still good: hand it out while more than a quarter of
    /// the refresh window is left; the next call (or the background task) tries again.
    fn keep_valid_on_transient(
        &self,
        acct: &Account,
        res: Result<AccessToken, AuthError>,
    ) -> Result<AccessToken, AuthError> {
        match res {
            Err(AuthError::Unavailable(why)) => match acct.live() {
                Some(set)
                    if set.remaining_ms(now_ms())
                        > set.refresh_window_ms(self.tuning.refresh_before_secs) / 4 =>
                {
                    debug!(account = %acct.name, reason = %why,
                        "auth: refresh postponed; the current access token is still valid");
                    Ok(set.access)
                }
                _ => Err(AuthError::Unavailable(why)),
            },
            other => other,
        }
    }

    /// CC answered 401 to `rejected`: refresh unless someone already replaced that token; at most
    /// one refresh per rejected token (every later caller with the same token gets the new one).
    pub async fn token_rejected(
        &self,
        account: &str,
        rejected: &AccessToken,
    ) -> Result<AccessToken, AuthError> {
        let acct = self.account(account);
        let guard = acct.flight.lock().await;
        self.metrics.auth_failed("unauthorized");
        self.refresh_locked(&acct, guard, Want::Not(rejected)).await
    }

    /// Returns once a usable token set exists for `account` again (a new `auth login`, or another
    /// replica's refresh). Polls the stored generation with backoff (≤ 2 s between looks).
    /// Cancel it by dropping the future (e.g. in a `select!` with shutdown).
    pub async fn wait_until_alive(&self, account: &str) {
        let acct = self.account(account);
        let mut pause = Duration::from_millis(100);
        loop {
            if let Cached::Live(set) = acct.snapshot()
                && set.remaining_ms(now_ms()) > 0
            {
                return;
            }
            match self.store.generation(account).await {
                Ok(Some(g))
                    if g > acct.generation() || matches!(acct.snapshot(), Cached::Empty) =>
                {
                    let _guard = acct.flight.lock().await;
                    match self.store.load(account).await {
                        Ok(Stored::Live(set)) if set.generation >= acct.generation() => {
                            self.adopt(&acct, set);
                            return;
                        }
                        Ok(Stored::Live(_)) | Ok(Stored::Absent) => {}
                        Ok(Stored::Dead { generation, reason }) => {
                            self.declare_dead(&acct, generation, &reason, "dead_record")
                        }
                        Err(e) => debug!(account, error = %e, "auth: waiting for a token set"),
                    }
                }
                Ok(_) => {}
                Err(e) => debug!(account, error = %e, "auth: waiting for a token set"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

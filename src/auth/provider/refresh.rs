//! The refresh protocol proper (steps 1–6 of the module docs of [`super`]), entered with the
//! account's single-flight guard held.

use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::{Account, AuthError, Cached, MAX_TOKEN_TRIES, TokenProvider, Want};
use crate::auth::lock::LeaseLock;
use crate::auth::store::{Marker, StoreError, Stored};
use crate::auth::tokenset::{AccessToken, RefreshMode, RefreshToken, TokenSet};
use crate::cc::oauth::OAuthError;
use crate::ratelimit::CallKind;

impl TokenProvider {
    /// The protocol, entered with the single-flight guard held.
    pub(super) async fn refresh_locked(
        &self,
        acct: &Account,
        _guard: tokio::sync::MutexGuard<'_, ()>,
        want: Want<'_>,
    ) -> Result<AccessToken, AuthError> {
        // Another task of this process may have finished a refresh while we waited for the guard.
        if let Some(set) = acct.live()
            && self.satisfies(&set, want)
        {
            return Ok(set.access);
        }
        let started = Instant::now();
        let deadline = started + self.tuning.wait_bound;
        // Waiters poll the generation with backoff 25 ms -> 200 ms: a holder's refresh takes one
        // token-endpoint round trip, and every waiter's callers are inside their refresh window.
        let mut pause = Duration::from_millis(25);
        loop {
            // 1. What does Redis hold?
            if let Some(token) = self.check_stored(acct, want).await? {
                self.metrics.refresh_lock_waited(started.elapsed());
                return Ok(token);
            }
            // 2. The lock.
            if let Some(lock) =
                LeaseLock::try_acquire(&self.store, &acct.name, self.tuning.lease_ms).await?
            {
                self.metrics.refresh_lock_waited(started.elapsed());
                let result = self.under_lock(acct, &lock, want).await;
                if let Err(e) = lock.release(&self.store).await {
                    // The lease runs out on its own.
                    debug!(account = %acct.name, error = %e, "auth: lock release failed");
                }
                return result;
            }
            // 3. Someone else refreshes: wait for the generation to move, bounded.
            if Instant::now() + pause > deadline {
                self.metrics.refresh_lock_waited(started.elapsed());
                return Err(AuthError::Unavailable(format!(
                    "waited {}s for another replica's token refresh",
                    self.tuning.wait_bound.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Step 1 (and 3): look at the stored set. `Some(token)`: done without calling CC. `None`: a
    /// refresh is needed. Errors: dead, or no set at all.
    async fn check_stored(
        &self,
        acct: &Account,
        want: Want<'_>,
    ) -> Result<Option<AccessToken>, AuthError> {
        let ours = acct.generation();
        match self.store.load(&acct.name).await {
            Ok(Stored::Live(set)) => {
                if set.generation < ours
                    && let Some(mine) = acct.live()
                {
                    // Redis holds an older set than our memory (lost data, then an old write):
                    // the highest generation wins.
                    if self.store.restore(&acct.name, &mine).await? {
                        warn!(account = %acct.name, generation = mine.generation,
                            "auth: Redis held an older token set; wrote ours back");
                    }
                    return Ok(None);
                }
                let usable = self.satisfies(&set, want);
                let token = set.access.clone();
                if set.generation > ours
                    || matches!(acct.snapshot(), Cached::Empty | Cached::Dead { .. })
                {
                    self.check_jwt(&acct.name, &set).await?;
                    self.adopt(acct, set);
                }
                Ok(usable.then_some(token))
            }
            Ok(Stored::Dead { generation, reason }) if generation >= ours => {
                self.declare_dead(acct, generation, &reason, "dead_record");
                Err(self.dead_error(acct, &reason))
            }
            Ok(Stored::Dead { .. }) | Ok(Stored::Absent) => match acct.live() {
                Some(mine) => {
                    // Redis lost its data (or holds only an older record): write ours back.
                    if self.store.restore(&acct.name, &mine).await? {
                        warn!(account = %acct.name, generation = mine.generation,
                            "auth: Redis had no current token set (data lost?); wrote ours back");
                    }
                    Ok(None)
                }
                None => {
                    let reason = super::NO_TOKEN_SET.to_string();
                    self.declare_dead(acct, ours, &reason, "no_token_set");
                    Err(self.dead_error(acct, &reason))
                }
            },
            Err(StoreError::Unreadable(why)) => {
                self.declare_dead(acct, ours, &why, "unreadable");
                Err(self.dead_error(acct, &why))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Steps 3–6, holding the lock.
    async fn under_lock(
        &self,
        acct: &Account,
        lock: &LeaseLock,
        want: Want<'_>,
    ) -> Result<AccessToken, AuthError> {
        if let Some(token) = self.check_stored(acct, want).await? {
            return Ok(token); // someone refreshed just before we got the lock
        }
        let Some(cur) = acct.live() else {
            return Err(AuthError::Unavailable("token set vanished".into()));
        };
        let name = acct.name.as_str();
        let fingerprint = cur.refresh.fingerprint();
        match self.store.read_marker(name).await? {
            Some(m) if m.generation == cur.generation => warn!(
                account = %name,
                generation = m.generation,
                refresh_token = %m.fingerprint,
                "auth: a previous refresh of this generation was interrupted (holder crashed or gave up); \
                 the stored refresh token may be spent — trying it once more"
            ),
            _ => {}
        }
        self.store
            .write_marker(
                name,
                &Marker {
                    generation: cur.generation,
                    fingerprint,
                    owner: lock.owner.clone(),
                    started_at: crate::clock::now_unix(),
                },
            )
            .await?;
        let m = self.metrics;
        let mut last = String::new();
        for attempt in 1..=MAX_TOKEN_TRIES {
            if let Err(e) = self.gate.acquire(CallKind::Token).await {
                return Err(AuthError::Unavailable(e.to_string()));
            }
            // Keep our lease while we retry (only if still ours; the CAS protects either way).
            let _ = lock.extend(&self.store, self.tuning.lease_ms).await;
            debug!(account = %name, attempt, generation = cur.generation, "auth: calling the token endpoint");
            match self.oauth.refresh(cur.refresh.expose()).await {
                Ok(resp) => {
                    use secrecy::ExposeSecret;
                    let new_refresh = resp
                        .refresh_token
                        .as_ref()
                        .map(|r| RefreshToken::new(r.expose_secret()));
                    let mode = RefreshMode::detect(cur.mode, &cur.refresh, new_refresh.as_ref());
                    let set = TokenSet::from_grant(
                        AccessToken::new(resp.access_token.expose_secret()),
                        new_refresh.unwrap_or_else(|| cur.refresh.clone()),
                        resp.expires_in,
                        mode,
                        cur.generation + 1,
                        crate::clock::now_unix(),
                    )
                    // The login that created the connection stays on record across refreshes.
                    .with_flow(cur.flow);
                    return self.commit(acct, &cur, set).await;
                }
                Err(OAuthError::InvalidGrant(desc)) => {
                    m.token_refreshed("invalid_grant");
                    let reason = format!(
                        "invalid_grant from the token endpoint: {}",
                        if desc.is_empty() {
                            "refresh token spent, expired or revoked"
                        } else {
                            desc.as_str()
                        }
                    );
                    // Tell every replica (none of them will call CC with this token again).
                    if let Err(e) = self.store.mark_dead(name, cur.generation, &reason).await {
                        warn!(account = %name, error = %e, "auth: could not record the dead connection in Redis");
                    }
                    self.declare_dead(acct, cur.generation, &reason, "invalid_grant");
                    return Err(self.dead_error(acct, &reason));
                }
                Err(OAuthError::InvalidClient(desc)) => {
                    m.token_refreshed("error");
                    let _ = self.store.clear_marker(name, &lock.owner).await;
                    let reason = format!(
                        "invalid_client ({desc}); check CCSYNC_CLIENT_ID / CCSYNC_CLIENT_SECRET"
                    );
                    self.declare_dead(acct, cur.generation, &reason, "invalid_client");
                    return Err(self.dead_error(acct, &reason));
                }
                Err(e) => {
                    m.token_refreshed(match &e {
                        OAuthError::Throttled => "throttled",
                        OAuthError::Transport(_) => "transport",
                        _ => "error",
                    });
                    if matches!(e, OAuthError::Throttled) {
                        self.gate
                            .report_429(CallKind::Token, crate::cc::CcErrorKey::Throttled.as_str())
                            .await;
                    }
                    warn!(account = %name, attempt, error = %e,
                        "auth: token refresh failed; retrying with the same refresh token");
                    last = e.to_string();
                }
            }
        }
        // The marker stays: the refresh token may have been spent by a call whose answer we lost.
        Err(AuthError::Unavailable(format!(
            "token refresh failed {MAX_TOKEN_TRIES} times ({last})"
        )))
    }

    /// Step 6: store the new set (CAS on the generation, clears the marker) and adopt it.
    async fn commit(
        &self,
        acct: &Account,
        cur: &TokenSet,
        set: TokenSet,
    ) -> Result<AccessToken, AuthError> {
        let m = self.metrics;
        let name = acct.name.as_str();
        match self.store.compare_and_set(name, cur.generation, &set).await {
            Ok(true) => {
                m.token_refreshed("ok");
                info!(account = %name, generation = set.generation, mode = set.mode.as_str(),
                    expires_at = set.expires_at, "auth: token set refreshed");
                // Stored first (the refresh token is good: it came from our configured,
                // TLS-authenticated token endpoint); the access token is used only if it verifies.
                self.check_jwt(name, &set).await?;
                let token = set.access.clone();
                self.adopt(acct, set);
                Ok(token)
            }
            Ok(false) => {
                // Our lease ran out and a newer set exists: it wins (DESIGN §3, fencing).
                m.token_refreshed("lost_race");
                warn!(account = %name, generation = set.generation,
                    "auth: a newer token set was written while we refreshed; using it");
                match self.store.load(name).await? {
                    Stored::Live(newer) => {
                        self.check_jwt(name, &newer).await?;
                        let token = newer.access.clone();
                        self.adopt(acct, newer);
                        Ok(token)
                    }
                    Stored::Dead { generation, reason } => {
                        self.declare_dead(acct, generation, &reason, "dead_record");
                        Err(self.dead_error(acct, &reason))
                    }
                    Stored::Absent => {
                        // Gone between our CAS and this read (Redis lost its data): ours is the
                        // newest set anyone holds; write it back rather than lose it.
                        let _ = self.store.restore(name, &set).await;
                        let token = set.access.clone();
                        self.adopt(acct, set);
                        Ok(token)
                    }
                }
            }
            Err(e) => {
                // CC already rotated: this set exists only in our memory now. Serve it; the
                // background task writes it back once Redis answers (restore path).
                m.token_refreshed("ok");
                error!(account = %name, error = %e,
                    "auth: refreshed but could not store the new token set; keeping it in memory and retrying the write");
                let token = set.access.clone();
                self.adopt(acct, set);
                Ok(token)
            }
        }
    }
}

//! This process's view of an account: adopting a set (metrics), declaring it dead (one log line
//! per transition), the `ccsync_auth_state` gauge, and the JWKS check before a token is used.

use std::time::Instant;

use tracing::{error, info};

use super::{Account, AuthError, Cached, NO_TOKEN_SET, TokenProvider};
use crate::auth::tokenset::TokenSet;

impl TokenProvider {
    pub(super) fn dead_error(&self, acct: &Account, reason: &str) -> AuthError {
        AuthError::Dead {
            account: acct.name.clone(),
            reason: reason.to_string(),
            never_authorized: reason == NO_TOKEN_SET,
        }
    }

    /// With `auth.jwks_url` set: refuse an access token whose signature does not verify.
    pub(super) async fn check_jwt(&self, account: &str, set: &TokenSet) -> Result<(), AuthError> {
        let Some(jwks) = &self.jwks else {
            return Ok(());
        };
        match jwks.verify(&self.oauth, set.access.expose()).await {
            Ok(()) => Ok(()),
            Err(why) => {
                self.metrics.auth_failed("jwt_invalid");
                error!(account = %account, generation = set.generation, reason = %why,
                    "auth: access token failed JWKS verification; not using it (check auth.jwks_url)");
                Err(AuthError::Unavailable(format!(
                    "access token failed JWKS verification: {why}"
                )))
            }
        }
    }

    /// Take a set into the cache and the metrics. Logs a revival when the account was dead.
    pub(super) fn adopt(&self, acct: &Account, set: TokenSet) {
        if let Cached::Dead { .. } = acct.snapshot() {
            info!(
                account = %acct.name,
                generation = set.generation,
                "auth: a new token set appeared; account {} is alive again",
                acct.name
            );
        }
        self.metrics
            .token_set_seen(&acct.name, set.expires_at, set.refreshed_at);
        acct.set(Cached::Live(set));
        self.update_auth_state();
    }

    pub(super) fn update_auth_state(&self) {
        let m = self.metrics;
        for a in self.all_accounts() {
            match a.snapshot() {
                Cached::Dead { .. } => m.set_auth_state(&a.name, false),
                Cached::Live(_) => m.set_auth_state(&a.name, true),
                // Not looked at yet: no series rather than a guess.
                Cached::Empty => {}
            }
        }
    }

    /// Mark the account dead in this process: metrics, and ONE error line per transition.
    pub(super) fn declare_dead(&self, acct: &Account, generation: u64, reason: &str, label: &str) {
        let already =
            matches!(acct.snapshot(), Cached::Dead { generation: g, .. } if g == generation);
        acct.set(Cached::Dead {
            generation,
            reason: reason.to_string(),
            checked: Instant::now(),
        });
        self.update_auth_state();
        if !already {
            self.metrics.auth_failed(label);
            error!(
                account = %acct.name,
                reason = %reason,
                "auth: connection for account {} is dead ({}); consumption paused, messages stay queued; fix: run `ccsync auth login --account {}`",
                acct.name, reason, acct.name
            );
        }
    }
}

//! Access-token signature checks against `auth.jwks_url` (reference §3.2).

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::AuthError;
use crate::auth::tokenset::verify_with_jwks;
use crate::cc::oauth::OAuthClient;

/// The JWKS of `auth.jwks_url`, refetched (at most once a minute) when a token names a key it
/// does not hold, so a key rotation at the authorization server needs no restart.
pub(super) struct Jwks {
    pub(super) url: String,
    pub(super) keys: RwLock<jsonwebtoken::jwk::JwkSet>,
    pub(super) fetched: Mutex<Instant>,
}

impl Jwks {
    pub(super) async fn fetch(
        oauth: &OAuthClient,
        url: &str,
    ) -> Result<jsonwebtoken::jwk::JwkSet, AuthError> {
        let body = oauth
            .fetch_jwks(url)
            .await
            .map_err(|e| AuthError::Unavailable(format!("JWKS: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| AuthError::Unavailable(format!("JWKS is not a key set: {e}")))
    }

    pub(super) async fn verify(&self, oauth: &OAuthClient, token: &str) -> Result<(), String> {
        let first = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            verify_with_jwks(token, &keys)
        };
        let Err(why) = first else { return Ok(()) };
        let stale = {
            let mut f = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
            let stale = f.elapsed() >= Duration::from_secs(60);
            if stale {
                *f = Instant::now();
            }
            stale
        };
        if !(stale && why.contains("no JWKS key")) {
            return Err(why);
        }
        let fresh = Jwks::fetch(oauth, &self.url)
            .await
            .map_err(|e| e.to_string())?;
        let res = verify_with_jwks(token, &fresh);
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        res
    }
}

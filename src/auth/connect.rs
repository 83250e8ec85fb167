//! The auth side of connect links (issue 14; the HTTP side is `crate::ingest::connect`, the link
//! format `crate::ingest::invite`): the authorize URL a link sends the customer to, and the
//! callback's code exchange and storage — the very steps of `ccsync auth login --flow code`
//! ([`super::code::exchange`], then [`super::cli::probe_and_store`]: one refresh to learn the
//! refresh-token mode, then the set stored as every login stores it).
//!
//! The set records flow `code`: that is the OAuth flow the link ran (authorization code with the
//! client secret, reference §2.4), so `auth status` names the app settings it depends on, and
//! replicas of an older version still read the record during a rollout.

use std::sync::Arc;
use std::time::Duration;

use super::code::{CodeLoginError, exchange};
use super::store::Store;
use super::tokenset::{LoginFlow, RefreshMode};
use crate::cc::oauth::OAuthClient;
use crate::config::Settings;
use crate::ratelimit::Gate;

/// Why connect links cannot be served with this configuration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectSetupError {
    #[error(
        "connect links run the authorization code flow with the app's client secret, but CCSYNC_CLIENT_SECRET is not set; set it (and CCSYNC_CLIENT_ID), or unset CCSYNC_AUTH__INVITE_SECRET"
    )]
    NeedsSecret,
    #[error("connect links need the token store in Redis: {0}")]
    Store(String),
}

/// A finished connection: the stored set's generation and refresh-token mode.
#[derive(Debug, Clone)]
pub(crate) struct Connected {
    pub generation: u64,
    pub mode: RefreshMode,
    /// Set when the refresh that tells the mode did not get through (the set is stored anyway).
    pub note: Option<String>,
}

/// What the customer can do about a failed callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// CC refused the code (too slow, or used twice): opening the link again starts afresh.
    Retry,
    /// The configuration is wrong (client id or secret, redirect URI, scope): only the operator
    /// can fix it.
    Operator,
    /// The token endpoint or Redis is unavailable: try again in a few minutes.
    Unavailable,
}

/// A callback that stored nothing: its kind, and the operator's sentence (for the log; it holds
/// no secret and no token).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub detail: String,
}

impl Failure {
    fn of(e: CodeLoginError) -> Failure {
        let kind = match &e {
            CodeLoginError::CodeRejected(_) | CodeLoginError::ProbeRefused(_) => FailureKind::Retry,
            CodeLoginError::OAuth(_) | CodeLoginError::RateLimit(_) => FailureKind::Unavailable,
            _ => FailureKind::Operator,
        };
        Failure {
            kind,
            detail: e.to_string(),
        }
    }
}

/// The token store, the confidential OAuth client and the shared token gate, for `ccsync ingest`.
pub(crate) struct Connector {
    store: Store,
    oauth: OAuthClient,
    gate: Arc<dyn Gate>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Built from the same settings as `ccsync auth login` (Redis URL, key prefix, encryption
    /// key, client id and secret), so the set lands exactly where the workers read it. `gate`
    /// is the shared limiter (the token endpoint's 1 request/s, reference §3.6).
    pub(crate) fn from_settings(
        settings: &Settings,
        gate: Arc<dyn Gate>,
    ) -> Result<Connector, ConnectSetupError> {
        let secret = settings
            .client_secret
            .clone()
            .ok_or(ConnectSetupError::NeedsSecret)?;
        let store =
            Store::from_settings(settings).map_err(|e| ConnectSetupError::Store(e.to_string()))?;
        let oauth = OAuthClient::new(
            &settings.auth_base_url,
            &settings.client_id,
            Some(secret),
            Duration::from_secs(30),
        );
        Ok(Connector { store, oauth, gate })
    }

    /// The store (single-use markers of the links).
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// CC's authorize URL for a link: the code flow with the secret (no PKCE challenge), `scope`
    /// (`auth.scope`, `contact_data offline_access` by default) and the link's `state`.
    pub(crate) fn authorize_url(&self, redirect_uri: &str, scope: &str, state: &str) -> url::Url {
        self.oauth.authorize_url(redirect_uri, scope, state, None)
    }

    /// Exchange the callback's `code` at once and store the set for `account`, as
    /// `auth login --flow code` does. Nothing is stored on any error.
    pub(crate) async fn complete(
        &self,
        account: &str,
        code: &str,
        redirect_uri: &str,
    ) -> Result<Connected, Failure> {
        let tokens = exchange(
            &self.oauth,
            self.gate.as_ref(),
            code,
            redirect_uri,
            None,
            LoginFlow::Code,
        )
        .await
        .map_err(Failure::of)?;
        match super::cli::probe_and_store(
            &self.store,
            &self.oauth,
            self.gate.as_ref(),
            account,
            LoginFlow::Code,
            tokens,
        )
        .await
        {
            Ok((generation, mode, note)) => Ok(Connected {
                generation,
                mode,
                note,
            }),
            Err(super::cli::AuthCliError::CodeLogin(e)) => Err(Failure::of(e)),
            Err(e) => Err(Failure {
                kind: FailureKind::Unavailable,
                detail: e.to_string(),
            }),
        }
    }
}

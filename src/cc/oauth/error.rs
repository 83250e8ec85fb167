//! [`OAuthError`]: how a call to the token or device endpoint failed, and the one place that
//! classifies a non-2xx answer of those endpoints (the RFC 8628 polling codes, `invalid_grant`,
//! `invalid_client`, the 1 request/s 429 of reference §3.6, 5xx).
//!
//! Its own file because this classification is the contract with the callers: the refresh
//! protocol and the device and code logins decide what to do next from it alone, while the
//! request building of [`super::OAuthClient`] never looks at it.

use serde::Deserialize;

/// How a token-endpoint call failed, and therefore what the caller does next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// The refresh token (or device code) is spent, expired or revoked: the connection is dead;
    /// a human runs `ccsync auth login`. Never retried.
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    /// Device flow: the user has not approved yet; poll again after `interval`.
    #[error("authorization_pending")]
    AuthorizationPending,
    /// Device flow: polling too fast; add 5 s to the interval (RFC 8628 §3.5).
    #[error("slow_down")]
    SlowDown,
    /// Device flow: the device code expired; start the login again.
    #[error("expired_token: the device code expired before it was approved")]
    ExpiredToken,
    /// Device flow: the user refused.
    #[error("access_denied: the authorization request was denied")]
    AccessDenied,
    /// The client id/secret is wrong (or the secret was regenerated): fix the configuration.
    #[error("invalid_client: {0}")]
    InvalidClient(String),
    /// 429 from the token endpoint (1 request/s per client, reference §3.6): wait, then retry.
    #[error("token endpoint rate limit (429)")]
    Throttled,
    /// 5xx: transient, retry with the same refresh token.
    #[error("authorization server error ({0})")]
    Server(u16),
    /// No answer (connect error, timeout, dropped connection): the request may or may not have
    /// reached CC; retry with the same refresh token.
    #[error("transport failure talking to the authorization server: {0}")]
    Transport(String),
    /// An answer ccsync does not understand; treated as transient.
    #[error("unexpected answer from the authorization server ({status}): {detail}")]
    Unexpected { status: u16, detail: String },
}

impl OAuthError {
    /// True when retrying the same request later can succeed.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            OAuthError::Throttled
                | OAuthError::Server(_)
                | OAuthError::Transport(_)
                | OAuthError::Unexpected { .. }
        )
    }

    /// Classify a non-2xx answer of the token / device endpoints.
    pub fn from_response(status: u16, body: &[u8]) -> OAuthError {
        #[derive(Deserialize, Default)]
        struct Body {
            #[serde(default)]
            error: String,
            #[serde(default)]
            error_description: String,
        }
        let b: Body = serde_json::from_slice(body).unwrap_or_default();
        // error_description is CC's human text; cap it so a huge body cannot flood a log line.
        let desc: String = b.error_description.chars().take(200).collect();
        match (status, b.error.as_str()) {
            (429, _) => OAuthError::Throttled,
            (500..=599, _) => OAuthError::Server(status),
            (_, "invalid_grant") => OAuthError::InvalidGrant(desc),
            (_, "authorization_pending") => OAuthError::AuthorizationPending,
            (_, "slow_down") => OAuthError::SlowDown,
            (_, "expired_token") => OAuthError::ExpiredToken,
            (_, "access_denied") => OAuthError::AccessDenied,
            (_, "invalid_client") | (401, _) => OAuthError::InvalidClient(desc),
            _ => OAuthError::Unexpected {
                status,
                detail: if b.error.is_empty() {
                    "no OAuth error code".into()
                } else {
                    format!("{}: {desc}", b.error)
                },
            },
        }
    }
}

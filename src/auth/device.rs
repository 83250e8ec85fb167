//! The OAuth device flow for `ccsync auth login` (reference §2.5, RFC 8628): no redirect server,
//! works from any machine that reaches Redis and the authorization server.
//!
//! Polling honours `interval` and adds 5 s on every `slow_down` (RFC 8628 §3.5); every poll also
//! passes the shared token-endpoint gate (1 request/s across replicas, reference §3.6), so a login
//! next to running workers cannot push them into 429s. It stops cleanly on `expired_token`,
//! `access_denied`, and when the device code's own `expires_in` has passed.

use std::io::Write;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::cc::oauth::{DeviceAuthorization, OAuthClient, OAuthError, TokenResponse};
use crate::ratelimit::{CallKind, Gate};

/// Why a login ended without a token set. Each says what the operator does next.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the authorization was denied in the browser; run `ccsync auth login` again to retry")]
    Denied,
    #[error("the user code expired before it was approved; run `ccsync auth login` again")]
    Expired,
    #[error(
        "the authorization server rejected the client ({0}); check CCSYNC_CLIENT_ID and that Device Flow is enabled for the app"
    )]
    InvalidClient(String),
    #[error(
        "the authorization server returned no refresh token; the scope must include offline_access (auth.scope)"
    )]
    NoRefreshToken,
    #[error("{0}; try again in a moment")]
    OAuth(OAuthError),
    #[error("the shared rate limit refused the token call: {0}")]
    RateLimit(String),
}

/// Run the device flow to the end. Prints the verification URL and user code to `out`.
pub(crate) async fn device_login(
    oauth: &OAuthClient,
    gate: &dyn Gate,
    scope: &str,
    out: &mut (dyn Write + Send),
) -> Result<TokenResponse, LoginError> {
    let dev = oauth.device_authorize(scope).await.map_err(|e| match e {
        OAuthError::InvalidClient(d) => LoginError::InvalidClient(d),
        other => LoginError::OAuth(other),
    })?;
    // stdout is the operator's terminal: the URL and the user code are meant to be seen there.
    // The device code is secret and never printed.
    let _ = writeln!(out, "To authorize ccsync, open: {}", dev.verification_uri);
    let _ = writeln!(out, "and enter the code: {}", dev.user_code);
    if let Some(full) = &dev.verification_uri_complete {
        let _ = writeln!(out, "(or open directly: {full})");
    }
    let _ = writeln!(
        out,
        "Waiting for approval (the code expires in {} s)...",
        dev.expires_in
    );
    let _ = out.flush();
    poll_device(oauth, gate, &dev).await
}

/// Poll the token endpoint for an authorized device code until it yields tokens or a final
/// answer. Waits `interval` before each poll; `slow_down` adds 5 s for all later polls.
pub async fn poll_device(
    oauth: &OAuthClient,
    gate: &dyn Gate,
    dev: &DeviceAuthorization,
) -> Result<TokenResponse, LoginError> {
    let mut interval = Duration::from_secs(dev.interval.max(1));
    // The server's `expired_token` is the normal end; this local bound (one interval of grace)
    // only stops a client whose server never says it.
    let expires = tokio::time::Instant::now() + Duration::from_secs(dev.expires_in) + interval;
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= expires {
            return Err(LoginError::Expired);
        }
        gate.acquire(CallKind::Token)
            .await
            .map_err(|e| LoginError::RateLimit(e.to_string()))?;
        match oauth
            .poll_device_token(dev.device_code.expose_secret())
            .await
        {
            Ok(t) if t.refresh_token.is_none() => return Err(LoginError::NoRefreshToken),
            Ok(t) => return Ok(t),
            Err(OAuthError::AuthorizationPending) => {}
            Err(OAuthError::SlowDown) => {
                interval += Duration::from_secs(5);
                tracing::debug!(interval_secs = interval.as_secs(), "auth login: slow_down");
            }
            Err(OAuthError::ExpiredToken) | Err(OAuthError::InvalidGrant(_)) => {
                return Err(LoginError::Expired);
            }
            Err(OAuthError::AccessDenied) => return Err(LoginError::Denied),
            Err(OAuthError::InvalidClient(d)) => return Err(LoginError::InvalidClient(d)),
            Err(OAuthError::Throttled) => {
                gate.report_429(CallKind::Token, crate::cc::CcErrorKey::Throttled.as_str())
                    .await;
            }
            // 5xx / transport: keep polling until the code expires.
            Err(e) => tracing::warn!(error = %e, "auth login: poll failed; polling on"),
        }
    }
}

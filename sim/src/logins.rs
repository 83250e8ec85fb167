//! The ways to a grant: device codes (`/device/authorize`, approval, polling) and authorization
//! codes (`/authorize`, the code exchange with PKCE or the client secret). The grants and tokens
//! they lead to are in `tokens.rs`, which documents the choices made where the reference is silent.

use std::time::Duration;

use super::config::SimConfig;
use super::jwt::SigningKey;
use super::tokens::{AuthState, OAuthError, TokenSet, random_token};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    Approved(String),
    Denied,
    Consumed,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub client_id: String,
    pub scope: String,
    pub user_code: String,
    pub expires_at: Duration,
    pub interval: u64,
    pub last_poll: Option<Duration>,
    pub status: DeviceStatus,
}

#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    client_id: String,
    redirect_uri: Option<String>,
    scope: String,
    account: String,
    expires_at: Duration,
    challenge: Option<String>,
}

fn user_code() -> String {
    // Okta-style 8 letters without vowels (no accidental words), shown as XXXX-XXXX.
    const ALPHA: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut rng = rand::rng();
    let s: String = (0..8)
        .map(|_| ALPHA[rand::Rng::random_range(&mut rng, 0..ALPHA.len())] as char)
        .collect();
    format!("{}-{}", &s[..4], &s[4..])
}
impl AuthState {
    pub fn device_authorize(
        &mut self,
        client_id: &str,
        scope: &str,
        now: Duration,
        cfg: &SimConfig,
    ) -> (String, Device) {
        let code = random_token(32);
        let mut uc = user_code();
        while self.user_codes.contains_key(&uc) {
            uc = user_code();
        }
        let dev = Device {
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            user_code: uc.clone(),
            expires_at: now + Duration::from_secs(cfg.device_expires_secs),
            interval: cfg.device_interval_secs,
            last_poll: None,
            status: if cfg.auto_approve {
                DeviceStatus::Approved("default".into())
            } else {
                DeviceStatus::Pending
            },
        };
        self.user_codes.insert(uc, code.clone());
        self.devices.insert(code.clone(), dev.clone());
        (code, dev)
    }

    /// Approve (`Some(account)`) or deny (`None`) a pending user code. False if unknown/not pending.
    pub fn decide(&mut self, user_code: &str, account: Option<&str>) -> bool {
        let code = self
            .user_codes
            .get(&user_code.trim().to_ascii_uppercase())
            .cloned();
        match code.and_then(|c| self.devices.get_mut(&c)) {
            Some(d) if d.status == DeviceStatus::Pending => {
                d.status = match account {
                    Some(a) => DeviceStatus::Approved(a.to_owned()),
                    None => DeviceStatus::Denied,
                };
                true
            }
            _ => false,
        }
    }

    pub fn poll_device(
        &mut self,
        client_id: &str,
        device_code: &str,
        now: Duration,
        cfg: &SimConfig,
        key: &SigningKey,
        wall: i64,
    ) -> Result<TokenSet, OAuthError> {
        const BAD: &str = "The device code is invalid or expired.";
        let d = self
            .devices
            .get_mut(device_code)
            .ok_or(OAuthError::InvalidGrant(BAD))?;
        if d.client_id != client_id || d.status == DeviceStatus::Consumed {
            return Err(OAuthError::InvalidGrant(BAD));
        }
        if now >= d.expires_at {
            return Err(OAuthError::ExpiredToken);
        }
        let too_fast = d
            .last_poll
            .is_some_and(|lp| now.saturating_sub(lp) < Duration::from_secs(d.interval));
        d.last_poll = Some(now);
        if too_fast {
            // RFC 8628 §3.5: the interval grows by 5 s for this and all later polls.
            d.interval += 5;
            return Err(OAuthError::SlowDown);
        }
        match d.status.clone() {
            DeviceStatus::Pending => Err(OAuthError::AuthorizationPending),
            DeviceStatus::Denied => Err(OAuthError::AccessDenied),
            DeviceStatus::Consumed => Err(OAuthError::InvalidGrant(BAD)),
            DeviceStatus::Approved(account) => {
                d.status = DeviceStatus::Consumed;
                let scope = d.scope.clone();
                Ok(self.new_grant(client_id, &account, &scope, now, cfg, key, wall))
            }
        }
    }

    /// Record an authorization code (the simulated user consented at `/authorize`). It lives
    /// `ttl` (CC: 5 minutes) and works once (reference §2.4).
    #[allow(clippy::too_many_arguments)]
    pub fn new_code(
        &mut self,
        client_id: &str,
        redirect_uri: Option<&str>,
        scope: &str,
        account: &str,
        challenge: Option<String>,
        now: Duration,
        ttl: Duration,
    ) -> String {
        let code = random_token(24);
        self.codes.insert(
            code.clone(),
            AuthCode {
                client_id: client_id.into(),
                redirect_uri: redirect_uri.map(Into::into),
                scope: scope.into(),
                account: account.into(),
                expires_at: now + ttl,
                challenge,
            },
        );
        code
    }

    /// `grant_type=authorization_code`. `authenticated`: the client sent HTTP Basic credentials
    /// (checked against `SimConfig::client_secret` by the caller). A code issued without a PKCE
    /// challenge belongs to a confidential app, whose exchange must authenticate (reference §2.3:
    /// "Confidential clients (auth-code): … Basic"); a PKCE code needs the verifier instead.
    /// Descriptions are Okta's wording (CC's server is Okta-based, reference §1, INF), so a client
    /// can tell an expired or reused code, a redirect URI mismatch and a PKCE failure apart.
    #[allow(clippy::too_many_arguments)]
    pub fn exchange_code(
        &mut self,
        client_id: &str,
        authenticated: bool,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        now: Duration,
        cfg: &SimConfig,
        key: &SigningKey,
        wall: i64,
    ) -> Result<TokenSet, OAuthError> {
        const BAD: &str = "The authorization code is invalid or has expired.";
        // Client authentication comes before the grant (RFC 6749 §5.2): an unauthenticated try
        // does not burn the code.
        if !authenticated && self.codes.get(code).is_some_and(|c| c.challenge.is_none()) {
            return Err(OAuthError::InvalidClient);
        }
        // Single use: removed whatever the outcome (the strict reading; a second try with the
        // same code is `invalid_grant` even after a failed first one).
        let c = self
            .codes
            .remove(code)
            .ok_or(OAuthError::InvalidGrant(BAD))?;
        if c.client_id != client_id || now >= c.expires_at {
            return Err(OAuthError::InvalidGrant(BAD));
        }
        if c.redirect_uri.as_deref() != redirect_uri {
            return Err(OAuthError::InvalidGrant(
                "The 'redirect_uri' does not match the redirection URI used in the authorization request.",
            ));
        }
        if let Some(ch) = &c.challenge {
            use base64::Engine;
            let v = verifier.ok_or(OAuthError::InvalidGrant(
                "PKCE verification failed: the code_verifier is required.",
            ))?;
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes());
            if base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref()) != *ch {
                return Err(OAuthError::InvalidGrant("PKCE verification failed."));
            }
        }
        Ok(self.new_grant(client_id, &c.account, &c.scope, now, cfg, key, wall))
    }
}

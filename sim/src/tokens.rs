//! The authorization server's memory: device codes, authorization codes, grants (one per
//! approval, holding its refresh token) and live access tokens. Pure logic on the simulator clock;
//! the HTTP side is in `oauth.rs`.
//!
//! Behaviour where the reference is silent (strictest plausible, reference §3.4–3.5):
//! - **Rotation**: a refresh in rotating mode returns a new refresh token and kills every older
//!   one of the grant. With a grace window (`SimConfig::grace`), the token rotated *last* keeps
//!   working until `grace` after its rotation; using it issues yet another new pair and kills the
//!   pair issued in between (the grace window stays anchored on the first rotation, so it cannot
//!   be stretched by repeated reuse). Any other old token → `invalid_grant`; with
//!   `reuse_revokes_family` the grant's current token dies too (Okta reuse detection).
//! - **Long-lived**: the same refresh token comes back; every use restarts the idle clock.
//! - **Idle expiry**: a refresh token unused for `refresh_idle_expiry` (180 days) → `invalid_grant`.
//!   For rotating tokens "unused" means "since it was issued".
//! - **Access tokens** issued before a rotation stay valid until their `exp` (they are JWTs checked
//!   at the gateway; CC never said rotation revokes them). `revoke_all` kills every access and
//!   refresh token (a user revoking the app / an account deactivated).
//! - A refresh token is bound to the client that obtained it; another client_id → `invalid_grant`.
//! - The refresh grant ignores a `scope` parameter and keeps the grant's scope.
//! - Refresh tokens are only issued when the approved scope includes `offline_access`; leaving it
//!   out is not an error (reference §2.2).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::config::{RefreshMode, SimConfig};
use super::jwt::{AUDIENCE, Claims, ISSUER, SigningKey};
pub use super::oauth_error::{DEAD_REFRESH, OAuthError};

/// A successful token response.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: u64,
    pub scope: String,
}

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
struct AuthCode {
    client_id: String,
    redirect_uri: Option<String>,
    scope: String,
    account: String,
    expires_at: Duration,
    challenge: Option<String>,
}

#[derive(Debug, Clone)]
struct Grant {
    client_id: String,
    account: String,
    scope: String,
    current: Option<String>,
    /// The token rotated last and when (for the grace window).
    previous: Option<(String, Duration)>,
    last_used: Duration,
    revoked: bool,
}

#[derive(Debug, Default)]
pub struct AuthState {
    devices: HashMap<String, Device>,
    user_codes: HashMap<String, String>,
    codes: HashMap<String, AuthCode>,
    grants: Vec<Grant>,
    /// Every refresh token ever issued → its grant (old ones too, to recognise reuse).
    refresh_index: HashMap<String, usize>,
    /// `jti` of every access token that is still honoured (until `exp`).
    access: HashSet<String>,
    /// Successful refresh-grant calls (admin counters).
    pub refreshes: u64,
}

fn random_token(bytes: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
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

    /// A new grant (an approval) with its first token pair.
    #[allow(clippy::too_many_arguments)]
    pub fn new_grant(
        &mut self,
        client_id: &str,
        account: &str,
        scope: &str,
        now: Duration,
        cfg: &SimConfig,
        key: &SigningKey,
        wall: i64,
    ) -> TokenSet {
        let gid = self.grants.len();
        let refresh = scope
            .split_whitespace()
            .any(|s| s == "offline_access")
            .then(|| random_token(32));
        if let Some(r) = &refresh {
            self.refresh_index.insert(r.clone(), gid);
        }
        self.grants.push(Grant {
            client_id: client_id.into(),
            account: account.into(),
            scope: scope.into(),
            current: refresh.clone(),
            previous: None,
            last_used: now,
            revoked: false,
        });
        let access_token = self.mint(gid, cfg, key, wall);
        TokenSet {
            access_token,
            refresh_token: refresh,
            expires_in: cfg.token_ttl.as_secs(),
            scope: scope.into(),
        }
    }

    fn mint(&mut self, gid: usize, cfg: &SimConfig, key: &SigningKey, wall: i64) -> String {
        let g = &self.grants[gid];
        let jti = format!("AT.{}", uuid::Uuid::new_v4().simple());
        let claims = Claims {
            ver: 1,
            jti: jti.clone(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: wall,
            exp: wall + cfg.token_ttl.as_secs() as i64,
            cid: g.client_id.clone(),
            uid: format!("00u{}", g.account),
            scp: g.scope.split_whitespace().map(Into::into).collect(),
            sub: format!("{}@sim.constantcontact.invalid", g.account),
            platform_user_id: g.account.clone(),
        };
        self.access.insert(jti);
        key.sign(&claims)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn refresh(
        &mut self,
        client_id: &str,
        token: &str,
        now: Duration,
        cfg: &SimConfig,
        key: &SigningKey,
        wall: i64,
    ) -> Result<TokenSet, OAuthError> {
        let dead = OAuthError::InvalidGrant(DEAD_REFRESH);
        let gid = *self.refresh_index.get(token).ok_or(dead.clone())?;
        let g = &mut self.grants[gid];
        if g.client_id != client_id || g.revoked {
            return Err(dead);
        }
        let is_current = g.current.as_deref() == Some(token);
        if is_current && now.saturating_sub(g.last_used) > cfg.refresh_idle_expiry {
            g.revoked = true;
            return Err(dead);
        }
        let new_refresh = match cfg.refresh_mode {
            RefreshMode::LongLived if is_current => token.to_owned(),
            RefreshMode::Rotating if is_current => {
                g.previous = Some((token.to_owned(), now));
                random_token(32)
            }
            RefreshMode::Rotating
                if g.previous.as_ref().is_some_and(|(p, at)| {
                    p == token && !cfg.grace.is_zero() && now.saturating_sub(*at) <= cfg.grace
                }) =>
            {
                random_token(32)
            }
            _ => {
                if cfg.reuse_revokes_family {
                    g.revoked = true;
                }
                return Err(dead);
            }
        };
        g.current = Some(new_refresh.clone());
        g.last_used = now;
        self.refresh_index.insert(new_refresh.clone(), gid);
        self.refreshes += 1;
        let scope = g.scope.clone();
        let access_token = self.mint(gid, cfg, key, wall);
        Ok(TokenSet {
            access_token,
            refresh_token: Some(new_refresh),
            expires_in: cfg.token_ttl.as_secs(),
            scope,
        })
    }

    /// Check a bearer token: signature, issuer, audience, `exp` against the simulator wall clock
    /// (`wall`, unix seconds), and that it was not revoked.
    pub fn check_access(&self, token: &str, key: &SigningKey, wall: i64) -> Option<Claims> {
        let c = key.verify(token)?;
        (c.exp > wall && self.access.contains(&c.jti)).then_some(c)
    }

    /// Kill every access and refresh token.
    pub fn revoke_all(&mut self) {
        self.access.clear();
        for g in &mut self.grants {
            g.revoked = true;
        }
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }
}

//! The authorization server's memory: device codes, authorization codes, grants (one per
//! approval, holding its refresh token) and live access tokens. Pure logic on the simulator clock;
//! the HTTP side is in `oauth.rs`, the device and authorization-code steps in `logins.rs`.
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
use super::logins::AuthCode;
pub use super::logins::{Device, DeviceStatus};
pub use super::oauth_error::{DEAD_REFRESH, OAuthError};

/// A successful token response.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: u64,
    pub scope: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Grant {
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
    pub(crate) devices: HashMap<String, Device>,
    pub(crate) user_codes: HashMap<String, String>,
    pub(crate) codes: HashMap<String, AuthCode>,
    pub(crate) grants: Vec<Grant>,
    /// Every refresh token ever issued → its grant (old ones too, to recognise reuse).
    pub(crate) refresh_index: HashMap<String, usize>,
    /// `jti` of every access token that is still honoured (until `exp`).
    pub(crate) access: HashSet<String>,
    /// Successful refresh-grant calls (admin counters).
    pub refreshes: u64,
}

pub(crate) fn random_token(bytes: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl AuthState {
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

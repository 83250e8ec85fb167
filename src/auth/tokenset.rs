//! The token set and its secret parts.
//!
//! Every secret (access token, refresh token) is its own type around a [`SecretString`] with a
//! redacted `Debug`, in the manner of oauth2-rs: a stray `{:?}` in a log line prints
//! `AccessToken([REDACTED])`, never the token. Reading the value is an explicit `expose()`.
//!
//! The expiry comes from the JWT `exp` claim (reference §3.1: `expires_in` is documented
//! inconsistently, "do not rely on it alone"). The claims are decoded without the signing key;
//! signature verification against a JWKS happens only when `auth.jwks_url` is set (see
//! [`crate::auth::provider`]). A token that is not a JWT falls back to `expires_in`, and when both
//! are missing to CC's documented 24 h (reference §3.3) — the strictest plausible reading would be
//! to refuse it, but the sim and CC both send JWTs, so the fallback only matters for odd providers.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// An access token. `Debug` is redacted; [`AccessToken::expose`] gives the value for the
/// `Authorization` header and nothing else.
#[derive(Clone)]
pub struct AccessToken(SecretString);

impl AccessToken {
    pub fn new(value: impl Into<String>) -> AccessToken {
        AccessToken(SecretString::from(value.into()))
    }
    /// The raw token, for the `Authorization: Bearer` header only. Never log it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken([REDACTED])")
    }
}

impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        // Not constant-time: both values are ours (cache vs. what a caller got from us), no
        // attacker-controlled input is compared here.
        self.expose() == other.expose()
    }
}
impl Eq for AccessToken {}

/// A refresh token: the one long-lived secret of the whole system. `Debug` is redacted.
#[derive(Clone)]
pub struct RefreshToken(SecretString);

impl RefreshToken {
    pub fn new(value: impl Into<String>) -> RefreshToken {
        RefreshToken(SecretString::from(value.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    /// A short, non-reversible tag (first 12 hex chars of SHA-256) that names this refresh token
    /// in the refresh-in-flight marker and in `auth status` without revealing it.
    pub fn fingerprint(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.expose().as_bytes());
        d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefreshToken([REDACTED] fp={})", self.fingerprint())
    }
}

impl PartialEq for RefreshToken {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}
impl Eq for RefreshToken {}

/// How the authorization server treats refresh tokens (reference §3.4), learned from refresh
/// answers: the same value back means long-lived, a new value means rotating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshMode {
    /// Not refreshed yet (fresh from login or import). Treated as rotating: the strict reading.
    Unknown,
    Rotating,
    LongLived,
}

impl RefreshMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshMode::Unknown => "unknown (not refreshed yet; treated as rotating)",
            RefreshMode::Rotating => "rotating",
            RefreshMode::LongLived => "long-lived",
        }
    }

    /// Mode learned from one refresh: `old` was sent, `new` came back (`None`: no refresh token in
    /// the answer, which CC does when `offline_access` is missing — the old one stays in use).
    pub(crate) fn detect(
        previous: RefreshMode,
        old: &RefreshToken,
        new: Option<&RefreshToken>,
    ) -> Self {
        match new {
            Some(n) if n == old => RefreshMode::LongLived,
            Some(_) => RefreshMode::Rotating,
            None => previous,
        }
    }
}

/// How a token set came to be: the login flow a person went through, or `auth import`
/// (issue 14). Recorded so `auth status` can say which app settings the account depends on;
/// sets written before this was recorded read as `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginFlow {
    /// OAuth device flow (reference §2.5).
    Device,
    /// Authorization code with the client secret (reference §2.4).
    Code,
    /// Authorization code with a PKCE S256 challenge, no secret (reference §2.1).
    Pkce,
    /// `ccsync auth import` of an existing refresh token.
    Import,
}

impl LoginFlow {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginFlow::Device => "device",
            LoginFlow::Code => "code",
            LoginFlow::Pkce => "pkce",
            LoginFlow::Import => "import",
        }
    }
}

/// One account's token set, as stored in Redis (encrypted when a key is configured).
#[derive(Clone, Debug)]
pub struct TokenSet {
    pub access: AccessToken,
    pub refresh: RefreshToken,
    /// Unix seconds from the JWT `exp`.
    pub expires_at: i64,
    /// Unix seconds the access token was issued (JWT `iat`, else our receipt time); with
    /// `expires_at` gives the lifetime that the "20 % of the lifetime" refresh rule needs.
    pub issued_at: i64,
    pub mode: RefreshMode,
    /// Unix seconds of the last successful refresh or login: the refresh token was last used (or
    /// issued) then, which is what CC's 180-day idle expiry counts from (reference §3.3).
    pub refreshed_at: i64,
    /// Bumped by every write of a new set; the compare-and-set that fences stale lock holders.
    pub generation: u64,
    /// Which login stored the set (kept across refreshes); `None` for sets stored before ccsync
    /// recorded it.
    pub flow: Option<LoginFlow>,
}

/// CC kills a refresh token that goes unused for 180 days (reference §3.3).
pub(crate) const REFRESH_IDLE_EXPIRY_SECS: i64 = 180 * 86_400;

impl TokenSet {
    /// Build a set from a token-endpoint answer received at `now`.
    pub fn from_grant(
        access: AccessToken,
        refresh: RefreshToken,
        expires_in: Option<u64>,
        mode: RefreshMode,
        generation: u64,
        now: i64,
    ) -> TokenSet {
        let claims = decode_claims(access.expose());
        let expires_at = claims
            .as_ref()
            .and_then(|c| c.exp)
            .or_else(|| expires_in.map(|e| now + e as i64))
            .unwrap_or(now + 86_400);
        let issued_at = claims
            .as_ref()
            .and_then(|c| c.iat)
            .filter(|&iat| iat < expires_at)
            .unwrap_or(now.min(expires_at - 1));
        TokenSet {
            access,
            refresh,
            expires_at,
            issued_at,
            mode,
            refreshed_at: now,
            generation,
            flow: None,
        }
    }

    /// The same set, recording the login that produced it (a refresh passes the old set's on).
    pub(crate) fn with_flow(mut self, flow: Option<LoginFlow>) -> TokenSet {
        self.flow = flow;
        self
    }

    pub(crate) fn lifetime_secs(&self) -> i64 {
        (self.expires_at - self.issued_at).max(1)
    }

    /// Seconds before `exp` at which a refresh starts: min(`refresh_before_secs`, 20 % of the
    /// lifetime) (DESIGN §3.2), in milliseconds for short test lifetimes.
    pub(crate) fn refresh_window_ms(&self, refresh_before_secs: u64) -> i64 {
        let fifth = self.lifetime_secs() * 1000 / 5;
        fifth.min(refresh_before_secs as i64 * 1000)
    }

    /// Milliseconds of validity left at `now_ms` (Unix milliseconds).
    pub(crate) fn remaining_ms(&self, now_ms: i64) -> i64 {
        self.expires_at * 1000 - now_ms
    }

    pub(crate) fn needs_refresh(&self, now_ms: i64, refresh_before_secs: u64) -> bool {
        self.remaining_ms(now_ms) < self.refresh_window_ms(refresh_before_secs)
    }

    /// Seconds left before CC's 180-day idle expiry of the refresh token.
    pub(crate) fn idle_expiry_left_secs(&self, now: i64) -> i64 {
        self.refreshed_at + REFRESH_IDLE_EXPIRY_SECS - now
    }

    /// Serialize for storage (the caller encrypts).
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let w = Wire {
            access_token: self.access.expose().to_string(),
            refresh_token: self.refresh.expose().to_string(),
            expires_at: self.expires_at,
            issued_at: self.issued_at,
            mode: self.mode,
            refreshed_at: self.refreshed_at,
            generation: self.generation,
            flow: self.flow,
        };
        serde_json::to_vec(&w).expect("plain struct serializes")
    }

    pub(crate) fn from_json(bytes: &[u8]) -> Result<TokenSet, serde_json::Error> {
        let w: Wire = serde_json::from_slice(bytes)?;
        Ok(TokenSet {
            access: AccessToken::new(w.access_token),
            refresh: RefreshToken::new(w.refresh_token),
            expires_at: w.expires_at,
            issued_at: w.issued_at,
            mode: w.mode,
            refreshed_at: w.refreshed_at,
            generation: w.generation,
            flow: w.flow,
        })
    }
}

/// The stored form. Private: it holds the tokens as plain strings only for the instant of
/// (de)serialization.
#[derive(Serialize, Deserialize)]
struct Wire {
    access_token: String,
    refresh_token: String,
    expires_at: i64,
    issued_at: i64,
    mode: RefreshMode,
    refreshed_at: i64,
    generation: u64,
    /// Absent in sets written before issue 14 (read as `None`); older binaries ignore it (serde
    /// skips unknown fields), so replicas of either version share one record during a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flow: Option<LoginFlow>,
}

/// The claims ccsync reads from an access token.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Claims {
    pub exp: Option<i64>,
    pub iat: Option<i64>,
}

/// Decode the JWT claims without verifying the signature (the key is not needed to learn `exp`;
/// CC is the party that enforces it). `None` when the token is not a JWT.
pub(crate) fn decode_claims(token: &str) -> Option<Claims> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(token).ok()
}

/// Verify an access token's RS256 signature (and `exp`, with CC-observed 60 s leeway, reference
/// §3.2) against a JWKS, when `auth.jwks_url` is configured. `aud`/`iss` are not checked: the
/// reference could not confirm CC's exact values (§12), and a wrong guess would kill a healthy
/// connection.
pub(crate) fn verify_with_jwks(
    token: &str,
    jwks: &jsonwebtoken::jwk::JwkSet,
) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
    let jwk = match header.kid.as_deref() {
        Some(kid) => jwks.find(kid),
        None => jwks.keys.first(),
    }
    .ok_or_else(|| "no JWKS key matches the token's kid".to_string())?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| format!("bad JWK: {e}"))?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.validate_aud = false;
    v.leeway = 60;
    v.required_spec_claims = ["exp".to_string()].into_iter().collect();
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .map(|_| ())
        .map_err(|e| format!("signature check failed: {e}"))
}

#[cfg(test)]
mod tests;

//! Connect links (issue 14), pure (the caller passes `now`): `ccsync auth invite` signs a link that
//! `ccsync ingest` serves at `GET /connect/<token>`, and the OAuth `state` that binds CC's
//! redirect (`GET /oauth/callback`) to that link. The HTTP side is [`super::connect`].
//!
//! # Token
//! `<payload>.<tag>`, both base64url without padding: `payload` is the JSON
//! `{"a": account, "exp": unix seconds, "n": link id}` and `tag` is
//! HMAC-SHA256(`auth.invite_secret`, `"ccsync-connect-link-v1." + payload`) ([`super::sign`]).
//! The link id (16 random bytes) names the link's single-use marker in Redis; the account and
//! the expiry cannot be changed without breaking the tag. The `state` has the same shape with its
//! own label (`ccsync-connect-state-v1`), so a link token never passes as a state or the reverse,
//! and carries the link's id, account and expiry plus its own, shorter expiry.
//!
//! Why a signed state rather than one kept in Redis: every ingest replica can check it (CC's
//! redirect may reach another replica than the one that sent the customer there) and nothing
//! needs cleaning up when a customer gives up on CC's page. The state is not bound to a browser
//! cookie: the link itself is the bearer credential (whoever opens it may connect the account),
//! so a forged callback could only do what opening the link does.

use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::sign::{hmac_sha256, hmac_sha256_matches};

const LINK_LABEL: &[u8] = b"ccsync-connect-link-v1.";
const STATE_LABEL: &[u8] = b"ccsync-connect-state-v1.";

/// How long a customer may spend on CC's pages (signing in, approving) between opening the link
/// and CC's redirect back. CC documents no lifetime for the authorize step; its code then lives 5
/// minutes (reference §2.4).
pub(crate) const STATE_TTL_SECS: i64 = 3600;

/// Longest `--ttl`: a link is a bearer credential for one account; a month is plenty to reach a
/// customer, and a forgotten link should not stay usable for ever.
pub(crate) const MAX_TTL_SECS: u64 = 30 * 86_400;

/// The path CC redirects to, under `ingest.public_url`.
pub(crate) const CALLBACK_PATH: &str = "/oauth/callback";

/// What a valid link names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Invite {
    /// The ccsync account (messages name it in `account`) the token set is stored under.
    #[serde(rename = "a")]
    pub account: String,
    /// Unix seconds after which the link is refused.
    #[serde(rename = "exp")]
    pub expires_at: i64,
    /// The link's id (base64url of 16 random bytes): its single-use marker in Redis.
    #[serde(rename = "n")]
    pub id: String,
}

impl Invite {
    /// A short, loggable handle of the link (the id is not a credential: a link cannot be made
    /// from it without the secret).
    pub(crate) fn short_id(&self) -> &str {
        self.id.get(..8).unwrap_or(&self.id)
    }
}

/// What a valid `state` carries back from CC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConnectState {
    #[serde(flatten)]
    pub invite: Invite,
    /// Unix seconds after which the callback is refused (see [`STATE_TTL_SECS`]).
    #[serde(rename = "sexp")]
    pub state_expires_at: i64,
}

/// Why a link or a state was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a token we signed: cut short, altered, or signed with another secret.
    Invalid,
    /// Signed by us, but past its expiry.
    Expired(Invite),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sign<T: Serialize>(secret: &SecretString, label: &[u8], value: &T) -> String {
    let payload = b64(&serde_json::to_vec(value).expect("plain struct serializes"));
    let tag = hmac_sha256(
        secret.expose_secret().as_bytes(),
        &[label, payload.as_bytes()],
    );
    format!("{payload}.{}", b64(&tag))
}

fn verify<T: for<'de> Deserialize<'de>>(
    secret: &SecretString,
    label: &[u8],
    token: &str,
) -> Option<T> {
    // Bounded before any work: a real token is ~150 characters.
    if token.len() > 1024 {
        return None;
    }
    let (payload, tag) = token.split_once('.')?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tag)
        .ok()?;
    // The tag first: nothing of an unauthenticated payload is parsed.
    if !hmac_sha256_matches(
        secret.expose_secret().as_bytes(),
        &[label, payload.as_bytes()],
        &tag,
    ) {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// A new link for `account`, valid `ttl` from `now`: the invite and its token.
pub(crate) fn issue(
    secret: &SecretString,
    account: &str,
    now: i64,
    ttl: Duration,
) -> (Invite, String) {
    let invite = Invite {
        account: account.to_string(),
        expires_at: now + ttl.as_secs() as i64,
        id: crate::auth::code::random_urlsafe(16),
    };
    let token = sign(secret, LINK_LABEL, &invite);
    (invite, token)
}

/// Check a link's token at `now`.
pub(crate) fn open(secret: &SecretString, token: &str, now: i64) -> Result<Invite, Refusal> {
    let invite: Invite = verify(secret, LINK_LABEL, token).ok_or(Refusal::Invalid)?;
    if now >= invite.expires_at {
        return Err(Refusal::Expired(invite));
    }
    Ok(invite)
}

/// The `state` for the authorize URL of `invite`, opened at `now`.
pub(crate) fn state_for(secret: &SecretString, invite: &Invite, now: i64) -> String {
    sign(
        secret,
        STATE_LABEL,
        &ConnectState {
            invite: invite.clone(),
            state_expires_at: now + STATE_TTL_SECS,
        },
    )
}

/// Check the `state` CC's redirect carries at `now`. The link's own expiry is not checked again:
/// a customer who opened the link in time may finish on CC's pages within [`STATE_TTL_SECS`].
pub(crate) fn check_state(
    secret: &SecretString,
    state: &str,
    now: i64,
) -> Result<ConnectState, Refusal> {
    let st: ConnectState = verify(secret, STATE_LABEL, state).ok_or(Refusal::Invalid)?;
    if now >= st.state_expires_at {
        return Err(Refusal::Expired(st.invite));
    }
    Ok(st)
}

/// `ingest.public_url` without its trailing slashes (a path prefix stays).
fn base(public_url: &url::Url) -> &str {
    public_url.as_str().trim_end_matches('/')
}

/// The link a customer opens.
pub(crate) fn link_url(public_url: &url::Url, token: &str) -> String {
    format!("{}/connect/{token}", base(public_url))
}

/// The redirect URI to register on the CC app, and to send in the authorize URL and the code
/// exchange (they must match exactly, reference §2.4 step 3).
pub(crate) fn redirect_uri(public_url: &url::Url) -> String {
    format!("{}{CALLBACK_PATH}", base(public_url))
}

/// `--ttl`: a number with a unit, `s`, `m`, `h` or `d` (`90m`, `7d`), from 1 s to 30 days.
pub(crate) fn parse_ttl(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        format!("--ttl {s:?}: expected a number and a unit, like 7d, 12h, 30m or 90s")
    })?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => {
            return Err(format!(
                "--ttl {s:?}: the unit must be s, m, h or d (like 7d or 12h)"
            ));
        }
    };
    match secs {
        Some(v) if (1..=MAX_TTL_SECS).contains(&v) => Ok(Duration::from_secs(v)),
        _ => Err(format!("--ttl {s:?}: must be between 1s and 30d")),
    }
}

/// Why `ccsync auth invite` made no link. Each says what to set or change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InviteError {
    #[error(
        "auth invite needs CCSYNC_AUTH__INVITE_SECRET, the key that signs connect links (at least 32 characters: head -c32 /dev/urandom | base64), set to the same value for `ccsync ingest`"
    )]
    NoSecret,
    #[error(
        "auth invite needs CCSYNC_INGEST__PUBLIC_URL, the address customers and CC reach `ccsync ingest` at (e.g. https://ingest.example.com)"
    )]
    NoPublicUrl,
    #[error(
        "--account {0:?}: must be 1 to 64 characters of letters, digits, '-', '_' or '.' (the name messages carry in `account`)"
    )]
    BadAccount(String),
    #[error("{0}")]
    Ttl(String),
}

/// `ccsync auth invite --account A [--ttl D]`: print a new connect link. Needs no Redis and no
/// broker: the link is self-contained (signed), and only its use is recorded, by ingest.
pub(crate) fn invite_cmd(
    settings: &crate::config::Settings,
    account: &str,
    ttl: &str,
    now: i64,
    out: &mut dyn std::io::Write,
) -> Result<(), InviteError> {
    let secret = settings
        .auth
        .invite_secret
        .as_ref()
        .ok_or(InviteError::NoSecret)?;
    let public = settings
        .ingest
        .public_url
        .as_ref()
        .ok_or(InviteError::NoPublicUrl)?;
    if !crate::contact::valid_account(account) {
        return Err(InviteError::BadAccount(account.to_string()));
    }
    let ttl = parse_ttl(ttl).map_err(InviteError::Ttl)?;
    let (inv, token) = issue(secret, account, now, ttl);
    let expires = time::OffsetDateTime::from_unix_timestamp(inv.expires_at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| inv.expires_at.to_string());
    // stdout is the operator's terminal: the link is meant to be seen there and sent on. It is a
    // bearer credential for connecting this account, so it goes to the customer only.
    let _ = writeln!(
        out,
        "Connect link for account {account} (single use, expires {expires}):"
    );
    let _ = writeln!(out, "{}", link_url(public, &token));
    let _ = writeln!(
        out,
        "Send it only to someone who can sign in to this account's Constant Contact account: opening it leads to CC's approval page, and once they approve, ccsync stores the token set (`ccsync auth status --account {account}` shows it; running workers pick it up within seconds)."
    );
    let _ = writeln!(
        out,
        "It is served by `ccsync ingest` at {} (same CCSYNC_AUTH__INVITE_SECRET), and CC must know the redirect URI {} (registered on the app).",
        public.as_str().trim_end_matches('/'),
        redirect_uri(public)
    );
    Ok(())
}

#[cfg(test)]
mod tests;

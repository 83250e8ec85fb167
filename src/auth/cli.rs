//! The bodies of `ccsync auth login | import | status | logout` (DESIGN §5.2, issue 3).
//!
//! Each takes its I/O as parameters (a writer for stdout, a reader for stdin) so tests drive them
//! in-process; `src/cli.rs` passes the real streams.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::device::{LoginError, device_login};
use super::lock::LeaseLock;
use super::store::{Store, StoreError, Stored};
use super::tokenset::{AccessToken, RefreshMode, RefreshToken, TokenSet};
use crate::cc::oauth::{OAuthClient, OAuthError, TokenResponse};
use crate::config::Settings;
use crate::ratelimit::{CallKind, Gate};

/// Why an `auth` command failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthCliError {
    #[error("login failed: {0}")]
    Login(#[from] LoginError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the refresh token was refused: {0}")]
    Refresh(OAuthError),
    #[error("{0}")]
    Input(String),
}

fn oauth_client(settings: &Settings) -> OAuthClient {
    OAuthClient::new(
        &settings.auth_base_url,
        &settings.client_id,
        settings.client_secret.clone(),
        Duration::from_secs(30),
    )
}

/// Store a brand-new set from a login or import as the current generation + 1, whatever the
/// current record holds (a dead or logged-out record is replaced: that is the revival). Returns
/// the new generation.
pub async fn store_new_set(
    store: &Store,
    account: &str,
    access: AccessToken,
    refresh: RefreshToken,
    expires_in: Option<u64>,
    mode: RefreshMode,
) -> Result<u64, StoreError> {
    loop {
        let cur = store.generation(account).await?.unwrap_or(0);
        // At least the current Unix time in milliseconds: refreshes add 1 (far fewer than one per
        // millisecond), so a login always outranks every set issued before it — even when Redis
        // lost its data and replicas still hold an older set in memory, which they would otherwise
        // "write back" over the fresh login (the highest generation wins).
        let now_ms = (crate::clock::now_utc().unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        let generation = (cur + 1).max(now_ms);
        let set = TokenSet::from_grant(
            access.clone(),
            refresh.clone(),
            expires_in,
            mode,
            generation,
            crate::clock::now_unix(),
        );
        if store.compare_and_set(account, cur, &set).await? {
            return Ok(generation);
        }
        // A replica refreshed the old set in between; go one above it.
    }
}

fn split(t: TokenResponse) -> Result<(AccessToken, RefreshToken, Option<u64>), LoginError> {
    let refresh = t.refresh_token.ok_or(LoginError::NoRefreshToken)?;
    Ok((
        AccessToken::new(t.access_token.expose_secret()),
        RefreshToken::new(refresh.expose_secret()),
        t.expires_in,
    ))
}

/// `ccsync auth login`: the device flow, then the token set into Redis (this revives a dead
/// connection: every replica picks up the new generation within seconds).
pub async fn login(
    settings: &Settings,
    gate: Arc<dyn Gate>,
    account: &str,
    out: &mut (dyn Write + Send),
) -> Result<ExitCode, AuthCliError> {
    let store = Store::from_settings(settings)?;
    // Fail on an unreachable Redis before asking a human to approve anything.
    store.generation(account).await?;
    let oauth = oauth_client(settings);
    let tokens = device_login(&oauth, gate.as_ref(), &settings.auth.scope, out).await?;
    let (access, refresh, expires_in) = split(tokens)?;
    let g = store_new_set(
        &store,
        account,
        access,
        refresh,
        expires_in,
        RefreshMode::Unknown,
    )
    .await?;
    let _ = writeln!(
        out,
        "Authorized. Stored token set generation {g} for account {account}; running workers pick it up within seconds."
    );
    Ok(ExitCode::SUCCESS)
}

/// `ccsync auth import`: a refresh token from `input` (stdin; never argv, which `ps` shows),
/// refreshed once to prove it works, then stored.
pub async fn import(
    settings: &Settings,
    gate: Arc<dyn Gate>,
    account: &str,
    input: &mut dyn BufRead,
    out: &mut (dyn Write + Send),
) -> Result<ExitCode, AuthCliError> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| AuthCliError::Input(format!("cannot read standard input: {e}")))?;
    let given = RefreshToken::new(line.trim());
    line.clear();
    if given.expose().is_empty() {
        return Err(AuthCliError::Input(
            "no refresh token on standard input (pipe it in: `ccsync auth import < file`)".into(),
        ));
    }
    let store = Store::from_settings(settings)?;
    store.generation(account).await?;
    let oauth = oauth_client(settings);
    // 429 (the shared 1 request/s) and transport failures: retry with the same token, bounded.
    let mut tries = 0;
    let resp = loop {
        tries += 1;
        gate.acquire(CallKind::Token)
            .await
            .map_err(|e| AuthCliError::Input(e.to_string()))?;
        match oauth.refresh(given.expose()).await {
            Ok(r) => break r,
            Err(e) if e.is_transient() && tries < 4 => {
                if matches!(e, OAuthError::Throttled) {
                    gate.report_429(CallKind::Token, "throttled").await;
                }
            }
            Err(e) => return Err(AuthCliError::Refresh(e)),
        }
    };
    let new_refresh = resp
        .refresh_token
        .as_ref()
        .map(|r| RefreshToken::new(r.expose_secret()));
    let mode = RefreshMode::detect(RefreshMode::Unknown, &given, new_refresh.as_ref());
    let access = AccessToken::new(resp.access_token.expose_secret());
    let refresh = new_refresh.unwrap_or(given);
    let g = store_new_set(&store, account, access, refresh, resp.expires_in, mode).await?;
    let _ = writeln!(
        out,
        "Imported. The refresh token works (mode: {}); stored token set generation {g} for account {account}.",
        mode.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

fn when(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// `ccsync auth status`: exit 0 when healthy, 2 when re-authorization is needed.
pub async fn status(
    settings: &Settings,
    account: &str,
    out: &mut (dyn Write + Send),
) -> Result<ExitCode, AuthCliError> {
    let store = Store::from_settings(settings)?;
    let now = crate::clock::now_unix();
    let stored = store.load(account).await;
    let lock = LeaseLock::holder(&store, account).await?;
    let marker = store.read_marker(account).await?;
    let mut healthy = false;
    let _ = writeln!(out, "account: {account}");
    match &stored {
        Ok(Stored::Absent) => {
            let _ = writeln!(
                out,
                "state: NO TOKEN SET — run `ccsync auth login --account {account}`"
            );
        }
        Ok(Stored::Dead { generation, reason }) => {
            let _ = writeln!(out, "generation: {generation}");
            let _ = writeln!(
                out,
                "state: DEAD ({reason}) — run `ccsync auth login --account {account}`"
            );
        }
        Err(StoreError::Unreadable(why)) => {
            let _ = writeln!(
                out,
                "state: UNREADABLE ({why}) — fix CCSYNC_TOKEN_ENCRYPTION_KEY or run `ccsync auth login --account {account}`"
            );
        }
        Err(e) => return Err(AuthCliError::Store(e.clone())),
        Ok(Stored::Live(set)) => {
            let idle_left = set.idle_expiry_left_secs(now);
            healthy = idle_left > 0;
            let _ = writeln!(out, "generation: {}", set.generation);
            let _ = writeln!(
                out,
                "state: {}",
                if healthy {
                    "live"
                } else {
                    "EXPIRED (refresh token unused for 180 days) — run `ccsync auth login`"
                }
            );
            let left = set.expires_at - now;
            let _ = writeln!(
                out,
                "access token expires: {} ({})",
                when(set.expires_at),
                if left > 0 {
                    format!("in {left} s")
                } else {
                    format!("{} s ago; refreshed on next use", -left)
                }
            );
            let _ = writeln!(out, "refresh-token mode: {}", set.mode.as_str());
            let _ = writeln!(
                out,
                "refresh token: fingerprint {}, last used {} (age {:.1} days), {} days left before the 180-day idle expiry",
                set.refresh.fingerprint(),
                when(set.refreshed_at),
                (now - set.refreshed_at) as f64 / 86_400.0,
                idle_left / 86_400
            );
            if set.mode != RefreshMode::LongLived {
                let _ = writeln!(
                    out,
                    "hint: rotating refresh tokens cannot survive a lost refresh response; switching the app to CC's long-lived refresh tokens removes that failure entirely"
                );
            }
        }
    }
    match lock {
        Some((owner, ttl)) => {
            let _ = writeln!(out, "refresh lock: held by {owner} (lease {ttl} ms left)");
        }
        None => {
            let _ = writeln!(out, "refresh lock: free");
        }
    }
    match marker {
        Some(m) => {
            let _ = writeln!(
                out,
                "refresh in flight: generation {} (refresh token {}), started {} by {}{}",
                m.generation,
                m.fingerprint,
                when(m.started_at),
                m.owner,
                if stored.as_ref().map(|s| s.generation()).ok() == Some(m.generation) {
                    " — if no replica holds the lock, that refresh was interrupted and the stored refresh token may be spent"
                } else {
                    " (stale)"
                }
            );
        }
        None => {
            let _ = writeln!(out, "refresh in flight: none");
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `ccsync auth logout`: replace the set by a tombstone (replicas stop using it and do not write
/// their cached copy back).
pub async fn logout(
    settings: &Settings,
    account: &str,
    out: &mut (dyn Write + Send),
) -> Result<ExitCode, AuthCliError> {
    let store = Store::from_settings(settings)?;
    let g = store
        .tombstone(account, "logged out (ccsync auth logout)")
        .await?;
    let _ = writeln!(
        out,
        "Logged out account {account} (tombstone generation {g}). Workers pause for it until `ccsync auth login --account {account}`."
    );
    Ok(ExitCode::SUCCESS)
}

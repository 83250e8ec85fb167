//! The bodies of `ccsync auth login | import | status | logout` (DESIGN §5.2, issue 3).
//!
//! Each takes its I/O as parameters (a writer for stdout, a reader for stdin) so tests drive them
//! in-process; `src/cli.rs` passes the real streams.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::code::{CodeLogin, CodeLoginError, REDIRECT_WAIT, authorize_and_exchange};
use super::device::{LoginError, device_login};
use super::lock::LeaseLock;
use super::store::{Store, StoreError, Stored};
use super::tokenset::{AccessToken, LoginFlow, RefreshMode, RefreshToken, TokenSet};
use crate::cc::oauth::{OAuthClient, OAuthError, TokenResponse};
use crate::config::Settings;
use crate::ratelimit::{CallKind, Gate};

/// Why an `auth` command failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthCliError {
    #[error("login failed: {0}")]
    Login(#[from] LoginError),
    #[error("login failed: {0}")]
    CodeLogin(#[from] CodeLoginError),
    #[error(transparent)]
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
    store_login_set(store, account, access, refresh, expires_in, mode, None).await
}

/// [`store_new_set`], recording which login produced the set (`auth status` shows it).
pub async fn store_login_set(
    store: &Store,
    account: &str,
    access: AccessToken,
    refresh: RefreshToken,
    expires_in: Option<u64>,
    mode: RefreshMode,
    flow: Option<LoginFlow>,
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
        )
        .with_flow(flow);
        if store.compare_and_set(account, cur, &set).await? {
            // Running replicas poll this counter and follow the account within seconds. Best
            // effort: the set is stored either way, and their periodic discovery finds it too.
            if let Err(e) = store.bump_changes().await {
                tracing::debug!(error = %e, "auth: could not bump the change counter");
            }
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
    let g = store_login_set(
        &store,
        account,
        access,
        refresh,
        expires_in,
        RefreshMode::Unknown,
        Some(LoginFlow::Device),
    )
    .await?;
    let _ = writeln!(
        out,
        "Authorized. Stored token set generation {g} for account {account}; running workers pick it up within seconds."
    );
    Ok(ExitCode::SUCCESS)
}

/// What `ccsync auth login` was asked for besides the account (DESIGN §5.2:
/// `auth login --flow device|code|pkce [--redirect-uri URI] [--paste]`).
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// [`LoginFlow::Device`], [`LoginFlow::Code`] or [`LoginFlow::Pkce`].
    pub flow: LoginFlow,
    pub redirect_uri: Option<String>,
    pub paste: bool,
}

/// `ccsync auth login --flow ...`: the device flow, or the authorization code flow with the
/// client secret (`code`) or a PKCE challenge (`pkce`), see [`super::code`]. `input` is read only
/// with `--paste`.
pub async fn login_with(
    settings: &Settings,
    gate: Arc<dyn Gate>,
    account: &str,
    opts: &LoginOptions,
    input: &mut dyn BufRead,
    out: &mut (dyn Write + Send),
) -> Result<ExitCode, AuthCliError> {
    match opts.flow {
        LoginFlow::Code | LoginFlow::Pkce => {
            code_login(settings, gate.as_ref(), account, opts, input, out).await
        }
        LoginFlow::Device | LoginFlow::Import => {
            if opts.redirect_uri.is_some() || opts.paste {
                return Err(CodeLoginError::DeviceFlowArgs.into());
            }
            login(settings, gate, account, out).await
        }
    }
}

async fn code_login(
    settings: &Settings,
    gate: &dyn Gate,
    account: &str,
    opts: &LoginOptions,
    input: &mut dyn BufRead,
    out: &mut (dyn Write + Send),
) -> Result<ExitCode, AuthCliError> {
    let flow = opts.flow;
    // Every check that needs no human comes first: nobody should approve in a browser only to
    // learn that the configuration could never have worked.
    let raw = opts
        .redirect_uri
        .as_deref()
        .ok_or(CodeLoginError::NeedsRedirectUri(flow.as_str()))?;
    let redirect_uri = url::Url::parse(raw)
        .map_err(|e| CodeLoginError::BadRedirectUri(raw.to_string(), e.to_string()))?;
    if !opts.paste && super::code::loopback_addrs(&redirect_uri).is_none() {
        return Err(CodeLoginError::NotLoopback(redirect_uri.to_string()).into());
    }
    // The code flow authenticates with HTTP Basic (reference §2.3); PKCE "does not use the
    // client secret", and CC may refuse PKCE from a confidential app (reference §2.3): the
    // worker's later refreshes send whatever CCSYNC_CLIENT_SECRET holds, so the two must agree.
    let secret = match flow {
        LoginFlow::Code => Some(
            settings
                .client_secret
                .clone()
                .ok_or(CodeLoginError::NeedsSecret)?,
        ),
        _ => {
            if settings.client_secret.is_some() {
                return Err(CodeLoginError::SecretWithPkce.into());
            }
            None
        }
    };
    let store = Store::from_settings(settings)?;
    // Fail on an unreachable Redis before asking a human to approve anything.
    store.generation(account).await?;
    let oauth = OAuthClient::new(
        &settings.auth_base_url,
        &settings.client_id,
        secret,
        Duration::from_secs(30),
    );
    let l = CodeLogin {
        flow,
        oauth: &oauth,
        gate,
        scope: &settings.auth.scope,
        redirect_uri,
        paste: opts.paste,
        account,
        wait: REDIRECT_WAIT,
    };
    let ex = authorize_and_exchange(&l, input, out).await?;
    let done = probe_and_store(&store, &oauth, gate, account, flow, ex.tokens).await;
    if let Some(b) = ex.browser {
        match &done {
            Ok(_) => {
                b.answer(
                    true,
                    &format!(
                        "account {account} is connected; you can close this tab and return to the terminal"
                    ),
                )
                .await
            }
            Err(e) => b.answer(false, &e.to_string()).await,
        }
    }
    let (g, mode, note) = done?;
    let _ = writeln!(
        out,
        "Authorized (--flow {}). Stored token set generation {g} for account {account}; running workers pick it up within seconds.",
        flow.as_str()
    );
    let _ = writeln!(out, "refresh-token mode: {}", mode.as_str());
    match mode {
        RefreshMode::LongLived => {
            let _ = writeln!(
                out,
                "The app issues long-lived refresh tokens: a lost refresh response cannot end this connection."
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "hint: rotating refresh tokens cannot survive a lost refresh response; set the app's Refresh Token Type to Long-Lived in CC's developer portal and run `ccsync auth login --flow code` again"
            );
        }
    }
    if let Some(n) = note {
        let _ = writeln!(out, "{n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Refresh once at once to learn the refresh-token mode (the token response does not say it,
/// reference §3.4), then store. With rotating tokens the refreshed pair is what gets stored.
/// Transient failures are retried with the same token (bounded, as `import` does); if they never
/// clear, the exchanged set is stored as mode unknown with a note (storing nothing would throw away
/// a login whose code cannot be exchanged twice).
pub(crate) async fn probe_and_store(
    store: &Store,
    oauth: &OAuthClient,
    gate: &dyn Gate,
    account: &str,
    flow: LoginFlow,
    tokens: TokenResponse,
) -> Result<(u64, RefreshMode, Option<String>), AuthCliError> {
    let (access, refresh, expires_in) =
        split(tokens).map_err(|_| CodeLoginError::NoRefreshToken)?;
    let mut tries = 0;
    let probed = loop {
        tries += 1;
        gate.acquire(CallKind::Token)
            .await
            .map_err(|e| CodeLoginError::RateLimit(e.to_string()))?;
        match oauth.refresh(refresh.expose()).await {
            Ok(r) => break Some(r),
            Err(e) if e.is_transient() && tries < 4 => {
                if matches!(e, OAuthError::Throttled) {
                    gate.report_429(CallKind::Token, crate::cc::CcErrorKey::Throttled.as_str())
                        .await;
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "auth login: the refresh that detects the token mode failed");
                break None;
            }
            Err(e) => return Err(CodeLoginError::ProbeRefused(e.to_string()).into()),
        }
    };
    let (access, refresh, expires_in, mode, note) = match probed {
        Some(r) => {
            let new_refresh = r
                .refresh_token
                .as_ref()
                .map(|t| RefreshToken::new(t.expose_secret()));
            let mode = RefreshMode::detect(RefreshMode::Unknown, &refresh, new_refresh.as_ref());
            (
                AccessToken::new(r.access_token.expose_secret()),
                new_refresh.unwrap_or(refresh),
                r.expires_in,
                mode,
                None,
            )
        }
        None => (
            access,
            refresh,
            expires_in,
            RefreshMode::Unknown,
            Some(
                "note: the refresh that tells rotating from long-lived tokens did not get through; the mode shows after the worker's first refresh (`ccsync auth status`)".to_string(),
            ),
        ),
    };
    let g = store_login_set(
        store,
        account,
        access,
        refresh,
        expires_in,
        mode,
        Some(flow),
    )
    .await?;
    Ok((g, mode, note))
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
                    gate.report_429(CallKind::Token, crate::cc::CcErrorKey::Throttled.as_str())
                        .await;
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
    let g = store_login_set(
        &store,
        account,
        access,
        refresh,
        resp.expires_in,
        mode,
        Some(LoginFlow::Import),
    )
    .await?;
    let _ = writeln!(
        out,
        "Imported. The refresh token works (mode: {}); stored token set generation {g} for account {account}.",
        mode.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

/// `config check`: one warning per account whose stored set uses rotating refresh tokens (or
/// has not refreshed yet, which ccsync treats as rotating) — the one failure no client can undo
/// (DESIGN §3.6). Redis trouble is itself a warning: `config check` must not fail on it.
pub async fn refresh_mode_warnings(settings: &Settings) -> Vec<String> {
    let store = match Store::from_settings(settings) {
        Ok(s) => s,
        Err(e) => return vec![format!("cannot read the token sets in Redis: {e}")],
    };
    let accounts = match store.accounts().await {
        Ok(a) => a,
        Err(e) => return vec![format!("cannot read the token sets in Redis: {e}")],
    };
    let mut w = Vec::new();
    for a in accounts {
        let Ok(Stored::Live(set)) = store.load(&a).await else {
            continue;
        };
        let what = match set.mode {
            RefreshMode::LongLived => continue,
            RefreshMode::Rotating => "uses rotating refresh tokens",
            RefreshMode::Unknown => {
                "has not refreshed yet, so its refresh-token mode is unknown (treated as rotating)"
            }
        };
        let via = set
            .flow
            .map(|f| format!(" (stored by --flow {})", f.as_str()))
            .unwrap_or_default();
        w.push(format!(
            "account {a} {what}{via}: a lost refresh response will need a new login; long-lived tokens via `ccsync auth login --flow code --account {a}` avoid it (app setting Refresh Token Type: Long-Lived)"
        ));
    }
    w
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
/// `ccsync auth status` without `--account` (every account with a token set, and every one the
/// configuration names), or with `--json`: one summary per account; non-zero when any needs a
/// login.
pub async fn status_all(
    settings: &Settings,
    only: Option<&str>,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<ExitCode, AuthCliError> {
    let store = Store::from_settings(settings)?;
    let mut accounts: std::collections::BTreeSet<String> = match only {
        Some(a) => [a.to_string()].into_iter().collect(),
        None => {
            let mut v: std::collections::BTreeSet<String> =
                store.accounts().await?.into_iter().collect();
            v.extend(settings.accounts.keys().cloned());
            v
        }
    };
    if accounts.is_empty() && only.is_none() {
        accounts.insert("default".to_string());
    }
    let parked = crate::parking::parked_accounts(settings)
        .await
        .unwrap_or_default();
    let now = crate::clock::now_unix();
    let mut all_ok = true;
    let mut docs = Vec::new();
    for account in &accounts {
        let stored = store.load(account).await;
        let mut doc = serde_json::json!({
            "account": account,
            "parked": parked.contains(account),
        });
        let ok = match &stored {
            Ok(Stored::Live(set)) => {
                let idle_left = set.idle_expiry_left_secs(now);
                doc["state"] = (if idle_left > 0 { "live" } else { "expired" }).into();
                doc["generation"] = set.generation.into();
                doc["access_token_expires_at"] = set.expires_at.into();
                doc["refresh_token_age_seconds"] = (now - set.refreshed_at).max(0).into();
                doc["days_to_idle_expiry"] = (idle_left / 86_400).into();
                doc["refresh_token_mode"] = set.mode.as_str().into();
                doc["login_flow"] = match set.flow {
                    Some(LoginFlow::Device) => "device",
                    Some(LoginFlow::Code) => "code",
                    Some(LoginFlow::Pkce) => "pkce",
                    Some(LoginFlow::Import) => "import",
                    None => "unknown",
                }
                .into();
                idle_left > 0
            }
            Ok(Stored::Dead { generation, reason }) => {
                doc["state"] = "dead".into();
                doc["generation"] = (*generation).into();
                doc["reason"] = reason.clone().into();
                false
            }
            Ok(Stored::Absent) => {
                doc["state"] = "none".into();
                false
            }
            Err(StoreError::Unreadable(why)) => {
                doc["state"] = "unreadable".into();
                doc["reason"] = why.clone().into();
                false
            }
            Err(e) => return Err(AuthCliError::Store(e.clone())),
        };
        doc["needs_login"] = (!ok).into();
        all_ok &= ok;
        docs.push(doc);
    }
    if json {
        let v = match only {
            Some(_) => docs.into_iter().next().unwrap_or_default(),
            None => serde_json::Value::Array(docs),
        };
        let _ = writeln!(out, "{v}");
    } else {
        for d in &docs {
            let _ = writeln!(
                out,
                "{:<24} {:<10} {:<10} {:>6} days to idle expiry  {}{}",
                d["account"].as_str().unwrap_or_default(),
                d["state"].as_str().unwrap_or_default(),
                d["refresh_token_mode"].as_str().unwrap_or("-"),
                d["days_to_idle_expiry"]
                    .as_i64()
                    .map_or("-".to_string(), |n| n.to_string()),
                if d["parked"].as_bool() == Some(true) {
                    "PARKED "
                } else {
                    ""
                },
                if d["needs_login"].as_bool() == Some(true) {
                    format!(
                        "— run `ccsync auth login --account {}`",
                        d["account"].as_str().unwrap_or_default()
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

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
            let _ = writeln!(
                out,
                "login flow: {}",
                match set.flow {
                    Some(LoginFlow::Device) => "device (OAuth device flow)",
                    Some(LoginFlow::Code) => "code (authorization code, client secret)",
                    Some(LoginFlow::Pkce) => "pkce (authorization code with PKCE)",
                    Some(LoginFlow::Import) => "import (an existing refresh token)",
                    None => "not recorded (stored before ccsync recorded the flow)",
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
                    "hint: rotating refresh tokens cannot survive a lost refresh response; switching the app to CC's long-lived refresh tokens removes that failure entirely (they need the authorization code flow: `ccsync auth login --flow code`)"
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
    if let Err(e) = store.bump_changes().await {
        tracing::debug!(error = %e, "auth: could not bump the change counter");
    }
    let _ = writeln!(
        out,
        "Logged out account {account} (tombstone generation {g}). Workers pause for it until `ccsync auth login --account {account}`."
    );
    Ok(ExitCode::SUCCESS)
}

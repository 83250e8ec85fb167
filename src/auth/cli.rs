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

mod login;
mod status;

use login::code_login;
pub use login::import;
pub use login::probe_and_store;
pub use status::{refresh_mode_warnings, status, status_all};

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
pub(crate) async fn store_login_set(
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
pub(crate) struct LoginOptions {
    /// [`LoginFlow::Device`], [`LoginFlow::Code`] or [`LoginFlow::Pkce`].
    pub flow: LoginFlow,
    pub redirect_uri: Option<String>,
    pub paste: bool,
}

/// `ccsync auth login --flow ...`: the device flow, or the authorization code flow with the
/// client secret (`code`) or a PKCE challenge (`pkce`), see [`super::code`]. `input` is read only
/// with `--paste`.
pub(crate) async fn login_with(
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

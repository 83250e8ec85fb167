//! The interactive logins (authorization code, device flow) and `auth import`: each ends by
//! probing the new token and storing the set.

use super::*;

pub(super) async fn code_login(
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
    if !opts.paste && crate::auth::code::loopback_addrs(&redirect_uri).is_none() {
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
pub async fn probe_and_store(
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

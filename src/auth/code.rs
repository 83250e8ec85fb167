//! `ccsync auth login --flow code | pkce` (issue 14): the authorization code flow, with the client
//! secret or with a PKCE S256 challenge, for apps registered with a redirect URI — and the only
//! way to CC's long-lived refresh tokens, which "are only compatible with the OAuth2
//! Authorization Code Flow" (CC support, issue 14).
//!
//! 1. Print the authorize URL (reference §2.4 step 1,
//!    https://developer.constantcontact.com/api_guide/server_flow.html and
//!    https://developer.constantcontact.com/api_guide/pkce_flow.html) with a random `state`.
//! 2. Take the redirect: on a loopback listener when `--redirect-uri` is
//!    `http://127.0.0.1:PORT/...` or `http://localhost:PORT/...` (bound before the URL is printed,
//!    so the redirect cannot arrive first), or with `--paste` from standard input (the URL the
//!    browser landed on, or the bare code), so any registered redirect URI works, even one
//!    nothing listens on.
//! 3. Check `state` (a redirect from another login, or a forged one, is refused: RFC 6749 §10.12).
//! 4. Exchange the code at once: CC codes live 5 minutes and work once (reference §2.4, §3.3).
//! 5. Refresh once, right away, to learn the app's refresh-token type: the token response does
//!    not say it, a refresh does (the same value back = long-lived, reference §3.4).
//! 6. Store the set as every login does ([`super::cli::store_login_set`]), recording the flow.
//!
//! Nothing is stored on any error. Every error is one line that says what to do next.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::tokenset::LoginFlow;
use crate::cc::oauth::{OAuthClient, OAuthError, TokenResponse};
use crate::ratelimit::{CallKind, Gate};

mod redirect;

#[cfg(test)]
use redirect::Redirect;
pub use redirect::s256_challenge;
pub(crate) use redirect::{
    Browser, Loopback, check_redirect, loopback_addrs, parse_pasted, random_urlsafe,
};

/// How long the loopback listener waits for the browser. The authorize step has no documented
/// lifetime; ten minutes leaves time to sign in to CC, and the code itself (5 minutes) only
/// starts once the person has approved.
pub(crate) const REDIRECT_WAIT: Duration = Duration::from_secs(600);

/// Why a code or PKCE login ended without a token set. Each says what the operator does next.
#[derive(Debug, thiserror::Error)]
pub enum CodeLoginError {
    #[error(
        "--flow {0} needs --redirect-uri URI: the redirect URI registered for the app in CC's developer portal"
    )]
    NeedsRedirectUri(&'static str),
    #[error("--redirect-uri {0:?} is not an absolute URL ({1})")]
    BadRedirectUri(String, String),
    #[error(
        "--redirect-uri {0} is not http://127.0.0.1:PORT/... or http://localhost:PORT/..., so ccsync cannot receive the redirect itself; add --paste and paste the URL the browser lands on"
    )]
    NotLoopback(String),
    #[error("--redirect-uri and --paste only apply to --flow code and --flow pkce")]
    DeviceFlowArgs,
    #[error(
        "--flow code authenticates with the app's client secret, but CCSYNC_CLIENT_SECRET is not set; set it, or use --flow pkce for an app without a secret"
    )]
    NeedsSecret,
    #[error(
        "--flow pkce is for apps without a client secret, but CCSYNC_CLIENT_SECRET is set; use --flow code for this app (CC's PKCE apps do not use the secret), or unset CCSYNC_CLIENT_SECRET"
    )]
    SecretWithPkce,
    #[error("cannot listen on {0} for the redirect ({1}); free the port, or add --paste")]
    Listen(String, String),
    #[error(
        "no redirect reached {0} within {1} s; run `ccsync auth login --flow {2}` again (if the browser showed a redirect_uri error, register that exact URI in the app's settings)"
    )]
    Timeout(String, u64, &'static str),
    #[error(
        "the redirect's state does not match this login (it belongs to another login attempt, or was forged); nothing was stored — run `ccsync auth login --flow {0}` again and open the URL that run prints"
    )]
    StateMismatch(&'static str),
    #[error(
        "the authorization was not granted in the browser ({0}); run `ccsync auth login --flow {1}` again to retry"
    )]
    Denied(String, &'static str),
    #[error(
        "{0}; paste the whole URL the browser was redirected to (it holds ?code=...&state=...)"
    )]
    Pasted(String),
    #[error(
        "the authorization code was refused as expired or already used (CC codes work once, within 5 minutes); run `ccsync auth login --flow {0}` again and finish within 5 minutes"
    )]
    CodeRejected(&'static str),
    #[error(
        "the redirect URI does not match ({0}); --redirect-uri must be exactly the URI registered for the app in CC's developer portal and used in the authorize URL"
    )]
    RedirectMismatch(String),
    #[error(
        "PKCE verification failed: the code was issued for another login's code challenge; run `ccsync auth login --flow pkce` again and finish with the URL that run prints"
    )]
    VerifierMismatch,
    #[error(
        "the authorization server rejected the client ({0}); check CCSYNC_CLIENT_ID and CCSYNC_CLIENT_SECRET, and that the app allows the {1} flow"
    )]
    InvalidClient(String, &'static str),
    #[error(
        "the authorization server returned no refresh token; the scope must include offline_access (CCSYNC_AUTH__SCOPE)"
    )]
    NoRefreshToken,
    #[error(
        "the refresh token of the new login was refused at once ({0}); nothing was stored — run the login again"
    )]
    ProbeRefused(String),
    #[error("{0}; run the login again in a moment")]
    OAuth(OAuthError),
    #[error("the shared rate limit refused the token call: {0}")]
    RateLimit(String),
    #[error("cannot read standard input: {0}")]
    Stdin(String),
}

/// The flow's name as typed after `--flow`.
fn name(flow: LoginFlow) -> &'static str {
    flow.as_str()
}

/// Map a code-exchange failure onto the error that says what to do. CC (Okta) answers every
/// refused code with `invalid_grant`; the description tells a redirect URI mismatch and a PKCE
/// failure apart from an expired or reused code (Okta wording, reference §1 INF).
pub(crate) fn exchange_error(e: OAuthError, flow: LoginFlow) -> CodeLoginError {
    match e {
        OAuthError::InvalidGrant(d) => {
            let l = d.to_ascii_lowercase();
            if l.contains("redirect") {
                CodeLoginError::RedirectMismatch(d)
            } else if l.contains("pkce") || l.contains("verifier") {
                CodeLoginError::VerifierMismatch
            } else {
                CodeLoginError::CodeRejected(name(flow))
            }
        }
        OAuthError::InvalidClient(d) => CodeLoginError::InvalidClient(d, name(flow)),
        OAuthError::Unexpected { detail, .. } if detail.contains("redirect_uri") => {
            CodeLoginError::RedirectMismatch(detail)
        }
        other => CodeLoginError::OAuth(other),
    }
}

/// Everything a code or PKCE login needs besides the store.
pub(crate) struct CodeLogin<'a> {
    pub flow: LoginFlow,
    pub oauth: &'a OAuthClient,
    pub gate: &'a dyn Gate,
    pub scope: &'a str,
    pub redirect_uri: url::Url,
    pub paste: bool,
    pub account: &'a str,
    pub wait: Duration,
}

/// The outcome of the browser step and the exchange: the tokens, and the browser tab to tell
/// (loopback only).
pub(crate) struct Exchanged {
    pub tokens: TokenResponse,
    pub browser: Option<Browser>,
}

/// Steps 1–4: print the authorize URL, take the redirect, check `state`, exchange the code.
pub(crate) async fn authorize_and_exchange(
    l: &CodeLogin<'_>,
    input: &mut dyn BufRead,
    out: &mut (dyn Write + Send),
) -> Result<Exchanged, CodeLoginError> {
    let state = random_urlsafe(24);
    // 32 random bytes → a 43-character verifier, the minimum length of RFC 7636 §4.1.
    let verifier = (l.flow == LoginFlow::Pkce).then(|| random_urlsafe(32));
    let challenge = verifier.as_deref().map(s256_challenge);
    let redirect_uri = l.redirect_uri.as_str();
    let listener = if l.paste {
        None
    } else {
        Some(Loopback::bind(&l.redirect_uri).await?)
    };
    let url = l
        .oauth
        .authorize_url(redirect_uri, l.scope, &state, challenge.as_deref());
    // stdout is the operator's terminal: the URL is meant to be seen there (it holds no secret:
    // the state only binds the redirect, the PKCE challenge is a hash).
    let _ = writeln!(
        out,
        "To authorize ccsync for account {}, open this URL in a browser and approve:",
        l.account
    );
    let _ = writeln!(out, "{url}");
    if listener.is_some() {
        let _ = writeln!(
            out,
            "Waiting for the browser to be redirected to {redirect_uri} ..."
        );
    } else {
        let _ = writeln!(
            out,
            "Then paste the URL the browser was redirected to (or just its code) here and press Enter:"
        );
    }
    let _ = out.flush();
    let (redirect, mut browser) = match listener {
        Some(lb) => match lb.receive(l.wait).await {
            Some((r, b)) => (r, Some(b)),
            None => {
                return Err(CodeLoginError::Timeout(
                    redirect_uri.to_string(),
                    l.wait.as_secs(),
                    name(l.flow),
                ));
            }
        },
        None => {
            let mut line = String::new();
            input
                .read_line(&mut line)
                .map_err(|e| CodeLoginError::Stdin(e.to_string()))?;
            let r = parse_pasted(&line)?;
            line.clear();
            (r, None)
        }
    };
    let code = match check_redirect(&redirect, &state, l.flow) {
        Ok(c) => c,
        Err(e) => {
            if let Some(b) = browser.take() {
                b.answer(false, &e.to_string()).await;
            }
            return Err(e);
        }
    };
    if redirect.bare {
        let _ = writeln!(
            out,
            "(a bare code was pasted: its state cannot be checked; paste the whole URL to have it checked)"
        );
    }
    match exchange(
        l.oauth,
        l.gate,
        &code,
        redirect_uri,
        verifier.as_deref(),
        l.flow,
    )
    .await
    {
        Ok(tokens) => Ok(Exchanged { tokens, browser }),
        Err(e) => {
            if let Some(b) = browser.take() {
                b.answer(false, &e.to_string()).await;
            }
            Err(e)
        }
    }
}

/// Step 4: exchange `code` for tokens, at once, through the shared token gate; a set without a
/// refresh token is refused. Also the exchange of a connect link's callback (`ccsync ingest`).
///
/// At once: the code dies 5 minutes after approval (reference §2.4). The token endpoint's
/// 1 request/s is shared with running workers (reference §3.6), so this waits a second at most.
/// A 429 means the code was not looked at: wait for the gate and try again (bounded). Any other
/// failure is final: after a lost response the code may be spent, and a retry would only turn
/// the real cause into "already used".
pub(crate) async fn exchange(
    oauth: &OAuthClient,
    gate: &dyn Gate,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
    flow: LoginFlow,
) -> Result<TokenResponse, CodeLoginError> {
    let mut tries = 0;
    let tokens = loop {
        tries += 1;
        gate.acquire(CallKind::Token)
            .await
            .map_err(|e| CodeLoginError::RateLimit(e.to_string()))?;
        match oauth.exchange_code(code, redirect_uri, verifier).await {
            Err(OAuthError::Throttled) if tries < 4 => {
                gate.report_429(CallKind::Token, crate::cc::CcErrorKey::Throttled.as_str())
                    .await;
            }
            r => break r.map_err(|e| exchange_error(e, flow))?,
        }
    };
    if tokens.refresh_token.is_none() {
        return Err(CodeLoginError::NoRefreshToken);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests;

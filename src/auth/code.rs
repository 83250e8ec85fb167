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

/// How long the loopback listener waits for the browser. The authorize step has no documented
/// lifetime; ten minutes leaves time to sign in to CC, and the code itself (5 minutes) only
/// starts once the person has approved.
pub const REDIRECT_WAIT: Duration = Duration::from_secs(600);

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

/// A random URL-safe string of `bytes` random bytes (state, PKCE verifier).
pub fn random_urlsafe(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The S256 code challenge of a verifier: BASE64URL(SHA256(verifier)) (RFC 7636 §4.2).
pub fn s256_challenge(verifier: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// The addresses to listen on for a loopback redirect URI, or `None` when the URI is not one.
/// `localhost` also tries `[::1]`: browsers may resolve it to either.
pub fn loopback_addrs(uri: &url::Url) -> Option<Vec<SocketAddr>> {
    if uri.scheme() != "http" {
        return None;
    }
    let port = uri.port_or_known_default()?;
    match uri.host()? {
        url::Host::Ipv4(ip) if ip.is_loopback() => Some(vec![SocketAddr::from((ip, port))]),
        url::Host::Ipv6(ip) if ip.is_loopback() => Some(vec![SocketAddr::from((ip, port))]),
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => Some(vec![
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        ]),
        _ => None,
    }
}

/// What came back from the browser: the redirect's query parameters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// True when only a bare code was pasted (no state to check).
    pub bare: bool,
}

impl Redirect {
    fn from_query(q: &str) -> Redirect {
        let p: HashMap<String, String> = url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
        Redirect {
            code: get("code"),
            state: get("state"),
            error: get("error"),
            error_description: get("error_description"),
            bare: false,
        }
    }
}

/// Read what a person pasted: the full redirected URL, its query string, or the bare code.
pub fn parse_pasted(text: &str) -> Result<Redirect, CodeLoginError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(CodeLoginError::Pasted("nothing was pasted".into()));
    }
    let r = if let Ok(u) = url::Url::parse(t) {
        Redirect::from_query(u.query().unwrap_or(""))
    } else if t.contains('=') {
        Redirect::from_query(t.rsplit_once('?').map_or(t, |(_, q)| q))
    } else if t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
    {
        return Ok(Redirect {
            code: Some(t.to_string()),
            bare: true,
            ..Redirect::default()
        });
    } else {
        return Err(CodeLoginError::Pasted(
            "the pasted text is neither a URL nor a code".into(),
        ));
    };
    if r.code.is_none() && r.error.is_none() {
        return Err(CodeLoginError::Pasted(
            "the pasted URL has no code parameter".into(),
        ));
    }
    Ok(r)
}

/// Check the redirect against this login's `state`, then turn an `error=` redirect into
/// [`CodeLoginError::Denied`]. Returns the code.
pub fn check_redirect(
    r: &Redirect,
    state: &str,
    flow: LoginFlow,
) -> Result<String, CodeLoginError> {
    if !r.bare {
        // Constant-time is not needed: the state is not a credential, it binds the redirect to
        // this run (and a mismatch aborts the login for good).
        if r.state.as_deref() != Some(state) {
            return Err(CodeLoginError::StateMismatch(name(flow)));
        }
    }
    if let Some(e) = &r.error {
        let why = match &r.error_description {
            Some(d) => format!("{e}: {}", d.chars().take(200).collect::<String>()),
            None => e.clone(),
        };
        return Err(CodeLoginError::Denied(why, name(flow)));
    }
    r.code
        .clone()
        .ok_or_else(|| CodeLoginError::Pasted("the redirect has no code parameter".into()))
}

/// Map a code-exchange failure onto the error that says what to do. CC (Okta) answers every
/// refused code with `invalid_grant`; the description tells a redirect URI mismatch and a PKCE
/// failure apart from an expired or reused code (Okta wording, reference §1 INF).
pub fn exchange_error(e: OAuthError, flow: LoginFlow) -> CodeLoginError {
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

/// A browser connection that delivered the redirect; answered once the login has finished, so the
/// tab says how it ended.
pub struct Browser(TcpStream);

impl Browser {
    /// Answer the browser with a short plain-text page.
    pub async fn answer(mut self, ok: bool, text: &str) {
        let status = if ok { "200 OK" } else { "400 Bad Request" };
        let body = format!("ccsync: {text}\n");
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = self.0.write_all(resp.as_bytes()).await;
        let _ = self.0.shutdown().await;
    }
}

/// Listeners bound on a loopback redirect URI's address(es).
pub struct Loopback {
    listeners: Vec<TcpListener>,
    path: String,
}

impl Loopback {
    /// Bind before the authorize URL is printed. At least one address must bind (`localhost`
    /// binds IPv4 and, where available, IPv6).
    pub async fn bind(uri: &url::Url) -> Result<Loopback, CodeLoginError> {
        let addrs =
            loopback_addrs(uri).ok_or_else(|| CodeLoginError::NotLoopback(uri.to_string()))?;
        let mut listeners = Vec::new();
        let mut first_err = None;
        for a in &addrs {
            match TcpListener::bind(a).await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    first_err.get_or_insert_with(|| (a.to_string(), e.to_string()));
                }
            }
        }
        if listeners.is_empty() {
            let (a, e) = first_err.unwrap_or_default();
            return Err(CodeLoginError::Listen(a, e));
        }
        Ok(Loopback {
            listeners,
            path: uri.path().to_string(),
        })
    }

    /// Wait for the browser's `GET <path>?code=...&state=...` (or `?error=...`). Other requests
    /// (a favicon, a preconnect that never speaks) are answered 404 or dropped and do not end
    /// the wait.
    pub async fn receive(self, wait: Duration) -> Option<(Redirect, Browser)> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Redirect, Browser)>(1);
        let mut tasks = tokio::task::JoinSet::new();
        for l in self.listeners {
            let tx = tx.clone();
            let path = self.path.clone();
            tasks.spawn(async move {
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        // Out of file descriptors and the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let tx = tx.clone();
                    let path = path.clone();
                    tokio::spawn(async move {
                        if let Some(hit) = read_redirect(s, &path).await {
                            let _ = tx.send(hit).await;
                        }
                    });
                }
            });
        }
        drop(tx);
        let got = tokio::time::timeout(wait, rx.recv()).await.ok().flatten();
        tasks.abort_all();
        got
    }
}

/// Read one HTTP request head (bounded in size and time); the redirect if it is one.
async fn read_redirect(mut s: TcpStream, path: &str) -> Option<(Redirect, Browser)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(());
            }
            if buf.len() > 16 * 1024 {
                return None;
            }
        }
    })
    .await
    .ok()
    .flatten();
    head?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (p, q) = target.split_once('?').unwrap_or((target, ""));
    let r = Redirect::from_query(q);
    if method == "GET" && p == path && (r.code.is_some() || r.error.is_some()) {
        return Some((r, Browser(s)));
    }
    Browser(s)
        .answer(false, "not the redirect ccsync is waiting for")
        .await;
    None
}

/// Everything a code or PKCE login needs besides the store.
pub struct CodeLogin<'a> {
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
pub struct Exchanged {
    pub tokens: TokenResponse,
    pub browser: Option<Browser>,
}

/// Steps 1–4: print the authorize URL, take the redirect, check `state`, exchange the code.
pub async fn authorize_and_exchange(
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
pub async fn exchange(
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

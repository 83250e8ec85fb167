//! The redirect back from CC: PKCE values, loopback addresses, a pasted or received redirect
//! and its checks, and the one-shot loopback listener that receives it.

use super::*;

/// A random URL-safe string of `bytes` random bytes (state, PKCE verifier).
pub(crate) fn random_urlsafe(bytes: usize) -> String {
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
pub(crate) fn loopback_addrs(uri: &url::Url) -> Option<Vec<SocketAddr>> {
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
pub(crate) struct Redirect {
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
pub(crate) fn parse_pasted(text: &str) -> Result<Redirect, CodeLoginError> {
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
pub(crate) fn check_redirect(
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

/// A browser connection that delivered the redirect; answered once the login has finished, so the
/// tab says how it ended.
pub(crate) struct Browser(TcpStream);

impl Browser {
    /// Answer the browser with a short plain-text page.
    pub(crate) async fn answer(mut self, ok: bool, text: &str) {
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
pub(crate) struct Loopback {
    listeners: Vec<TcpListener>,
    path: String,
}

impl Loopback {
    /// Bind before the authorize URL is printed. At least one address must bind (`localhost`
    /// binds IPv4 and, where available, IPv6).
    pub(crate) async fn bind(uri: &url::Url) -> Result<Loopback, CodeLoginError> {
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
    pub(crate) async fn receive(self, wait: Duration) -> Option<(Redirect, Browser)> {
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

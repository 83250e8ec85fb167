//! `ccsync auth login | import | status | logout` against the simulator and real Redis: the device
//! flow's pending, slow_down, denied and expired paths, import from standard input, status exit
//! codes, logout.

use crate::auth_support;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use auth_support::*;
use ccsync::auth::cli;
use ccsync::auth::device::{LoginError, poll_device};
use ccsync::auth::store::Stored;
use ccsync::auth::{RefreshMode, TokenProvider};
use ccsync::cc::oauth::OAuthClient;
use ccsync::sim::{RefreshMode as SimMode, SimConfig};

fn cfg(interval: u64, expires: u64) -> SimConfig {
    SimConfig {
        token_ttl: Duration::from_secs(3600),
        refresh_mode: SimMode::Rotating,
        device_interval_secs: interval,
        device_expires_secs: expires,
        ..Default::default()
    }
}

fn errors(w: &World, e: &str) -> usize {
    w.sim
        .requests()
        .iter()
        .filter(|r| r.error.as_deref() == Some(e))
        .count()
}

/// Run `auth login` in a task; returns the task and its stdout buffer.
fn start_login(
    w: &World,
    account: &str,
) -> (
    tokio::task::JoinHandle<Result<ExitCode, cli::AuthCliError>>,
    SharedBuf,
) {
    let out = SharedBuf::default();
    let settings = w.settings();
    let account = account.to_string();
    let mut o = out.clone();
    let task = tokio::spawn(async move {
        cli::login(&settings, Arc::new(OnePerSecond::new()), &account, &mut o).await
    });
    (task, out)
}

async fn user_code(out: &SharedBuf) -> String {
    wait_for(Duration::from_secs(10), "user code printed", || async {
        out.user_code().is_some()
    })
    .await;
    out.user_code().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_polls_while_pending_then_stores_the_set_and_status_is_healthy() {
    let w = World::start(cfg(1, 600), &[]).await;
    let (task, out) = start_login(&w, "acme");
    let code = user_code(&out).await;
    let text = out.text();
    assert!(
        text.contains("/activate") || text.contains("http"),
        "{text}"
    );
    assert!(
        text.contains("or open directly"),
        "verification_uri_complete: {text}"
    );
    // The user takes a while: the poller sees authorization_pending and keeps polling.
    wait_for(Duration::from_secs(10), "pending polls", || async {
        errors(&w, "authorization_pending") >= 2
    })
    .await;
    assert!(w.sim.approve_for(&code, "acme"));
    let exit = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.unwrap(), ExitCode::SUCCESS);
    assert_eq!(
        errors(&w, "slow_down"),
        0,
        "the announced interval is honoured"
    );
    let store = w.store();
    let Stored::Live(set) = store.load("acme").await.unwrap() else {
        panic!("no set stored")
    };
    // A login's generation outranks any earlier set (Unix milliseconds at least).
    assert!(set.generation > 1_600_000_000_000, "{}", set.generation);
    assert_eq!(set.mode, RefreshMode::Unknown);
    // The stored set works: a provider serves it without calling the token endpoint.
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    assert_eq!(p.access_token("acme").await.unwrap(), set.access);
    let mut s = SharedBuf::default();
    let code = cli::status(&w.settings(), "acme", &mut s).await.unwrap();
    assert_eq!(code, ExitCode::SUCCESS, "{}", s.text());
    let st = s.text();
    let gen_line = format!("generation: {}", set.generation);
    for want in [
        gen_line.as_str(),
        "state: live",
        "access token expires:",
        "refresh-token mode:",
        "days left before the 180-day idle expiry",
        "refresh lock: free",
        "refresh in flight: none",
        "long-lived refresh tokens",
    ] {
        assert!(st.contains(want), "status lacks {want:?}:\n{st}");
    }
    assert!(!st.contains(set.refresh.expose()) && !st.contains(set.access.expose()));
    // Logout: status then asks for a login (non-zero exit).
    let mut o = SharedBuf::default();
    cli::logout(&w.settings(), "acme", &mut o).await.unwrap();
    let mut s = SharedBuf::default();
    assert_ne!(
        cli::status(&w.settings(), "acme", &mut s).await.unwrap(),
        ExitCode::SUCCESS
    );
    assert!(s.text().contains("ccsync auth login"), "{}", s.text());
    w.cleanup(&["acme"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stops_cleanly_when_denied() {
    let w = World::start(cfg(1, 600), &[]).await;
    let (task, out) = start_login(&w, "default");
    let code = user_code(&out).await;
    assert!(w.sim.deny(&code));
    let res = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
    let err = res.unwrap_err();
    assert!(
        matches!(err, cli::AuthCliError::Login(LoginError::Denied)),
        "{err}"
    );
    assert!(err.to_string().contains("denied"));
    assert_eq!(
        errors(&w, "access_denied"),
        1,
        "no poll after the final answer"
    );
    assert!(matches!(
        w.store().load("default").await.unwrap(),
        Stored::Absent
    ));
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stops_cleanly_when_the_code_expires() {
    let w = World::start(cfg(1, 600), &[]).await;
    let (task, out) = start_login(&w, "default");
    user_code(&out).await;
    // Nobody approves; the code's lifetime passes on the simulator clock.
    w.sim.advance_clock(Duration::from_secs(601));
    let res = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
    let err = res.unwrap_err();
    assert!(
        matches!(err, cli::AuthCliError::Login(LoginError::Expired)),
        "{err}"
    );
    assert!(
        err.to_string().contains("auth login"),
        "says what to do: {err}"
    );
    assert_eq!(errors(&w, "expired_token"), 1);
    assert!(matches!(
        w.store().load("default").await.unwrap(),
        Stored::Absent
    ));
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_adds_five_seconds_to_the_interval() {
    // The server announces 3 s; this client is made to believe 2 s, so its second poll is too
    // fast: slow_down, and the server now expects 8 s. A loop that honours slow_down waits
    // 2 + 5 = 7 s; the test moves the simulator clock 1 s to make up the difference it introduced.
    // A loop that ignored slow_down would poll again after 2 s (3 s on the server clock < 8 s)
    // and be told slow_down a second time.
    let w = World::start(cfg(3, 600), &[]).await;
    let settings = w.settings();
    let oauth = OAuthClient::new(
        &settings.auth_base_url,
        &settings.client_id,
        None,
        Duration::from_secs(10),
    );
    let mut dev = oauth
        .device_authorize("contact_data offline_access")
        .await
        .unwrap();
    assert_eq!(dev.interval, 3);
    let code = dev.user_code.clone();
    dev.interval = 2;
    let poll = tokio::spawn(async move {
        let gate = OnePerSecond::new();
        poll_device(&oauth, &gate, &dev).await
    });
    wait_for(Duration::from_secs(15), "slow_down", || async {
        errors(&w, "slow_down") >= 1
    })
    .await;
    w.sim.advance_clock(Duration::from_secs(1));
    assert!(w.sim.approve(&code));
    let tokens = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .unwrap()
        .unwrap()
        .expect("authorized after slowing down");
    assert!(tokens.refresh_token.is_some());
    assert_eq!(errors(&w, "authorization_pending"), 1);
    assert_eq!(
        errors(&w, "slow_down"),
        1,
        "the loop added 5 s after slow_down"
    );
    w.cleanup(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reads_stdin_proves_the_token_and_stores_the_rotated_one() {
    let w = World::start(cfg(1, 600), &[]).await;
    let (_, refresh) = w.sim.issue_tokens(CLIENT_ID, "default");
    let mut input = std::io::Cursor::new(format!("{refresh}\n").into_bytes());
    let mut out = SharedBuf::default();
    let gate: Arc<dyn ccsync::ratelimit::Gate> = Arc::new(OnePerSecond::new());
    let code = cli::import(&w.settings(), gate.clone(), "default", &mut input, &mut out)
        .await
        .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(!out.text().contains(&refresh));
    let Stored::Live(set) = w.store().load("default").await.unwrap() else {
        panic!("no set")
    };
    assert_eq!(set.mode, RefreshMode::Rotating);
    assert_ne!(
        set.refresh.expose(),
        refresh,
        "the rotated token is what gets stored"
    );
    assert_eq!(w.refresh_requests().len(), 1);
    // A spent token is refused and nothing is stored over the good set.
    let mut input = std::io::Cursor::new(refresh.into_bytes());
    let err = cli::import(&w.settings(), gate, "default", &mut input, &mut out)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    let Stored::Live(after) = w.store().load("default").await.unwrap() else {
        panic!("set lost")
    };
    assert_eq!(after.generation, set.generation);
    w.cleanup(&["default"]).await;
}

// ---------------------------------------------------------------------------------------------
// `auth login --flow code | pkce` (issue 14): the CLI as a separate process, the test as the
// browser.

const SECRET: &str = "s3cret-app-secret";
const PASTE_URI: &str = "https://app.example/oauth/callback";

fn code_world_cfg(mode: SimMode, extra_uris: &[&str]) -> SimConfig {
    let mut uris = vec![PASTE_URI.to_string()];
    uris.extend(extra_uris.iter().map(|u| u.to_string()));
    SimConfig {
        token_ttl: Duration::from_secs(3600),
        refresh_mode: mode,
        auto_approve: true,
        redirect_uris: uris,
        client_secret: Some(SECRET.into()),
        code_ttl: Duration::from_secs(60),
        ..Default::default()
    }
}

/// A running `ccsync auth login ...` process.
struct LoginProc {
    child: tokio::process::Child,
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    seen: String,
}

impl LoginProc {
    fn spawn(w: &World, args: &[&str], with_secret: bool) -> LoginProc {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccsync"));
        cmd.args(["auth", "login"]).args(args);
        cmd.envs(w.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if with_secret {
            cmd.env("CCSYNC_CLIENT_SECRET", SECRET);
        } else {
            cmd.env_remove("CCSYNC_CLIENT_SECRET");
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn ccsync auth login");
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        LoginProc {
            child,
            stdout,
            seen: String::new(),
        }
    }

    /// The authorize URL the CLI printed.
    async fn authorize_url(&mut self) -> url::Url {
        use tokio::io::AsyncBufReadExt;
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.stdout.read_line(&mut line))
                .await
                .expect("the CLI prints the authorize URL")
                .unwrap();
            assert!(n > 0, "the CLI ended before printing a URL:\n{}", self.seen);
            self.seen.push_str(&line);
            if line.contains("/authorize?") {
                return url::Url::parse(line.trim()).unwrap();
            }
        }
    }

    async fn paste(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt;
        let mut stdin = self.child.stdin.take().unwrap();
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        drop(stdin);
    }

    /// Wait for the end: (success, all stdout, stderr).
    async fn finish(mut self) -> (bool, String, String) {
        use tokio::io::AsyncReadExt;
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).await.unwrap();
        let out = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .expect("the CLI ends")
            .unwrap();
        (
            out.status.success(),
            self.seen + &rest,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn query(u: &url::Url) -> std::collections::HashMap<String, String> {
    u.query_pairs().into_owned().collect()
}

/// The browser at the authorization server: GET the authorize URL without following the
/// redirect; the Location it sends the browser to.
async fn approve_in_browser(authorize: &url::Url) -> url::Url {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(authorize.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap()
}

fn with_param(u: &url::Url, key: &str, value: &str) -> url::Url {
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == key {
                (k, value.to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    let mut out = u.clone();
    out.query_pairs_mut().clear().extend_pairs(pairs);
    out
}

async fn cli_status(w: &World, account: &str) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
        .args(["auth", "status", "--account", account])
        .envs(w.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// What the simulator saw, for failure messages.
fn sim_log(w: &World) -> String {
    w.sim
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} ms {} {} {:?} {:?} {:?}\n",
                r.real_ms, r.method, r.path, r.grant_type, r.status, r.error
            )
        })
        .collect()
}

fn code_exchanges(w: &World) -> usize {
    w.sim
        .requests()
        .iter()
        .filter(|r| r.grant_type.as_deref() == Some("authorization_code"))
        .count()
}

/// A provider serves `account`'s stored set and CC's API takes its access token; then a
/// worker-side refresh (after a 401, a second later) gives a new access token. Returns it and the
/// set as stored after the refresh.
async fn served_then_refreshed(
    w: &World,
    account: &str,
) -> (ccsync::auth::AccessToken, ccsync::auth::TokenSet) {
    let prov = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    let at = prov.access_token(account).await.unwrap();
    assert_eq!(
        auth_support::api_get(&w.sim.api_base_url(), "/contact_lists", at.expose()).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at2 = prov.token_rejected(account, &at).await.unwrap();
    assert_ne!(at2, at);
    let Stored::Live(after) = w.store().load(account).await.unwrap() else {
        panic!("set lost")
    };
    (at2, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_by_paste_stores_a_long_lived_set_that_status_and_the_api_accept() {
    let w = World::start(code_world_cfg(SimMode::LongLived, &[]), &[]).await;
    let mut p = LoginProc::spawn(
        &w,
        &[
            "--flow",
            "code",
            "--account",
            "acme",
            "--redirect-uri",
            PASTE_URI,
            "--paste",
        ],
        true,
    );
    let auth = p.authorize_url().await;
    let q = query(&auth);
    assert!(
        auth.as_str()
            .starts_with(&format!("{}/authorize?", w.sim.auth_base_url()))
    );
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], PASTE_URI);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["scope"], "contact_data offline_access");
    assert!(q["state"].len() >= 32, "a random state");
    assert!(!q.contains_key("code_challenge"), "no PKCE with the secret");
    let landed = approve_in_browser(&auth).await;
    assert!(landed.as_str().starts_with(PASTE_URI));
    p.paste(landed.as_str()).await;
    let (ok, out, err) = p.finish().await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}\nsim:\n{}", sim_log(&w));
    assert!(out.contains("refresh-token mode: long-lived"), "{out}");
    let code = query(&landed)["code"].clone();
    assert!(!out.contains(&code), "the code is not echoed");
    // The exchange authenticated with HTTP Basic; one refresh told the mode.
    assert_eq!(code_exchanges(&w), 1);
    assert_eq!(w.refresh_requests().len(), 1);
    let Stored::Live(set) = w.store().load("acme").await.unwrap() else {
        panic!("no set stored")
    };
    assert_eq!(set.mode, RefreshMode::LongLived);
    assert_eq!(set.flow, Some(ccsync::auth::LoginFlow::Code));
    // `auth status` (a separate process) reports the flow and the mode.
    let (ok, st) = cli_status(&w, "acme").await;
    assert!(ok, "{st}");
    assert!(st.contains("login flow: code"), "{st}");
    assert!(st.contains("refresh-token mode: long-lived"), "{st}");
    assert!(!st.contains("hint: rotating"), "{st}");
    // The set works: a provider serves it and CC's API takes its access token. A worker-side
    // refresh (here after a 401) keeps the recorded flow and, long-lived, the same refresh token.
    let (_, after) = served_then_refreshed(&w, "acme").await;
    assert_eq!(after.flow, Some(ccsync::auth::LoginFlow::Code));
    assert_eq!(after.refresh, set.refresh);
    assert!(after.generation > set.generation);
    // The same code pasted into another login: already used, nothing stored. (This login comes
    // within a second of the refresh above, which the test's open gate kept from the shared
    // limiter: the exchange may meet a 429 first, which it waits out and retries.)
    let mut again = LoginProc::spawn(
        &w,
        &[
            "--flow",
            "code",
            "--account",
            "reuse",
            "--redirect-uri",
            PASTE_URI,
            "--paste",
        ],
        true,
    );
    let state = query(&again.authorize_url().await)["state"].clone();
    again
        .paste(&format!("{PASTE_URI}?code={code}&state={state}"))
        .await;
    let (ok, out, err) = again.finish().await;
    assert!(!ok, "{out}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("expired or already used") && err.contains("auth login --flow code"),
        "{err}"
    );
    assert!(matches!(
        w.store().load("reuse").await.unwrap(),
        Stored::Absent
    ));
    w.cleanup(&["acme", "reuse"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_flow_on_a_loopback_listener_stores_a_rotating_set_and_config_check_warns() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cb = format!("http://127.0.0.1:{port}/cb");
    let w = World::start(code_world_cfg(SimMode::Rotating, &[&cb]), &[]).await;
    let mut p = LoginProc::spawn(&w, &["--flow", "pkce", "--redirect-uri", &cb], false);
    let auth = p.authorize_url().await;
    let q = query(&auth);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["redirect_uri"], cb);
    let landed = approve_in_browser(&auth).await;
    assert!(landed.as_str().starts_with(&cb), "{landed}");
    // The browser follows the redirect to the CLI's listener, which answers once it is done.
    let page = reqwest::Client::new()
        .get(landed)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("account default is connected"), "{body}");
    let (ok, out, err) = p.finish().await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}\nsim:\n{}", sim_log(&w));
    assert!(out.contains("refresh-token mode: rotating"), "{out}");
    assert!(
        out.contains("--flow code"),
        "hints at long-lived tokens: {out}"
    );
    // PKCE: no Basic header, the client_id and the verifier instead (the sim checked S256).
    assert_eq!(code_exchanges(&w), 1);
    let Stored::Live(set) = w.store().load("default").await.unwrap() else {
        panic!("no set stored")
    };
    assert_eq!(set.mode, RefreshMode::Rotating);
    assert_eq!(set.flow, Some(ccsync::auth::LoginFlow::Pkce));
    let (ok, st) = cli_status(&w, "default").await;
    assert!(ok, "{st}");
    assert!(st.contains("login flow: pkce"), "{st}");
    assert!(st.contains("refresh-token mode: rotating"), "{st}");
    // The set works: a provider serves it, CC's API takes its access token, and a worker-side
    // refresh (after a 401) rotates the refresh token and keeps the recorded flow.
    let (at2, after) = served_then_refreshed(&w, "default").await;
    assert_eq!(
        auth_support::api_get(&w.sim.api_base_url(), "/contact_lists", at2.expose()).await,
        200
    );
    assert_eq!(after.flow, Some(ccsync::auth::LoginFlow::Pkce));
    assert_ne!(after.refresh, set.refresh, "rotating: a new refresh token");
    assert!(after.generation > set.generation);
    // `config check` warns about the rotating account, naming the fix.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
        .args(["config", "check"])
        .envs(w.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("warning: account default uses rotating refresh tokens"))
        .unwrap_or_else(|| panic!("no rotating warning:\n{text}"));
    assert!(
        line.contains("--flow pkce") && line.contains("--flow code"),
        "{line}"
    );
    w.cleanup(&["default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_state_expired_code_and_pkce_mismatch_are_one_line_errors_and_store_nothing() {
    let w = World::start(code_world_cfg(SimMode::LongLived, &[]), &[]).await;
    let paste = |account: &'static str, flow: &'static str| {
        vec![
            "--flow",
            flow,
            "--account",
            account,
            "--redirect-uri",
            PASTE_URI,
            "--paste",
        ]
    };
    // Wrong state: refused before the code is exchanged.
    let mut p = LoginProc::spawn(&w, &paste("state", "code"), true);
    let landed = approve_in_browser(&p.authorize_url().await).await;
    p.paste(with_param(&landed, "state", "forged").as_str())
        .await;
    let (ok, _, err) = p.finish().await;
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("state does not match"), "{err}");
    assert_eq!(
        code_exchanges(&w),
        0,
        "a wrong state never reaches the token endpoint"
    );

    // Expired code: the sim's code lifetime (60 s here; CC: 5 minutes) passes before the paste.
    let mut p = LoginProc::spawn(&w, &paste("expired", "code"), true);
    let landed = approve_in_browser(&p.authorize_url().await).await;
    w.sim.advance_clock(Duration::from_secs(61));
    p.paste(landed.as_str()).await;
    let (ok, _, err) = p.finish().await;
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("expired or already used"), "{err}");

    // PKCE verifier mismatch: the code was issued for another challenge than this run's.
    let mut p = LoginProc::spawn(&w, &paste("pkce", "pkce"), false);
    let auth = p.authorize_url().await;
    let other = ccsync::auth::code::s256_challenge("a-verifier-this-cli-run-does-not-have-0123456");
    let landed = approve_in_browser(&with_param(&auth, "code_challenge", &other)).await;
    p.paste(landed.as_str()).await;
    let (ok, _, err) = p.finish().await;
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("PKCE verification failed"), "{err}");

    // Configuration mistakes stop before any URL is printed.
    for (args, secret, want) in [
        (
            vec!["--flow", "code", "--redirect-uri", PASTE_URI, "--paste"],
            false,
            "CCSYNC_CLIENT_SECRET is not set",
        ),
        (
            vec!["--flow", "pkce", "--redirect-uri", PASTE_URI],
            false,
            "add --paste",
        ),
        (
            vec!["--flow", "pkce", "--paste"],
            false,
            "needs --redirect-uri",
        ),
        (
            vec!["--paste"],
            false,
            "only apply to --flow code and --flow pkce",
        ),
    ] {
        let p = LoginProc::spawn(&w, &args, secret);
        let (ok, out, err) = p.finish().await;
        assert!(!ok, "{args:?}: {out}");
        assert!(!out.contains("/authorize?"), "{args:?}: {out}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    for a in ["state", "expired", "pkce", "default"] {
        assert!(
            matches!(w.store().load(a).await.unwrap(), Stored::Absent),
            "nothing stored for {a}"
        );
    }
    w.cleanup(&[]).await;
}

// ---------------------------------------------------------------------------------------------
// A new account reaches running replicas within seconds (issue 14: connect links add accounts
// while workers run).

/// A message for an account nobody has authorized yet makes the provider note it dead ("no token
/// set"); the first set stored for it must serve the very next call, not one a second later (the
/// worker would dead-letter that message `unknown_account`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_authorized_account_is_served_as_soon_as_its_first_set_is_stored() {
    let w = World::start(cfg(1, 600), &[]).await;
    let p = TokenProvider::connect(&w.settings(), open_gate())
        .await
        .unwrap();
    match p.access_token("newco").await {
        Err(ccsync::auth::AuthError::Dead {
            never_authorized: true,
            ..
        }) => {}
        other => panic!("expected never-authorized, got {other:?}"),
    }
    // Within the second the hot path used to wait before looking at Redis again.
    let (g, _) = w.seed("newco").await;
    let token = p
        .access_token("newco")
        .await
        .expect("the new set is served at once");
    let Stored::Live(set) = w.store().load("newco").await.unwrap() else {
        panic!("no set")
    };
    assert_eq!((set.generation, &set.access), (g, &token));
    w.cleanup(&["newco"]).await;
}

/// A replica follows an account that appears in Redis while it runs (keep-alive, auth-state
/// metric) within seconds, through the change counter every login bumps, not at its next full
/// discovery (a minute later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_replica_follows_a_new_account_within_seconds() {
    let w = World::start(cfg(1, 600), &[]).await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (first, later) = (format!("first-{}", &id[..8]), format!("later-{}", &id[..8]));
    // The provider's own registry: what it exports, not what other tests' providers did.
    let m = ccsync::telemetry::Metrics::isolated();
    let state = |account: &str| {
        let series = format!("ccsync_auth_state{{account=\"{account}\"}} 1");
        m.render().lines().any(|l| l == series)
    };
    w.seed(&first).await;
    let p = TokenProvider::connect_with_metrics(&w.settings(), open_gate(), m)
        .await
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let bg = p.spawn_background(shutdown.clone());
    // The background task's first look (its start-up discovery) finds the first account.
    wait_for(
        Duration::from_secs(10),
        "first account followed",
        || async { state(&first) },
    )
    .await;
    // From here the periodic discovery is a minute away: only the change counter brings the next
    // account in within the bound.
    w.seed(&later).await;
    wait_for(
        Duration::from_secs(8),
        "new account followed within seconds",
        || async { state(&later) },
    )
    .await;
    shutdown.cancel();
    bg.await.unwrap();
    w.cleanup(&[&first, &later]).await;
}

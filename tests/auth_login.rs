//! `ccsync auth login | import | status | logout` against the simulator and real Redis: the device
//! flow's pending, slow_down, denied and expired paths, import from standard input, status exit
//! codes, logout.

mod auth_support;

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

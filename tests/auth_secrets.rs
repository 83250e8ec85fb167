//! No token, secret or Authorization header reaches a log line at any level, through a whole
//! login, refresh and API run; with an encryption key, Redis holds only ciphertext.
//! Alone in its test binary: it installs the process-wide tracing subscriber (trace level).

mod auth_support;

use std::sync::Arc;
use std::time::Duration;

use auth_support::*;
use base64::Engine as _;
use ccsync::auth::store::Stored;
use ccsync::auth::{AuthError, TokenProvider};
use ccsync::sim::{RefreshMode as SimMode, SimConfig};

const CLIENT_SECRET: &str = "client-secret-4f9a1c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_at_trace_level_hold_no_secret_and_redis_holds_only_ciphertext() {
    let logs = SharedBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");

    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let w = World::start(
        SimConfig {
            token_ttl: Duration::from_secs(3),
            refresh_mode: SimMode::Rotating,
            device_interval_secs: 1,
            client_secret: Some(CLIENT_SECRET.into()),
            per_second: 1000,
            ..Default::default()
        },
        &[
            ("CCSYNC_CLIENT_SECRET", CLIENT_SECRET),
            ("CCSYNC_TOKEN_ENCRYPTION_KEY", key.as_str()),
        ],
    )
    .await;
    let store = w.store();
    let mut secrets: Vec<String> = vec![
        CLIENT_SECRET.into(),
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")),
        key.clone(),
    ];
    let remember = |s: &Stored, secrets: &mut Vec<String>| {
        if let Stored::Live(set) = s {
            secrets.push(set.access.expose().to_string());
            secrets.push(set.refresh.expose().to_string());
        }
    };

    // 1. Login (device flow).
    let mut out = SharedBuf::default();
    let settings = w.settings();
    let login = tokio::spawn({
        let mut o = out.clone();
        async move {
            ccsync::auth::cli::login(&settings, Arc::new(OnePerSecond::new()), "default", &mut o)
                .await
        }
    });
    wait_for(Duration::from_secs(10), "user code", || async {
        out.user_code().is_some()
    })
    .await;
    assert!(w.sim.approve(&out.user_code().unwrap()));
    login.await.unwrap().expect("login");
    let _ = std::io::Write::flush(&mut out);
    remember(&store.load("default").await.unwrap(), &mut secrets);

    // 2. API calls, expiry-driven refreshes, and a 401 handled by `token_rejected`.
    let p = TokenProvider::connect(&w.settings(), Arc::new(OnePerSecond::new()))
        .await
        .unwrap();
    let api = w.sim.api_base_url();
    let mut generations = std::collections::BTreeSet::new();
    let end = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < end {
        let t = match p.access_token("default").await {
            Ok(t) => t,
            Err(AuthError::Unavailable(_)) => continue,
            Err(e) => panic!("{e}"),
        };
        if api_get(&api, "/contact_lists", t.expose()).await == 401 {
            p.token_rejected("default", &t)
                .await
                .expect("refresh after a 401");
        }
        let s = store.load("default").await.unwrap();
        if generations.insert(s.generation()) {
            remember(&s, &mut secrets);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        generations.len() >= 3,
        "refreshes happened: {generations:?}"
    );
    // The app is revoked: the connection dies (through a 401 and a refused refresh, or the
    // refused refresh alone if the token was due anyway), and the dead line is logged.
    w.sim.revoke_all();
    let dead = match p.access_token("default").await {
        Ok(t) => {
            assert_eq!(api_get(&api, "/contact_lists", t.expose()).await, 401);
            p.token_rejected("default", &t).await
        }
        Err(e) => Err(e),
    };
    assert!(matches!(dead, Err(AuthError::Dead { .. })), "{dead:?}");

    // 3. Redis holds ciphertext only.
    let raw = store.raw_blob("default").await.unwrap().expect("blob");
    assert!(raw.starts_with("aes256gcm:"));
    assert!(!raw.contains("eyJ"), "no JWT-looking text in Redis");
    for s in &secrets {
        assert!(!raw.contains(s.as_str()));
        assert!(
            !raw.contains(&s[..s.len().min(16)]),
            "no token substring in Redis"
        );
    }

    // 4. The logs: real (refreshes and the dead line are there), and clean.
    let text = logs.text() + &out.text();
    assert!(text.contains("token set refreshed"), "trace capture works");
    assert!(
        text.contains("ccsync auth login --account default"),
        "the dead line names the fix"
    );
    assert!(text.contains("TRACE"), "trace level was on");
    for s in &secrets {
        assert!(s.len() >= 8);
        assert!(!text.contains(s.as_str()), "a secret reached the logs");
    }
    let lower = text.to_ascii_lowercase();
    assert!(
        !lower.contains("bearer "),
        "no Authorization header value in logs"
    );
    assert!(
        !lower.contains("authorization: "),
        "no Authorization header in logs"
    );
    assert!(!text.contains("eyJ"), "no JWT-looking text in logs");
    w.cleanup(&["default"]).await;
}

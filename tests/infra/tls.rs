//! TLS for real: the RabbitMQ node with an amqps listener (127.0.0.1:5671) and the Redis with a
//! TLS port (127.0.0.1:6390, password `ccsync-tls-pw`) that `scripts/services.sh` starts, with
//! the CA and certificates it generates (`$CCSYNC_TEST_TLS_DIR`, default /tmp/ccsync-test-tls).
//! The CA reaches the product through `CCSYNC_AMQP_CA_FILE` and `CCSYNC_REDIS_CA_FILE`; the
//! Redis connection also presents a client certificate (optional on that server).

use crate::common;

use std::time::Duration;

use common::{World, message, wait_for};
use serde_json::json;

const REDIS_PASSWORD: &str = "ccsync-tls-pw";

fn tls_dir() -> String {
    std::env::var("CCSYNC_TEST_TLS_DIR").unwrap_or_else(|_| "/tmp/ccsync-test-tls".into())
}

/// The settings of the TLS servers, trusting `amqp_ca` and `redis_ca` (file names in the TLS
/// directory).
fn tls_pairs(amqp_ca: &str, redis_ca: &str) -> Vec<(String, String)> {
    let d = tls_dir();
    assert!(
        std::path::Path::new(&format!("{d}/ca.pem")).exists(),
        "no test CA in {d}: run bash scripts/services.sh"
    );
    vec![
        (
            "CCSYNC_AMQP_URL".into(),
            "amqps://guest:guest@localhost:5671/%2f".into(),
        ),
        ("CCSYNC_AMQP_CA_FILE".into(), format!("{d}/{amqp_ca}")),
        (
            "CCSYNC_REDIS_URL".into(),
            format!("rediss://:{REDIS_PASSWORD}@localhost:6390"),
        ),
        ("CCSYNC_REDIS_CA_FILE".into(), format!("{d}/{redis_ca}")),
        (
            "CCSYNC_REDIS_CLIENT_CERT_FILE".into(),
            format!("{d}/client.pem"),
        ),
        (
            "CCSYNC_REDIS_CLIENT_KEY_FILE".into(),
            format!("{d}/client.key"),
        ),
    ]
}

async fn tls_world() -> World {
    let pairs = tls_pairs("ca.pem", "ca.pem");
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    World::new_with(World::fast_sim(), &refs).await
}

/// `ccsync publish` (amqps) puts messages in the TLS broker, a worker process consumes them there
/// (amqps), takes its token set, limiter, ledger and crash marks from the TLS Redis (rediss, with
/// a client certificate), and the simulator ends up holding every contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_publish_run_over_amqps_and_rediss() {
    let world = tls_world().await;
    world.seed_tokens("default").await;
    let n = 20;
    let lines: Vec<String> = (0..n)
        .map(|i| {
            String::from_utf8(message(
                &format!("tls{i}@example.com"),
                "2026-11-23T10:00:00Z",
                json!({ "first_name": format!("Tls{i}") }),
            ))
            .unwrap()
        })
        .collect();
    let file = std::env::temp_dir().join(format!("ccsync-tls-{}.ndjson", world.queue));
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
        .args(["publish", "--quiet", file.to_str().unwrap()])
        .envs(world.env())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "publish over amqps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(world.queue_len().await, n);

    let worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(60),
        "the worker syncs every message",
        || async { world.settled().await == u64::from(n) },
    )
    .await;
    let store = common::store(&world.sim);
    for i in 0..n {
        let c = store
            .get(&format!("tls{i}@example.com"))
            .unwrap_or_else(|| panic!("tls{i} missing in CC"));
        assert_eq!(
            c.fields.get("first_name").map(String::as_str),
            Some(format!("Tls{i}").as_str())
        );
    }
    assert!(world.terminate(worker).await.success());
    assert_eq!(world.queue_len().await, 0);
    world.cleanup().await;
}

/// Run `ccsync <args>` with the world's environment plus `overrides`; exit status and the last
/// line of stderr.
async fn run_with(world: &World, args: &[&str], overrides: &[(&str, String)]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccsync"));
    cmd.args(args)
        .envs(world.env())
        .envs(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("a wrong CA stops the program within a minute")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_string();
    (out.status.code().unwrap_or(-1), last)
}

/// A CA that did not sign the server's certificate stops `ccsync worker` (and `ccsync publish`)
/// at start, non-zero, with one line that names the connection and the setting to fix, and
/// never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_stops_the_program_at_start_with_one_line() {
    let world = tls_world().await;
    let wrong = format!("{}/wrong-ca.pem", tls_dir());

    let (code, line) = run_with(
        &world,
        &["worker"],
        &[("CCSYNC_REDIS_CA_FILE", wrong.clone())],
    )
    .await;
    assert_ne!(code, 0, "{line}");
    assert!(line.starts_with("ccsync: "), "{line}");
    assert!(line.contains("CCSYNC_REDIS_URL"), "{line}");
    assert!(line.contains("CCSYNC_REDIS_CA_FILE"), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert!(!line.contains(REDIS_PASSWORD), "{line}");

    let (code, line) = run_with(
        &world,
        &["worker"],
        &[("CCSYNC_AMQP_CA_FILE", wrong.clone())],
    )
    .await;
    assert_ne!(code, 0, "{line}");
    assert!(line.starts_with("ccsync: "), "{line}");
    assert!(line.contains("RabbitMQ (CCSYNC_AMQP_URL)"), "{line}");
    assert!(line.contains("CCSYNC_AMQP_CA_FILE"), "{line}");
    assert!(!line.contains("guest:guest"), "{line}");

    let empty = std::env::temp_dir().join(format!("ccsync-tls-empty-{}.ndjson", world.queue));
    std::fs::write(&empty, "").unwrap();
    let (code, line) = run_with(
        &world,
        &["publish", "--quiet", empty.to_str().unwrap()],
        &[("CCSYNC_AMQP_CA_FILE", wrong.clone())],
    )
    .await;
    let _ = std::fs::remove_file(&empty);
    assert_ne!(code, 0, "{line}");
    assert!(line.contains("CCSYNC_AMQP_CA_FILE"), "{line}");

    // `ccsync ingest` too: a wrong CA is a configuration error, not an outage to wait out.
    let port = common::free_port();
    let (code, line) = run_with(
        &world,
        &["ingest"],
        &[
            ("CCSYNC_AMQP_CA_FILE", wrong.clone()),
            ("CCSYNC_INGEST__ADDR", format!("127.0.0.1:{port}")),
            (
                "CCSYNC_INGEST__SECRETS",
                "ingest-secret-for-tls-test".into(),
            ),
        ],
    )
    .await;
    assert_ne!(code, 0, "{line}");
    assert!(line.contains("RabbitMQ (CCSYNC_AMQP_URL)"), "{line}");
    assert!(line.contains("CCSYNC_AMQP_CA_FILE"), "{line}");

    // Without a CA file the platform's roots do not know the test CA either: same line.
    let (code, line) = run_with(
        &world,
        &["worker"],
        &[("CCSYNC_REDIS_CA_FILE", String::new())],
    )
    .await;
    assert_ne!(code, 0, "{line}");
    assert!(line.contains("CCSYNC_REDIS_CA_FILE"), "{line}");
    world.cleanup().await;
}

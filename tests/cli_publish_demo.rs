//! The operator-facing commands as a user runs them: `ccsync publish` (CSV and NDJSON into the
//! queue, then synced by a worker) and `ccsync demo`.

mod common;

use std::time::Duration;

use common::{World, message, wait_for};
use serde_json::json;

fn ccsync(args: &[&str], env: &[(String, String)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_csv_and_ndjson_then_the_worker_syncs_them() {
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let dir = std::env::temp_dir().join(format!("ccsync-publish-{}", world.queue));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("contacts.csv");
    let lists = format!("{};{}", world.lists[0], world.lists[1]);
    let mut text = String::from("email,first_name,postal_code,list_ids,cf:tier\n");
    for i in 0..25 {
        text.push_str(&format!("c{i}@example.com,Csv{i},N{i},{lists},gold\n"));
    }
    text.push_str("not-an-email,Bad,N1,,\n");
    std::fs::write(&csv, text).unwrap();
    let out = ccsync(&["publish", "--quiet", csv.to_str().unwrap()], &world.env());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "skipped rows give exit 2: {stdout}"
    );
    assert!(stdout.contains("published 25 messages"), "{stdout}");
    assert!(stdout.contains("line 27: invalid_email"), "{stdout}");
    assert!(!stdout.contains("not-an-email"), "no email in the report");

    let nd = dir.join("events.ndjson");
    let lines: Vec<String> = (0..10)
        .map(|i| {
            String::from_utf8(message(
                &format!("n{i}@example.com"),
                "2026-11-23T10:00:00Z",
                json!({}),
            ))
            .unwrap()
        })
        .collect();
    std::fs::write(&nd, lines.join("\n") + "\n").unwrap();
    let out = ccsync(&["publish", "--quiet", nd.to_str().unwrap()], &world.env());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(world.queue_len().await, 35);

    let mut worker = world.spawn_worker();
    wait_for(Duration::from_secs(60), "35 contacts", || async {
        world.sim.contacts().len() == 35
    })
    .await;
    let c = world.sim.contact("c3@example.com").unwrap();
    assert_eq!(c.fields.get("zip").map(String::as_str), Some("N3"));
    assert_eq!(c.fields.get("cf:tier").map(String::as_str), Some("gold"));
    assert_eq!(c.list_ids.len(), 2);
    worker.kill().await.ok();
    std::fs::remove_dir_all(&dir).ok();
    world.cleanup().await;
}

#[test]
fn demo_runs_end_to_end_and_verifies_itself() {
    let out = ccsync(&["demo", "--contacts", "300"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK: Constant Contact (simulated) holds exactly the merged contacts."));
    assert!(stdout.contains("dead letters:      3"), "{stdout}");
}

#[test]
fn config_check_redacts_and_bad_config_names_the_key() {
    let env = [
        (
            "CCSYNC_AMQP_URL".to_string(),
            "amqps://u:hunter2@mq.example:5671/%2f".to_string(),
        ),
        (
            "CCSYNC_CLIENT_SECRET".to_string(),
            "s3cr3t-value".to_string(),
        ),
    ];
    let out = ccsync(&["config", "check"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        !stdout.contains("hunter2") && !stdout.contains("s3cr3t-value"),
        "{stdout}"
    );
    assert!(stdout.contains("warning: CCSYNC_TOKEN_ENCRYPTION_KEY is not set"));
    let bad = [("CCSYNC_WORKER__PREFETCH".to_string(), "lots".to_string())];
    let out = ccsync(&["worker"], &bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CCSYNC_WORKER__PREFETCH"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
}

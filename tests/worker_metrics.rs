//! A running worker's `/metrics`, `/healthz` and `/readyz` (DESIGN §5.4, issue 6): the contract
//! names are exported, move when work happens, and pass `promtool check metrics`.

mod common;

use std::time::Duration;

use common::{World, message, wait_for};
use serde_json::json;

async fn scrape(port: u16, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn value(text: &str, series: &str) -> f64 {
    common::metric_value(text, series).unwrap_or(0.0)
}

fn promtool() -> Option<std::path::PathBuf> {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if found.is_none() && std::env::var_os("CI").is_some() {
        panic!("promtool is missing (bash scripts/ci-tools.sh installs it)");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_worker_exports_the_contract_metrics_and_they_move() {
    let world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    let port = world.metrics_port;
    let mut worker = world.spawn_worker();
    wait_for(Duration::from_secs(20), "/readyz answers 200", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(scrape(port, "/healthz").await.0, 200);

    // Before any message: every labelled series the dashboard and the alerts select is there at
    // 0 (issue 12), so no `rate()` or ratio sits on an absent series, and the projection exists.
    let (_, first) = scrape(port, "/metrics").await;
    for (endpoint, statuses) in ccsync::telemetry::API_SERIES {
        for status in statuses.iter().chain(&["429", "500", "error"]) {
            let series =
                format!("ccsync_api_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}}");
            assert!(
                first.lines().any(|l| l.starts_with(&format!("{series} "))),
                "{series} absent from the first scrape"
            );
        }
    }
    for series in [
        "ccsync_api_requests_total{endpoint=\"sign_up_form\",status=\"200\"}",
        "ccsync_api_requests_total{endpoint=\"contacts_json_import\",status=\"500\"}",
        "ccsync_messages_total{account=\"\",outcome=\"dead_lettered\"}",
        "ccsync_paused{account=\"\",reason=\"quota\"}",
    ] {
        assert!(
            first.contains(&format!("{series} 0")),
            "{series} is not 0 at first"
        );
    }
    assert!(first.contains("# TYPE ccsync_daily_quota_projected gauge"));

    let mut bodies: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            message(
                &format!("m{i}@example.com"),
                "2026-11-23T10:00:00Z",
                json!({}),
            )
        })
        .collect();
    bodies.push(b"not json".to_vec());
    world.publish(&bodies).await;
    wait_for(Duration::from_secs(30), "50 synced", || async {
        let (_, t) = scrape(port, "/metrics").await;
        value(&t, "ccsync_messages_total{outcome=\"synced\"}") >= 50.0
    })
    .await;
    let (status, text) = scrape(port, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "ccsync_messages_total",
        "ccsync_contacts_synced_total",
        "ccsync_api_requests_total",
        "ccsync_api_request_duration_seconds",
        "ccsync_ratelimit_wait_seconds",
        "ccsync_daily_quota_remaining",
        "ccsync_daily_quota_projected",
        "ccsync_auth_state",
        "ccsync_access_token_expiry_timestamp_seconds",
        "ccsync_batch_size",
        "ccsync_activities_in_flight",
        "ccsync_activity_duration_seconds",
        "ccsync_paused",
        "ccsync_refresh_token_age_seconds",
        "ccsync_build_info",
        "ccsync_refresh_lock_wait_seconds",
        "ccsync_token_refresh_total",
        "ccsync_auth_failures_total",
        "ccsync_rate_limited_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    // They moved with the work.
    assert!(value(&text, "ccsync_contacts_synced_total") >= 50.0);
    assert!(value(&text, "ccsync_messages_total{outcome=\"dead_lettered\"}") >= 1.0);
    assert!(
        value(
            &text,
            "ccsync_api_requests_total{endpoint=\"contacts_json_import\",status=\"201\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            "ccsync_api_requests_total{endpoint=\"activities\",status=\"200\"}"
        ) >= 1.0
    );
    assert!(value(&text, "ccsync_batch_size_count") >= 1.0);
    assert!(value(&text, "ccsync_auth_state") == 1.0);
    assert!(value(&text, "ccsync_access_token_expiry_timestamp_seconds") > 1.7e9);
    assert!(value(&text, "ccsync_daily_quota_remaining") > 0.0);
    assert!(value(&text, "ccsync_paused{reason=\"quota\"}") == 0.0);
    // Labels stay small fixed sets: no email or id ever becomes a label value.
    assert!(!text.contains("@example.com"));

    if let Some(promtool) = promtool() {
        let file = std::env::temp_dir().join(format!("ccsync-metrics-{port}.txt"));
        std::fs::write(&file, &text).unwrap();
        let out = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    worker.kill().await.ok();
    world.cleanup().await;
}

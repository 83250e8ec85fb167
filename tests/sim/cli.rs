//! `ccsync sim` runs standalone, prints its URLs, serves the flow, and stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

#[tokio::test]
async fn standalone_sim_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ccsync"))
        .args([
            "sim",
            "--port",
            "0",
            "--auto-approve",
            "--processing-ms",
            "100",
            "--refresh-mode",
            "long-lived",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ccsync sim");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut base = None;
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        if let Some(u) = line.split("listening on ").nth(1) {
            base = Some(u.trim().to_owned());
        }
        lines.push(line);
        if lines.iter().any(|l| l.contains("refresh tokens:")) {
            break;
        }
    }
    let base = base.expect("prints its URL");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("CCSYNC_API_BASE_URL=") && l.ends_with("/v3"))
    );
    assert!(lines.iter().any(|l| l.contains("client_id")));

    let http = reqwest::Client::new();
    let d: Value = http
        .post(format!("{base}/oauth2/default/v1/device/authorize"))
        .form(&[
            ("client_id", "cli"),
            ("scope", "contact_data offline_access"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t: Value = http
        .post(format!("{base}/oauth2/default/v1/token"))
        .form(&[
            ("client_id", "cli"),
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", d["device_code"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let at = t["access_token"].as_str().expect("auto-approved");
    let r = http
        .get(format!("{base}/v3/contact_lists"))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            panic!("did not stop on SIGTERM");
        }
    };
    assert!(status.success(), "{status:?}");
}

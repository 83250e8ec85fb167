//! Helpers shared by the simulator's tests: a started simulator and small HTTP shortcuts.
#![allow(dead_code)]

use std::time::Duration;

use ccsync::sim::{Sim, SimConfig};
use serde_json::Value;

pub const CLIENT: &str = "test-client";

/// A simulator with short device interval and processing time, for fast tests.
pub async fn sim(cfg: SimConfig) -> Sim {
    Sim::start(cfg).await.expect("simulator starts")
}

pub fn fast() -> SimConfig {
    SimConfig {
        device_interval_secs: 1,
        processing: Duration::from_millis(100),
        ..SimConfig::default()
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// POST a form to the token endpoint; returns (status, json body).
pub async fn token(sim: &Sim, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http()
        .post(format!("{}/token", sim.auth_base_url()))
        .form(form)
        .send()
        .await
        .expect("token call");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Step past the token endpoint's 1 request/s window on the simulator clock.
pub fn next_second(sim: &Sim) {
    sim.advance_clock(Duration::from_millis(1_001));
}

pub async fn refresh(sim: &Sim, rt: &str) -> (u16, Value) {
    next_second(sim);
    token(
        sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("refresh_token", rt),
        ],
    )
    .await
}

/// Poll `cond` every 20 ms for up to `secs` seconds.
pub async fn eventually<F: FnMut() -> bool>(secs: u64, mut cond: F) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

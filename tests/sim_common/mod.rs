//! Helpers shared by the simulator's tests: a started simulator and small HTTP shortcuts
//! (waiting is the kit's, `ccsync-kit`).
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
        freeze_clock: true,
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
    let every = Duration::from_millis(20);
    ccsync_kit::wait_until(Duration::from_secs(secs), every, || {
        let held = cond();
        async move { held }
    })
    .await
}

/// A bearer-authenticated JSON client for the simulator's `/v3` API.
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(sim: &Sim) -> Api {
        Api::for_account(sim, "default")
    }
    /// A client whose token was issued for `account` (its calls see only that account's store).
    pub fn for_account(sim: &Sim, account: &str) -> Api {
        let (token, _) = sim.issue_tokens(CLIENT, account);
        Api::with_token(sim, token)
    }
    /// A client with a given access token.
    pub fn with_token(sim: &Sim, token: String) -> Api {
        Api {
            base: sim.api_base_url(),
            token,
            http: http(),
        }
    }
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("POST");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("PUT");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    /// Poll an activity until it is terminal (bounded); returns its last body.
    pub async fn wait_activity(&self, sim: &Sim, id: &str) -> Value {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            // Keep clear of the 4/s limit while polling.
            sim.advance_clock(Duration::from_millis(300));
            let (s, a) = self.get(&format!("/activities/{id}")).await;
            assert_eq!(s, 200, "{a}");
            if matches!(a["state"].as_str(), Some("completed" | "failed"))
                || std::time::Instant::now() > end
            {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

//! Each test's own world (zero-to-production's `spawn_app`): a simulator on a random port, a
//! random queue name and Redis key prefix, worker processes started from the real binary with
//! `CCSYNC_*` variables, and helpers to publish, wait and inspect.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use ccsync::config::Settings;
use ccsync::queue::{Broker, Fetched, Topology};
use ccsync::sim::{Sim, SimConfig};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use uuid::Uuid;

mod wait;
pub use wait::wait_for;

pub const CLIENT_ID: &str = "test-client";

pub struct World {
    pub sim: Sim,
    pub queue: String,
    pub prefix: String,
    pub lists: Vec<Uuid>,
    pub broker: Broker,
    /// `/metrics` port of the workers this world starts (one at a time; tests that run several
    /// workers set `CCSYNC_METRICS_ADDR` per worker).
    pub metrics_port: u16,
    extra: Vec<(String, String)>,
}

impl World {
    /// A world whose simulator uses `cfg` and has two lists and the custom field `tier`.
    pub async fn new(cfg: SimConfig) -> World {
        World::new_with(cfg, &[]).await
    }

    /// The same on other servers: `extra` are `CCSYNC_*` pairs (broker and Redis URLs, TLS
    /// files) used by the world's own broker connection, its token store and its workers.
    pub async fn new_with(cfg: SimConfig, extra: &[(&str, &str)]) -> World {
        let sim = Sim::start(cfg).await.expect("simulator starts");
        let lists = vec![sim.create_list("Customers"), sim.create_list("Newsletter")];
        sim.create_custom_field("tier");
        let id = Uuid::new_v4().simple().to_string();
        let queue = format!("test.{}", &id[..12]);
        let prefix = format!("test-{}", &id[..12]);
        let settings = Settings::from_pairs(extra.iter().copied()).unwrap();
        let broker = Broker::connect(&settings.amqp())
            .await
            .expect("RabbitMQ answers (bash scripts/services.sh)");
        broker
            .declare(&Topology::for_queue(&queue))
            .await
            .expect("declare");
        World {
            sim,
            queue,
            prefix,
            lists,
            broker,
            metrics_port: free_port(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Fast timings for tests: short linger and polls.
    pub fn fast_sim() -> SimConfig {
        SimConfig {
            processing: Duration::from_millis(150),
            auto_approve: true,
            device_interval_secs: 1,
            ..SimConfig::default()
        }
    }

    /// Extra `CCSYNC_*` variables for workers started after this call.
    pub fn set(&mut self, k: &str, v: &str) {
        self.extra.push((k.to_string(), v.to_string()));
    }

    /// The environment a worker process of this world gets.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("CCSYNC_QUEUE", self.queue.clone()),
            ("CCSYNC_REDIS__KEY_PREFIX", self.prefix.clone()),
            ("CCSYNC_API_BASE_URL", self.sim.api_base_url()),
            ("CCSYNC_AUTH_BASE_URL", self.sim.auth_base_url()),
            ("CCSYNC_CLIENT_ID", CLIENT_ID.to_string()),
            ("CCSYNC_DEFAULT_LIST_IDS", self.lists[0].to_string()),
            (
                "CCSYNC_METRICS_ADDR",
                format!("127.0.0.1:{}", self.metrics_port),
            ),
            ("CCSYNC_LOG_FORMAT", "text".to_string()),
            ("CCSYNC_WORKER__LINGER_MIN_MS", "300".to_string()),
            ("CCSYNC_WORKER__LINGER_MAX_MS", "300".to_string()),
            ("CCSYNC_WORKER__POLL_INITIAL_MS", "100".to_string()),
            ("CCSYNC_WORKER__POLL_MAX_MS", "500".to_string()),
            ("CCSYNC_WORKER__SHUTDOWN_DEADLINE_SECS", "10".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        v.extend(self.extra.iter().cloned());
        v
    }

    pub fn settings(&self) -> Settings {
        let env = self.env();
        Settings::from_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
    }

    /// Give `account` its own lists in the simulator (CC list ids differ per account) and make
    /// the first its default list for the workers this world starts; returns them.
    pub fn lists_for(&mut self, account: &str) -> Vec<Uuid> {
        let lists = vec![
            self.sim.create_list_for(account, "Customers"),
            self.sim.create_list_for(account, "Newsletter"),
        ];
        self.sim.create_custom_field_for(account, "tier");
        self.set(
            &format!(
                "CCSYNC_ACCOUNTS__{}__DEFAULT_LIST_IDS",
                account.to_ascii_uppercase()
            ),
            &lists[0].to_string(),
        );
        lists
    }

    /// Store a token set for `account` as an approved login would.
    pub async fn seed_tokens(&self, account: &str) {
        use ccsync::auth::cli::store_new_set;
        use ccsync::auth::store::Store;
        use ccsync::auth::{AccessToken, RefreshMode, RefreshToken};
        let (access, refresh) = self.sim.issue_tokens(CLIENT_ID, account);
        let store = Store::from_settings(&self.settings()).unwrap();
        store_new_set(
            &store,
            account,
            AccessToken::new(access),
            RefreshToken::new(refresh),
            None,
            RefreshMode::Rotating,
        )
        .await
        .unwrap();
    }

    /// Start `ccsync worker` as its own OS process (killed when the handle drops).
    pub fn spawn_worker(&self) -> Child {
        self.spawn_worker_on(self.metrics_port)
    }

    /// A further worker, with its own metrics port.
    pub fn spawn_worker_on(&self, metrics_port: u16) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccsync"));
        cmd.arg("worker")
            .envs(self.env())
            .env("CCSYNC_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "info,ccsync=debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        cmd.spawn().expect("worker starts")
    }

    /// SIGTERM a worker and wait for it to exit (its unacked deliveries return to the queue, so
    /// `queue_len` is exact afterwards).
    pub async fn terminate(&self, mut worker: Child) -> std::process::ExitStatus {
        if let Some(pid) = worker.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), worker.wait())
            .await
            .expect("worker exits within 30 s of SIGTERM")
            .expect("wait")
    }

    /// A series' value on the worker's `/metrics` (None while it does not answer or has no
    /// such series). `series` names a metric and, optionally, some of its labels
    /// (`ccsync_auth_state`, `ccsync_paused{reason="auth"}`): the values of every series that
    /// carries at least those labels are summed (a metric with an `account` label reads as the
    /// sum over accounts).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = metrics_text(self.metrics_port).await?;
        metric_value(&text, series)
    }

    /// Deliveries the worker has settled for good (synced, superseded or dead-lettered).
    pub async fn settled(&self) -> u64 {
        self.settled_on(self.metrics_port).await
    }

    /// The same for the worker whose metrics listen on `port`.
    pub async fn settled_on(&self, port: u16) -> u64 {
        let Some(text) = metrics_text(port).await else {
            return 0;
        };
        let mut n = 0.0;
        for o in ["synced", "superseded", "dead_lettered"] {
            let series = format!("ccsync_messages_total{{outcome=\"{o}\"}}");
            n += metric_value(&text, &series).unwrap_or(0.0);
        }
        n as u64
    }

    pub async fn publish(&self, bodies: &[Vec<u8>]) {
        let p = self.broker.publisher().await.unwrap();
        p.publish_many(&self.queue, bodies).await.unwrap();
    }

    pub async fn queue_len(&self) -> u32 {
        self.broker.queue_len(&self.queue).await.unwrap()
    }

    /// Messages waiting in `account`'s parking queue (0 when it has none).
    pub async fn parked_len(&self, account: &str) -> u32 {
        let q = Topology::for_queue(&self.queue).parked(account);
        self.broker.queue_len(&q).await.unwrap_or(0)
    }

    pub async fn dead_len(&self) -> u32 {
        self.broker
            .queue_len(&format!("{}.dead", self.queue))
            .await
            .unwrap()
    }

    /// Take every dead letter.
    pub async fn dead_letters(&self) -> Vec<Fetched> {
        let mut out = Vec::new();
        let dead = format!("{}.dead", self.queue);
        while let Some(f) = self.broker.take(&dead).await.unwrap() {
            out.push(f);
        }
        out
    }

    /// Import calls the simulator received.
    pub fn imports(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| {
                r.path.ends_with("/activities/contacts_json_import") && r.status == Some(201)
            })
            .count()
    }

    pub async fn cleanup(self) {
        let t = Topology::for_queue(&self.queue);
        for account in ["default", "acme", "beta", "gamma"] {
            let _ = self.broker.delete_queue(&t.parked(account)).await;
        }
        let _ = self.broker.delete(&t).await;
        self.broker.close().await;
        self.sim.shutdown().await;
    }
}

/// See [`World::metric`].
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let (name, want) = split_series(series);
    let mut total = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((s, v)) = l.rsplit_once(' ') else {
            continue;
        };
        let (n, labels) = split_series(s);
        if n == name
            && want.iter().all(|w| labels.contains(w))
            && let Ok(v) = v.parse::<f64>()
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

fn split_series(s: &str) -> (&str, Vec<&str>) {
    match s.split_once('{') {
        Some((n, rest)) => (
            n,
            rest.trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
                .collect(),
        ),
        None => (s, Vec::new()),
    }
}

/// The `/metrics` text of the worker on `port` (None while it does not answer).
pub async fn metrics_text(port: u16) -> Option<String> {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// A free TCP port on 127.0.0.1 (bound, then released for a worker to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `contact.upsert` body.
pub fn message(email: &str, occurred_at: &str, contact: Value) -> Vec<u8> {
    let mut c = json!({ "email": email });
    if let Value::Object(extra) = contact {
        c.as_object_mut().unwrap().extend(extra);
    }
    serde_json::to_vec(&json!({
        "type": "contact.upsert",
        "version": 1,
        "id": Uuid::new_v4().to_string(),
        "occurred_at": occurred_at,
        "contact": c,
    }))
    .unwrap()
}

/// The simulator's store of the `default` account as email → (fields, lists).
pub fn store(sim: &Sim) -> BTreeMap<String, ccsync::sim::SimContact> {
    store_of(sim, "default")
}

/// One CC account's store in the simulator (each account has its own, as in CC).
pub fn store_of(sim: &Sim, account: &str) -> BTreeMap<String, ccsync::sim::SimContact> {
    sim.contacts_of(account)
        .into_iter()
        .map(|c| (c.email.clone(), c))
        .collect()
}

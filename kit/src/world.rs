//! Each test's own world (zero-to-production's `spawn_app`): a simulator on a random port, a
//! random queue name and Redis key prefix, worker processes started from the real binary with
//! `CCSYNC_*` variables, and helpers to publish, wait and inspect.

use std::path::PathBuf;
use std::time::Duration;

use ccsync::auth::RefreshMode;
use ccsync::auth::store::Store;
use ccsync::config::Settings;
use ccsync::queue::{Broker, Fetched, Topology};
use ccsync_sim::{Sim, SimConfig};
use tokio::process::Child;
use uuid::Uuid;

use crate::{ccsync_command, free_port, metric_value, metrics_text, settled_in, sim_env};

/// The OAuth client id of a world's workers.
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
    /// The `ccsync` binary its workers run ([`World::with_bin`]; `CCSYNC_BIN` by default).
    bin: Option<PathBuf>,
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
            bin: std::env::var_os("CCSYNC_BIN")
                .filter(|b| !b.is_empty())
                .map(PathBuf::from),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The `ccsync` binary this world's workers run: an integration test of the root package
    /// passes `env!("CARGO_BIN_EXE_ccsync")`.
    pub fn with_bin(mut self, bin: impl Into<PathBuf>) -> World {
        self.bin = Some(bin.into());
        self
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
        let mut v = sim_env(&self.sim, CLIENT_ID, &self.prefix);
        v.extend(
            [
                ("CCSYNC_QUEUE", self.queue.clone()),
                ("CCSYNC_DEFAULT_LIST_IDS", self.lists[0].to_string()),
                (
                    "CCSYNC_METRICS_ADDR",
                    format!("127.0.0.1:{}", self.metrics_port),
                ),
                ("CCSYNC_WORKER__LINGER_MIN_MS", "300".to_string()),
                ("CCSYNC_WORKER__LINGER_MAX_MS", "300".to_string()),
                ("CCSYNC_WORKER__POLL_INITIAL_MS", "100".to_string()),
                ("CCSYNC_WORKER__POLL_MAX_MS", "500".to_string()),
                ("CCSYNC_WORKER__SHUTDOWN_DEADLINE_SECS", "10".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        v.extend(self.extra.iter().cloned());
        v
    }

    pub fn settings(&self) -> Settings {
        crate::settings_of(&self.env()).unwrap()
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
        let store = Store::from_settings(&self.settings()).unwrap();
        crate::seed_tokens(&self.sim, &store, CLIENT_ID, account, RefreshMode::Rotating)
            .await
            .unwrap();
    }

    /// Start `ccsync worker` as its own OS process (killed when the handle drops).
    pub fn spawn_worker(&self) -> Child {
        self.spawn_worker_on(self.metrics_port)
    }

    /// A further worker, with its own metrics port.
    pub fn spawn_worker_on(&self, metrics_port: u16) -> Child {
        let bin = self.bin.as_deref().expect(
            "no ccsync binary for this world: World::with_bin(env!(\"CARGO_BIN_EXE_ccsync\")) \
             or CCSYNC_BIN",
        );
        ccsync_command(bin, None, "worker")
            .envs(self.env())
            .env("CCSYNC_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "info,ccsync=debug")
            .spawn()
            .expect("worker starts")
    }

    /// SIGTERM a worker and wait for it to exit (its unacked deliveries return to the queue, so
    /// `queue_len` is exact afterwards).
    pub async fn terminate(&self, mut worker: Child) -> std::process::ExitStatus {
        crate::terminate(&mut worker, Duration::from_secs(30))
            .await
            .expect("worker exits within 30 s of SIGTERM")
    }

    /// A series' value on the worker's `/metrics` (None while it does not answer or has no
    /// such series); see [`metric_value`].
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
        metrics_text(port).await.map_or(0, |t| settled_in(&t))
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

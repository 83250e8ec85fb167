//! One benchmark phase's world: an in-process simulator, its own random queue and Redis key
//! prefix, worker processes started from the `ccsync` binary next to this one
//! ([`ccsync_kit::ccsync_bin`]) so memory and CPU are per process, and the readings taken from
//! them (`/proc/<pid>/status` VmHWM, `/proc/<pid>/stat` utime + stime, the worker's own
//! `/metrics`). The pieces shared with the tests (settings, token sets, starting and stopping
//! processes, scraping, waiting) are the test kit's, `ccsync-kit`; what is here is the bench's.

use std::time::{Duration, Instant};

use tokio::process::Child;
use uuid::Uuid;

use crate::BenchError;
use crate::baseline::Plain;
use ccsync::auth::RefreshMode;
use ccsync::config::Settings;
use ccsync::queue::{Broker, Topology};
use ccsync_kit::{free_port, metric_value};
use ccsync_sim::{Sim, SimConfig};

pub use ccsync_kit::short_id;

/// The OAuth client id the bench's workers use.
pub const CLIENT_ID: &str = "bench-client";

/// A simulator, a queue pair and a Redis prefix of their own.
pub struct Bed {
    pub sim: Sim,
    pub queues: Vec<String>,
    pub prefix: String,
    pub lists: Vec<Uuid>,
    pub broker: Broker,
    /// The plain lapin baselines' own connection.
    pub plain: Plain,
    base: Vec<(String, String)>,
}

impl Bed {
    pub async fn new(cfg: SimConfig) -> Result<Bed, BenchError> {
        let sim = Sim::start(cfg)
            .await
            .map_err(|e| BenchError::Setup(format!("simulator: {e}")))?;
        let lists = vec![sim.create_list("Bench")];
        let prefix = format!("bench-{}", short_id());
        // Broker and Redis: the caller's `CCSYNC_AMQP_URL` / `CCSYNC_REDIS_URL`, else the defaults.
        let mut base = ccsync_kit::service_env();
        base.extend(ccsync_kit::sim_env(&sim, CLIENT_ID, &prefix));
        base.push(("CCSYNC_DEFAULT_LIST_IDS".into(), lists[0].to_string()));
        let settings = settings_of(&base)?;
        let broker = Broker::connect(&settings.amqp()).await?;
        let plain = Plain::connect(&settings).await?;
        Ok(Bed {
            sim,
            queues: Vec::new(),
            prefix,
            lists,
            broker,
            plain,
            base,
        })
    }

    /// A new durable quorum queue (with its dead-letter pair) named `bench.<random>`.
    pub async fn queue(&mut self) -> Result<String, BenchError> {
        let q = format!("bench.{}", short_id());
        self.broker.declare(&Topology::for_queue(&q)).await?;
        self.queues.push(q.clone());
        Ok(q)
    }

    /// Settings as a worker of this bed with `extra` variables would load them.
    pub fn settings(&self, extra: &[(&str, String)]) -> Result<Settings, BenchError> {
        let mut env = self.base.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        settings_of(&env)
    }

    /// Store a fresh token set for `account`, as `ccsync auth login` would.
    pub async fn seed_tokens(&self, account: &str) -> Result<(), BenchError> {
        use ccsync::auth::store::Store;
        let store = Store::from_settings(&self.settings(&[])?)
            .map_err(|e| BenchError::Setup(format!("token store: {e}")))?;
        ccsync_kit::seed_tokens(&self.sim, &store, CLIENT_ID, account, RefreshMode::Rotating)
            .await
            .map_err(BenchError::Setup)?;
        Ok(())
    }

    /// Start `ccsync worker` on `queue` as its own OS process.
    pub async fn spawn_worker(
        &self,
        queue: &str,
        extra: &[(&str, String)],
    ) -> Result<Worker, BenchError> {
        let port = free_port();
        let mut env = vec![("CCSYNC_METRICS_ADDR", format!("127.0.0.1:{port}"))];
        env.extend(extra.iter().cloned());
        // Ready when its metrics server answers (the consumer starts right after).
        self.spawn("worker", queue, &env, port, "/metrics").await
    }

    /// Start `ccsync ingest` on `queue` as its own OS process, with `secret` as its only
    /// `X-Ccsync-Signature` secret and no request-rate limit; ready once its broker link is up
    /// (`/readyz`). Its [`Worker::metrics_addr`] is the HTTP address of its routes.
    pub async fn spawn_ingest(&self, queue: &str, secret: &str) -> Result<Worker, BenchError> {
        let port = free_port();
        let env = [
            ("CCSYNC_INGEST__ADDR", format!("127.0.0.1:{port}")),
            ("CCSYNC_INGEST__SECRETS", secret.to_string()),
            ("CCSYNC_INGEST__RATE_PER_SECOND", "0".to_string()),
        ];
        self.spawn("ingest", queue, &env, port, "/readyz").await
    }

    /// Start `ccsync command` on `queue`; ready when `GET ready` on `port` is 200.
    async fn spawn(
        &self,
        command: &str,
        queue: &str,
        extra: &[(&str, String)],
        port: u16,
        ready: &str,
    ) -> Result<Worker, BenchError> {
        let exe = ccsync_kit::ccsync_bin().map_err(BenchError::Setup)?;
        // Development aid: `CCSYNC_BENCH_WORKER_WRAP=heaptrack` runs each worker under a profiler
        // (the figures read from /proc then describe the wrapper, not the worker).
        let wrap = std::env::var("CCSYNC_BENCH_WORKER_WRAP").ok();
        let mut cmd =
            ccsync_kit::ccsync_command(&exe, wrap.as_deref().filter(|w| !w.is_empty()), command);
        cmd.envs(self.base.iter().cloned())
            .env("CCSYNC_QUEUE", queue)
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .env(
                "RUST_LOG",
                std::env::var("CCSYNC_BENCH_WORKER_LOG").unwrap_or_else(|_| "error".into()),
            );
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start `ccsync {command}`: {e}")))?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError::Setup(format!("`ccsync {command}` exited at once")))?;
        let w = Worker {
            child,
            pid,
            metrics: format!("127.0.0.1:{port}"),
        };
        let what = format!("`ccsync {command}` to answer {ready}");
        wait_for(Duration::from_secs(30), &what, || async {
            http_get(&w.metrics, ready).await.is_ok()
        })
        .await?;
        Ok(w)
    }

    /// Publish NDJSON `contact.upsert` bodies with publisher confirms (pipelined), as
    /// `ccsync publish` does (its own code, [`ccsync::publish::publish`], reading NDJSON from
    /// memory). Returns the time `publish` took: validating, publishing, every confirm.
    pub async fn publish_all(
        &self,
        queue: &str,
        bodies: &[Vec<u8>],
    ) -> Result<Duration, BenchError> {
        let mut ndjson = Vec::with_capacity(bodies.iter().map(|b| b.len() + 1).sum());
        for b in bodies {
            ndjson.extend_from_slice(b);
            ndjson.push(b'\n');
        }
        let publisher = self.broker.publisher().await?;
        let noop = |_: u64, _: u64| {};
        let opts = ccsync::publish::Options {
            queue,
            account: "default",
            default_lists: &ccsync::contact::DefaultLists::global(self.lists.clone()),
            progress: &noop,
        };
        let started = Instant::now();
        let s = ccsync::publish::publish(
            &publisher,
            Box::new(std::io::Cursor::new(ndjson)),
            ccsync::publish::Format::Ndjson,
            &opts,
        )
        .await
        .map_err(|e| BenchError::Setup(format!("publishing: {e}")))?;
        let took = started.elapsed();
        if s.published != bodies.len() as u64 {
            return Err(BenchError::Setup(format!(
                "published {} of {} messages ({} skipped)",
                s.published,
                bodies.len(),
                s.skipped
            )));
        }
        Ok(took)
    }

    /// Delete a queue this bed made (and its dead-letter pair) before the bed ends, so a phase
    /// that fills several leaves the broker as it found it for the next measurement.
    pub async fn drop_queue(&mut self, queue: &str) -> Result<(), BenchError> {
        self.broker.delete(&Topology::for_queue(queue)).await?;
        self.queues.retain(|q| q != queue);
        Ok(())
    }

    pub async fn queue_len(&self, queue: &str) -> Result<u32, BenchError> {
        Ok(self.broker.queue_len(queue).await?)
    }

    /// Raw `GET` on the simulator (the admin API, e.g. `/_sim/activities`).
    pub async fn sim_get(&self, path: &str) -> Result<String, BenchError> {
        http_get(&format!("127.0.0.1:{}", self.sim.port()), path).await
    }

    /// Delete every queue this bed made, close the broker, stop the simulator.
    pub async fn cleanup(self) {
        for q in &self.queues {
            let _ = self.broker.delete(&Topology::for_queue(q)).await;
        }
        // The workers' ordering ledger under this bed's prefix (one key per contact, kept for
        // days otherwise: repeated full runs left millions in a developer's Redis).
        if let Ok(ledger) = settings_of(&self.base).and_then(|s| {
            ccsync::ledger::Ledger::connect(&s).map_err(|e| BenchError::Setup(e.to_string()))
        }) {
            let _ = ledger.forget_all().await;
        }
        self.broker.close().await;
        self.plain.close().await;
        self.sim.shutdown().await;
    }
}

fn settings_of(env: &[(String, String)]) -> Result<Settings, BenchError> {
    ccsync_kit::settings_of(env).map_err(|e| BenchError::Setup(format!("settings: {e}")))
}

/// A worker process.
pub struct Worker {
    child: Child,
    pub pid: u32,
    metrics: String,
}

/// Whole-process readings from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss: u64,
    /// User + system CPU time, seconds.
    pub cpu_secs: f64,
}

impl Worker {
    /// `/metrics` as text.
    pub async fn scrape(&self) -> Result<String, BenchError> {
        http_get(&self.metrics, "/metrics").await
    }

    /// A counter or gauge sample, e.g. `ccsync_messages_total{outcome="synced"}` (0 if absent).
    pub async fn metric(&self, series: &str) -> Result<f64, BenchError> {
        Ok(sample(&self.scrape().await?, series))
    }

    /// Messages acked after CC completed their import.
    pub async fn synced(&self) -> Result<u64, BenchError> {
        synced_at(&self.metrics).await
    }

    /// `host:port` of its metrics server.
    pub fn metrics_addr(&self) -> String {
        self.metrics.clone()
    }

    /// VmHWM and utime + stime of the process, read while it runs.
    pub fn stats(&self) -> Result<ProcStats, BenchError> {
        proc_stats(self.pid)
    }

    /// SIGTERM and wait (bounded) for a clean exit; kill on timeout.
    pub async fn stop(mut self) {
        if ccsync_kit::terminate(&mut self.child, Duration::from_secs(30))
            .await
            .is_none()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The synced counter of the worker whose metrics server is at `addr`.
pub async fn synced_at(addr: &str) -> Result<u64, BenchError> {
    let text = http_get(addr, "/metrics").await?;
    Ok(sample(&text, "ccsync_messages_total{outcome=\"synced\"}") as u64)
}

/// The sum of the samples of a Prometheus text exposition whose name is `series`'s and whose
/// labels include all of `series`'s (`ccsync_messages_total{outcome="synced"}` sums every
/// account); 0 if none ([`ccsync_kit::metric_value`]).
pub fn sample(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or(0.0)
}

/// VmHWM (bytes) and utime + stime (seconds) of `pid`.
pub fn proc_stats(pid: u32) -> Result<ProcStats, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| BenchError::Setup(format!("/proc/{pid}/status: {e}")))?;
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| BenchError::Setup(format!("no VmHWM for pid {pid}")))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| BenchError::Setup(format!("/proc/{pid}/stat: {e}")))?;
    // Fields after the `(comm)` (which may hold spaces): state is field 3, utime 14, stime 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| BenchError::Setup("unreadable /proc stat".into()))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (utime, stime) = (ticks(11), ticks(12));
    Ok(ProcStats {
        peak_rss: peak_kb * 1024,
        cpu_secs: (utime + stime) as f64 / clock_ticks(),
    })
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// A GET with a 10 s limit that must answer 200; the body ([`ccsync_kit::http_get`]).
async fn http_get(addr: &str, path: &str) -> Result<String, BenchError> {
    ccsync_kit::http_get(addr, path)
        .await
        .map_err(BenchError::Setup)
}

/// CPU seconds spent so far by what shares the machine with the worker: Redis (its own
/// `used_cpu_user` + `used_cpu_sys`, and the part of it inside Lua scripts from `INFO
/// commandstats`, `evalsha` + `eval`), RabbitMQ (every `beam.smp` process) and this process
/// (the simulator and the bench's polls). Two snapshots around a phase give that phase's share.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    pub redis: f64,
    pub redis_scripts: f64,
    pub broker: f64,
    pub bench: f64,
}

impl MachineCpu {
    /// Read now (Redis: `CCSYNC_REDIS_URL`, else the default; run on a quiet machine, every
    /// client of that Redis and every broker process counts).
    pub async fn now() -> Result<MachineCpu, BenchError> {
        let env = ccsync_kit::service_env();
        let settings = settings_of(&env)?;
        let err = |e: redis::RedisError| BenchError::Setup(format!("Redis INFO: {e}"));
        let client = redis::Client::open(secrecy::ExposeSecret::expose_secret(&settings.redis_url))
            .map_err(err)?;
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(err)?;
        let info: String = redis::cmd("INFO")
            .arg("all")
            .query_async(&mut c)
            .await
            .map_err(err)?;
        let field = |name: &str| -> f64 {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        Ok(MachineCpu {
            redis: field("used_cpu_user") + field("used_cpu_sys"),
            redis_scripts: script_usec(&info) as f64 / 1e6,
            broker: cpu_of_named("beam.smp"),
            bench: proc_stats(std::process::id())?.cpu_secs,
        })
    }

    /// What was spent between `self` and the later snapshot `after`.
    pub fn until(self, after: MachineCpu) -> MachineCpu {
        MachineCpu {
            redis: after.redis - self.redis,
            redis_scripts: after.redis_scripts - self.redis_scripts,
            broker: after.broker - self.broker,
            bench: after.bench - self.bench,
        }
    }
}

/// utime + stime of every process whose `comm` is `name` (0 where none).
fn cpu_of_named(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .filter_map(|pid| proc_stats(pid).ok())
        .map(|st| st.cpu_secs)
        .sum()
}

/// The `usec` of `cmdstat_evalsha` and `cmdstat_eval` in an `INFO commandstats` reply.
fn script_usec(info: &str) -> u64 {
    info.lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("cmdstat_evalsha:")
                .or_else(|| l.strip_prefix("cmdstat_eval:"))?;
            rest.split(',')
                .find_map(|kv| kv.strip_prefix("usec="))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Poll `cond` every 20 ms until it holds; `BenchError::Timeout` naming `what` after `limit`.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, cond: F) -> Result<(), BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if ccsync_kit::wait_until(limit, Duration::from_millis(20), cond).await {
        return Ok(());
    }
    Err(BenchError::Timeout {
        what: what.to_string(),
        after: limit,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn script_time_is_evalsha_plus_eval() {
        let info = "# Commandstats\r\n\
            cmdstat_evalsha:calls=220,usec=1630619,usec_per_call=7411.90,rejected_calls=0\r\n\
            cmdstat_hset:calls=100002,usec=145729,usec_per_call=1.46\r\n\
            cmdstat_eval:calls=2,usec=381,usec_per_call=190.50\r\n";
        assert_eq!(super::script_usec(info), 1_631_000);
        assert_eq!(super::script_usec("# Commandstats\r\n"), 0);
    }
}

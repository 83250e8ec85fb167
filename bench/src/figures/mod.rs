//! The measurements. Each phase builds its own [`Bed`] and cleans it up whatever happens.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;

use super::{BenchError, Scale};
use crate::bed::{Bed, Worker, wait_for};
use ccsync_sim::{RequestRecord, SimConfig};

mod big;
use big::largest_batch;
use outage::payload_bytes;
mod ingest;
mod latency;
mod outage;
mod replicas;
mod tokens;
pub use big::*;
pub use ingest::*;
pub use latency::*;
pub use outage::*;
pub use replicas::*;
pub use tokens::*;

/// CC's import limits the floor is measured against (reference §11).
pub const CC_MAX_CONTACTS_PER_IMPORT: u64 = 40_000;
pub const CC_MAX_IMPORT_BYTES: u64 = 4_000_000;
/// CC's daily request budget per API key.
pub const CC_DAILY_QUOTA: u64 = 10_000;

/// A realistic `contact.upsert` body: a distinct email, names, a company.
pub fn message(run: &str, i: u64) -> Vec<u8> {
    ccsync_kit::message(
        &format!("p{i}.{run}@example.com"),
        OCCURRED_AT,
        json!({
            "first_name": format!("First{i}"),
            "last_name": "Benchmark",
            "company_name": "Engines Ltd",
        }),
    )
}

/// When every bench message happened.
pub const OCCURRED_AT: &str = "2026-11-23T08:00:00Z";

/// The smallest valid body: an email and nothing else. Its import row is short enough that
/// CC's 40,000-contact cap, not the byte limit, ends a batch (figure 4 at the cap).
pub fn email_only_message(run: &str, i: u64) -> Vec<u8> {
    ccsync_kit::message(&format!("p{i}.{run}@example.com"), OCCURRED_AT, json!({}))
}

fn bodies(run: &str, n: u64, make: fn(&str, u64) -> Vec<u8>) -> Vec<Vec<u8>> {
    (0..n).map(|i| make(run, i)).collect()
}

/// Run `f` on a fresh bed and clean the bed up whatever `f` returned.
async fn with_bed<T, F>(cfg: SimConfig, f: F) -> Result<T, BenchError>
where
    F: AsyncFnOnce(&mut Bed) -> Result<T, BenchError>,
{
    let mut bed = Bed::new(cfg).await?;
    let out = f(&mut bed).await;
    bed.cleanup().await;
    out
}

/// Figure 1 (and the unthrottled half of figure 6).
#[derive(Debug, Clone)]
pub struct Overhead {
    pub messages: u64,
    /// The plain consumer with acks folded into `multiple` acks, one run per fold in
    /// [`OVERHEAD_FOLDS`]: (deliveries per ack, seconds).
    pub folded: Vec<(u64, f64)>,
    /// The plain consumer acking each delivery on its own (issue 7's baseline).
    pub single_ack_secs: f64,
    pub pipeline_secs: f64,
    pub imports: usize,
    pub cpu_secs: f64,
    pub peak_rss: u64,
    /// CPU the rest of the machine spent while the worker drained the queue (Redis, its Lua
    /// scripts: the ordering ledger's claims; RabbitMQ; the simulator). `None` when it could not
    /// be read (a cluster, an ACL without `INFO`).
    pub phase_cpu: Option<crate::bed::MachineCpu>,
    pub prefetch: u16,
    pub config: String,
}

/// Deliveries per `multiple` ack the plain consumer is run with; the fastest is the baseline.
/// The worker folds a whole settled run (a batch: hundreds to ~28,600 deliveries) into one ack.
pub const OVERHEAD_FOLDS: &[u64] = &[256, 2_048, 16_384];

impl Overhead {
    /// The fastest folded run: (deliveries per ack, seconds).
    pub fn best_fold(&self) -> (u64, f64) {
        self.folded
            .iter()
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((1, self.single_ack_secs))
    }
    /// The best plain consumer's rate (folded acks), messages/s.
    pub fn baseline_rate(&self) -> f64 {
        self.messages as f64 / self.best_fold().1
    }
    pub fn single_ack_rate(&self) -> f64 {
        self.messages as f64 / self.single_ack_secs
    }
    pub fn pipeline_rate(&self) -> f64 {
        self.messages as f64 / self.pipeline_secs
    }
    /// Worker ÷ the best plain consumer (issue 18's target: ≥ 0.8).
    pub fn ratio(&self) -> f64 {
        self.pipeline_rate() / self.baseline_rate()
    }
    /// Worker ÷ the single-ack loop.
    pub fn ratio_single_ack(&self) -> f64 {
        self.pipeline_rate() / self.single_ack_rate()
    }
}

/// Worker settings of the overhead phase: nothing throttles (the simulator's limits are lifted
/// as well), imports complete in 20 ms and are polled after 20 ms, so what is left is the
/// pipeline's own work plus the simulator's (same machine).
const OVERHEAD_ENV: &[(&str, &str)] = &[
    ("CCSYNC_RATELIMIT__PER_SECOND", "100000"),
    ("CCSYNC_RATELIMIT__DAILY_QUOTA", "1000000000"),
    ("CCSYNC_RATELIMIT__EXPECTED_REPLICAS", "1"),
    ("CCSYNC_WORKER__LINGER_MIN_MS", "200"),
    ("CCSYNC_WORKER__LINGER_MAX_MS", "200"),
    ("CCSYNC_WORKER__POLL_INITIAL_MS", "20"),
    ("CCSYNC_WORKER__POLL_MAX_MS", "100"),
];

fn env_of(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn describe(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("`{}={v}`", k.trim_start_matches("CCSYNC_")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Figure 1: the same number of messages through plain lapin consumers and through the worker,
/// each timed from its first delivery to its last ack, on the same broker in the same run, each
/// from its own freshly filled queue, with the worker's prefetch.
///
/// The plain consumers (in this process, [`crate::baseline::Plain::consume_and_ack`]) do nothing
/// but receive and ack: once with acks folded into `multiple` acks as the worker folds them, for
/// each fold of [`OVERHEAD_FOLDS`] (the fastest is the baseline: the broker's ceiling for a
/// consumer at this prefetch), and once acking every delivery on its own.
///
/// The worker is another process, so its first delivery is seen from outside: the moment the
/// queue's ready count first drops (polled every 5 ms); its last ack is the moment its
/// `ccsync_messages_total{outcome="synced"}` counter (incremented after each ack) reaches the
/// total (polled every 20 ms). Both polls err towards a longer pipeline time by a few ms.
pub async fn overhead(scale: Scale) -> Result<Overhead, BenchError> {
    let n = scale.overhead_messages();
    let cfg = SimConfig {
        per_second: 1_000_000,
        daily_quota: u64::MAX / 4,
        token_per_second: 1_000,
        processing: Duration::from_millis(20),
        ..SimConfig::default()
    };
    with_bed(cfg, async |bed: &mut Bed| {
        bed.seed_tokens("default").await?;
        let run = crate::bed::short_id();
        let prefetch = bed.settings(&[])?.worker.prefetch;
        // One plain run: fill a fresh queue, drain it, drop it.
        let plain = async |bed: &mut Bed, tag: String, every: u64| {
            let q = bed.queue().await?;
            bed.publish_all(&q, &bodies(&tag, n, message)).await?;
            let stats = bed.plain.consume_and_ack(&q, prefetch, n, every).await?;
            bed.drop_queue(&q).await?;
            Ok::<f64, BenchError>((stats.last_ack - stats.first_delivery).as_secs_f64())
        };
        let single_ack_secs = plain(bed, format!("{run}s"), 1).await?;
        let mut folded = Vec::new();
        for &every in OVERHEAD_FOLDS {
            folded.push((every, plain(bed, format!("{run}f{every}"), every).await?));
        }

        let pipe_q = bed.queue().await?;
        bed.publish_all(&pipe_q, &bodies(&format!("{run}p"), n, message))
            .await?;
        let env = env_of(OVERHEAD_ENV);
        let cpu_before = crate::bed::MachineCpu::now().await.ok();
        let worker = bed.spawn_worker(&pipe_q, &env).await?;
        let limit = Duration::from_secs(30 + n / 200);
        let mut first = None;
        let t = Instant::now();
        while first.is_none() {
            if bed.queue_len(&pipe_q).await? < n as u32 {
                first = Some(Instant::now());
            } else if t.elapsed() > limit {
                return Err(BenchError::Timeout {
                    what: "the worker's first delivery".into(),
                    after: limit,
                });
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let first = first.unwrap_or_else(Instant::now);
        wait_for(limit, "the worker to ack every message", || async {
            worker.synced().await.is_ok_and(|s| s >= n)
        })
        .await?;
        let pipeline_secs = first.elapsed().as_secs_f64();
        let cpu_after = crate::bed::MachineCpu::now().await.ok();
        let st = worker.stats()?;
        worker.stop().await;
        let imports = imports(&bed.sim.requests());
        Ok(Overhead {
            messages: n,
            folded,
            single_ack_secs,
            pipeline_secs,
            imports,
            cpu_secs: st.cpu_secs,
            peak_rss: st.peak_rss,
            phase_cpu: cpu_before.zip(cpu_after).map(|(b, a)| b.until(a)),
            prefetch,
            config: describe(OVERHEAD_ENV),
        })
    })
    .await
}

fn imports(log: &[RequestRecord]) -> usize {
    log.iter()
        .filter(|r| r.path.ends_with("/activities/contacts_json_import") && r.status == Some(201))
        .count()
}

/// Figures 2, 4 and 6: a backlog at CC's real limits.
#[derive(Debug, Clone)]
pub struct Backlog {
    pub contacts: u64,
    /// Bytes of the import payloads the backlog needs at the least (all contacts, 40,000 a body).
    pub payload_bytes: u64,
    pub imports: u64,
    pub polls: u64,
    pub lookups: u64,
    pub tokens: u64,
    pub total: u64,
    pub drain_secs: f64,
    pub largest_batch: u64,
    pub peak_rss: u64,
    pub cpu_secs: f64,
    pub config: String,
}

impl Backlog {
    /// One import per 40,000 contacts or per 4 MB, whichever binds first.
    pub fn floor_imports(&self) -> u64 {
        self.contacts
            .div_ceil(CC_MAX_CONTACTS_PER_IMPORT)
            .max(self.payload_bytes.div_ceil(CC_MAX_IMPORT_BYTES))
    }
    /// Each import needs at least one poll.
    pub fn floor_requests(&self) -> u64 {
        2 * self.floor_imports()
    }
    pub fn per_10k(&self) -> f64 {
        self.total as f64 * 10_000.0 / self.contacts as f64
    }
    pub fn floor_per_10k(&self) -> f64 {
        self.floor_requests() as f64 * 10_000.0 / self.contacts as f64
    }
    /// Contacts one API key carries per day at this efficiency.
    pub fn contacts_per_day(&self) -> f64 {
        CC_DAILY_QUOTA as f64 * self.contacts as f64 / self.total.max(1) as f64
    }
}

/// Worker settings of the backlog phase: CC's limits and the defaults, except that a partial last
/// batch lingers at most 5 s (at a full daily budget the pacing would hold it for minutes; a
/// backlog fills whole batches, so only the tail is affected).
const BACKLOG_ENV: &[(&str, &str)] = &[("CCSYNC_WORKER__LINGER_MAX_MS", "5000")];

/// Figure 2 (API efficiency), 4 (memory) and 6 (CPU) from one worker draining a backlog at CC's
/// real limits (4 requests/s, 10,000/day, 1 s import processing in the simulator).
pub async fn backlog(scale: Scale) -> Result<Backlog, BenchError> {
    drain_backlog(scale.backlog_messages(), message).await
}

/// Figure 4 at CC's contact cap: the same backlog run with email-only messages, so imports carry
/// 40,000 contacts each (the realistic messages of [`backlog`] fill 3.99 MB first).
pub async fn backlog_at_contact_cap(scale: Scale) -> Result<Backlog, BenchError> {
    drain_backlog(scale.contact_cap_messages(), email_only_message).await
}

async fn drain_backlog(n: u64, make: fn(&str, u64) -> Vec<u8>) -> Result<Backlog, BenchError> {
    drain_backlog_with(n, make, 1).await
}

/// Publish a backlog of `n` messages, then let `workers` worker processes (one key, one Redis
/// prefix, one queue) drain it. Peak RSS is the highest of the workers', CPU their sum.
async fn drain_backlog_with(
    n: u64,
    make: fn(&str, u64) -> Vec<u8>,
    workers: usize,
) -> Result<Backlog, BenchError> {
    with_bed(SimConfig::default(), async |bed: &mut Bed| {
        bed.seed_tokens("default").await?;
        let run = crate::bed::short_id();
        let msgs = bodies(&run, n, make);
        let payload_bytes = payload_bytes(&msgs, &bed.lists)?;
        let q = bed.queue().await?;
        bed.publish_all(&q, &msgs).await?;
        drop(msgs);
        let env = env_of(BACKLOG_ENV);
        let mut running = Vec::with_capacity(workers);
        for _ in 0..workers {
            running.push(bed.spawn_worker(&q, &env).await?);
        }
        let t = Instant::now();
        let limit = Duration::from_secs(60 + n / 200);
        wait_for(limit, "the backlog to drain", || async {
            let mut synced = 0;
            for w in &running {
                synced += w.synced().await.unwrap_or(0);
            }
            synced >= n
        })
        .await?;
        let drain_secs = t.elapsed().as_secs_f64();
        let (mut peak_rss, mut cpu_secs) = (0, 0.0);
        for w in running {
            let st = w.stats()?;
            peak_rss = st.peak_rss.max(peak_rss);
            cpu_secs += st.cpu_secs;
            w.stop().await;
        }
        let log = bed.sim.requests();
        let count = |f: &dyn Fn(&RequestRecord) -> bool| log.iter().filter(|r| f(r)).count() as u64;
        let imports = count(&|r| r.path.ends_with("/contacts_json_import"));
        let polls = count(&|r| r.path.contains("/activities/") && r.method == "GET");
        let tokens = count(&|r| r.path.starts_with("/oauth2/"));
        let total = log.len() as u64;
        let largest_batch = largest_batch(bed).await?;
        Ok(Backlog {
            contacts: n,
            payload_bytes,
            imports,
            polls,
            lookups: total - imports - polls - tokens,
            tokens,
            total,
            drain_secs,
            largest_batch,
            peak_rss,
            cpu_secs,
            config: describe(BACKLOG_ENV),
        })
    })
    .await
}

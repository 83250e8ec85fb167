//! The measurements. Each phase builds its own [`Bed`] and cleans it up whatever happens.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;

use super::bed::{Bed, Worker, wait_for};
use super::{BenchError, Scale};
use crate::sim::{RequestRecord, SimConfig};

/// CC's import limits the floor is measured against (reference §11).
pub const CC_MAX_CONTACTS_PER_IMPORT: u64 = 40_000;
pub const CC_MAX_IMPORT_BYTES: u64 = 4_000_000;
/// CC's daily request budget per API key.
pub const CC_DAILY_QUOTA: u64 = 10_000;

/// A realistic `contact.upsert` body: a distinct email, names, a company.
pub fn message(run: &str, i: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "contact.upsert",
        "version": 1,
        "id": uuid::Uuid::new_v4().to_string(),
        "occurred_at": "2026-11-23T08:00:00Z",
        "contact": {
            "email": format!("p{i}.{run}@example.com"),
            "first_name": format!("First{i}"),
            "last_name": "Benchmark",
            "company_name": "Engines Ltd",
        }
    }))
    .expect("JSON of strings")
}

/// The smallest valid body: an email and nothing else. Its import row is short enough that
/// CC's 40,000-contact cap, not the byte limit, ends a batch (figure 4 at the cap).
pub fn email_only_message(run: &str, i: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "contact.upsert",
        "version": 1,
        "id": uuid::Uuid::new_v4().to_string(),
        "occurred_at": "2026-11-23T08:00:00Z",
        "contact": { "email": format!("p{i}.{run}@example.com") }
    }))
    .expect("JSON of strings")
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
/// The plain consumers (in this process, [`crate::queue::Broker::consume_and_ack`]) do nothing
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
        let run = super::bed::short_id();
        let prefetch = bed.settings(&[])?.worker.prefetch;
        // One plain run: fill a fresh queue, drain it, drop it.
        let plain = async |bed: &mut Bed, tag: String, every: u64| {
            let q = bed.queue().await?;
            bed.publish_all(&q, &bodies(&tag, n, message)).await?;
            let stats = bed.broker.consume_and_ack(&q, prefetch, n, every).await?;
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
/// 40,000 contacts each (the realistic messages of [`backlog`] fill 3.5 MB first).
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
        let run = super::bed::short_id();
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

/// Custom fields of a big message (issue 11: 15 of ~255 characters each).
pub const BIG_FIELDS: usize = 15;
/// Characters of each custom field value of a big message (CC's maximum).
pub const BIG_FIELD_CHARS: usize = 255;

/// The custom field names a big message carries; the bed's simulator knows them
/// ([`crate::sim::Sim::create_custom_field`]), as CC must (`worker.create_custom_fields` is off).
pub fn big_field_names() -> Vec<String> {
    (1..=BIG_FIELDS)
        .map(|k| format!("bench_note_{k:02}"))
        .collect()
}

/// A ~4 KB `contact.upsert` body (issue 11's big messages): a distinct email, names, a company
/// and [`BIG_FIELDS`] custom fields of [`BIG_FIELD_CHARS`] characters each, distinct per message.
pub fn big_message(run: &str, i: u64) -> Vec<u8> {
    let fields: serde_json::Map<String, serde_json::Value> = big_field_names()
        .into_iter()
        .enumerate()
        .map(|(k, name)| {
            let head = format!("{i}/{k} ");
            let tail: String = "lorem ipsum dolor sit amet "
                .chars()
                .cycle()
                .take(BIG_FIELD_CHARS - head.len())
                .collect();
            (name, serde_json::Value::String(head + &tail))
        })
        .collect();
    serde_json::to_vec(&json!({
        "type": "contact.upsert",
        "version": 1,
        "id": uuid::Uuid::new_v4().to_string(),
        "occurred_at": "2026-11-23T08:00:00Z",
        "contact": {
            "email": format!("p{i}.{run}@example.com"),
            "first_name": format!("First{i}"),
            "last_name": "Benchmark",
            "company_name": "Engines Ltd",
            "custom_fields": fields,
        }
    }))
    .expect("JSON of strings")
}

/// Figure 4 with big messages: a backlog of ~4 KB messages at CC's real limits, where the
/// worker's byte budget for held deliveries (`worker.max_held_bytes`), not the prefetch count,
/// bounds what it holds.
#[derive(Debug, Clone)]
pub struct BigMessages {
    pub contacts: u64,
    /// Mean bytes of one message body as published.
    pub mean_body: f64,
    pub imports: u64,
    pub largest_batch: u64,
    pub drain_secs: f64,
    pub peak_rss: u64,
    pub cpu_secs: f64,
    /// Highest `ccsync_held_bytes` seen (sampled every 100 ms).
    pub peak_held_bytes: u64,
    /// Most deliveries held at once (published − ready − synced, sampled every 100 ms): the
    /// prefetch window the worker settled on, as far as it was filled.
    pub peak_held_deliveries: u64,
    /// The worker's `worker.max_held_bytes`.
    pub max_held_bytes: u64,
    /// The worker's `worker.prefetch` (the window's upper bound).
    pub prefetch: u16,
    pub config: String,
}

/// Figure 4 with ~4 KB messages (issue 11 measured 281 MB for 50,000 before the byte budget).
pub async fn big_messages(scale: Scale) -> Result<BigMessages, BenchError> {
    let n = scale.big_messages();
    with_bed(SimConfig::default(), async |bed: &mut Bed| {
        bed.seed_tokens("default").await?;
        for name in big_field_names() {
            bed.sim.create_custom_field(&name);
        }
        let run = super::bed::short_id();
        let msgs = bodies(&run, n, big_message);
        let mean_body = msgs.iter().map(|b| b.len() as f64).sum::<f64>() / n.max(1) as f64;
        let q = bed.queue().await?;
        bed.publish_all(&q, &msgs).await?;
        drop(msgs);
        let env = env_of(BACKLOG_ENV);
        let settings = bed.settings(&env)?;
        let worker = bed.spawn_worker(&q, &env).await?;
        let t = Instant::now();
        let limit = Duration::from_secs(120 + n / 100);
        let (mut peak_held_bytes, mut peak_held_deliveries) = (0u64, 0u64);
        loop {
            let text = worker.scrape().await?;
            let synced =
                super::bed::sample(&text, "ccsync_messages_total{outcome=\"synced\"}") as u64;
            peak_held_bytes =
                peak_held_bytes.max(super::bed::sample(&text, "ccsync_held_bytes") as u64);
            if synced >= n {
                break;
            }
            let ready = u64::from(bed.queue_len(&q).await?);
            peak_held_deliveries = peak_held_deliveries.max(n.saturating_sub(ready + synced));
            if t.elapsed() > limit {
                return Err(BenchError::Timeout {
                    what: "the big-message backlog to drain".into(),
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let drain_secs = t.elapsed().as_secs_f64();
        let st = worker.stats()?;
        worker.stop().await;
        let imports = imports(&bed.sim.requests()) as u64;
        Ok(BigMessages {
            contacts: n,
            mean_body,
            imports,
            largest_batch: largest_batch(bed).await?,
            drain_secs,
            peak_rss: st.peak_rss,
            cpu_secs: st.cpu_secs,
            peak_held_bytes,
            peak_held_deliveries,
            max_held_bytes: settings.worker.max_held_bytes as u64,
            prefetch: settings.worker.prefetch,
            config: describe(BACKLOG_ENV),
        })
    })
    .await
}

/// The most contacts one import activity of the bed's simulator carried.
async fn largest_batch(bed: &Bed) -> Result<u64, BenchError> {
    let acts: Vec<serde_json::Value> =
        serde_json::from_str(&bed.sim_get("/_sim/activities").await?)
            .map_err(|e| BenchError::Setup(format!("simulator activities: {e}")))?;
    Ok(acts
        .iter()
        .filter_map(|a| a["status"]["items_total_count"].as_u64())
        .max()
        .unwrap_or(0))
}

/// Requests per hour of outage: CC answers 503 to every call while a backlog waits.
#[derive(Debug, Clone)]
pub struct Outage {
    pub backlog: u64,
    /// Length of the measured outage, seconds (from the first failing answer on).
    pub span_secs: f64,
    /// Every request the simulator logged during the span (API and token endpoint).
    pub requests: u64,
    /// Of those, the ones before the worker reported `ccsync_paused{reason="outage"}`.
    pub before_pause: u64,
    /// Seconds from the outage's start until the pause was seen (NaN: never).
    pub paused_after_secs: f64,
    /// `ccsync_pause_probes_total{reason="outage"}` at the end of the span.
    pub probes: u64,
    /// Messages dead-lettered during the outage (`<queue>.dead`).
    pub dead_during: u64,
    /// After the outage: backlog messages synced, dead letters, and the time it took.
    pub synced: u64,
    pub dead_letters: u64,
    pub drain_secs: f64,
    pub config: String,
}

impl Outage {
    /// Requests per hour, extrapolated linearly from the span (the probe cap makes the pause
    /// linear; the breaker's own failures are a one-off, so this errs high).
    pub fn per_hour(&self) -> f64 {
        self.requests as f64 * 3_600.0 / self.span_secs
    }
}

/// Requests per hour of outage: one worker at CC's limits and defaults syncs a first message
/// (lists, token and custom fields cached), then CC fails every call (`Faults { error_rate:
/// 1.0 }`: 503 to every non-admin request) and a backlog is published. Every request the
/// simulator logs over the span counts. Then CC answers again and the backlog must drain with
/// no dead letters.
pub async fn outage(scale: Scale) -> Result<Outage, BenchError> {
    let (n, span) = scale.outage();
    with_bed(SimConfig::default(), async |bed: &mut Bed| {
        bed.seed_tokens("default").await?;
        let q = bed.queue().await?;
        let env = env_of(BACKLOG_ENV);
        let worker = bed.spawn_worker(&q, &env).await?;
        let run = super::bed::short_id();
        bed.publish_all(&q, &[message(&format!("{run}w"), 0)])
            .await?;
        wait_for(Duration::from_secs(60), "the warm-up message", || async {
            worker.synced().await.is_ok_and(|s| s >= 1)
        })
        .await?;
        let dead_q = crate::queue::Topology::for_queue(&q).dead;
        let from = bed.sim.requests().len();
        bed.sim.set_faults(crate::sim::Faults {
            error_rate: 1.0,
            ..crate::sim::Faults::default()
        });
        let started = Instant::now();
        bed.publish_all(&q, &bodies(&run, n, message)).await?;
        let mut before_pause = None;
        let mut paused_after_secs = f64::NAN;
        while started.elapsed() < span {
            if before_pause.is_none()
                && worker.metric("ccsync_paused{reason=\"outage\"}").await? == 1.0
            {
                paused_after_secs = started.elapsed().as_secs_f64();
                before_pause = Some((bed.sim.requests().len() - from) as u64);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let span_secs = started.elapsed().as_secs_f64();
        let requests = (bed.sim.requests().len() - from) as u64;
        let probes = worker
            .metric("ccsync_pause_probes_total{reason=\"outage\"}")
            .await? as u64;
        let dead_during = u64::from(bed.queue_len(&dead_q).await?);
        bed.sim.set_faults(crate::sim::Faults::default());
        let t = Instant::now();
        // The next probe comes at most 20 s later; then the backlog at 4 req/s.
        let limit = Duration::from_secs(120 + n / 100);
        wait_for(limit, "the backlog to drain after the outage", || async {
            worker.synced().await.is_ok_and(|s| s > n)
        })
        .await?;
        let drain_secs = t.elapsed().as_secs_f64();
        let synced = worker.synced().await? - 1;
        worker.stop().await;
        Ok(Outage {
            backlog: n,
            span_secs,
            requests,
            before_pause: before_pause.unwrap_or(requests),
            paused_after_secs,
            probes,
            dead_during,
            synced,
            dead_letters: u64::from(bed.queue_len(&dead_q).await?),
            drain_secs,
            config: describe(BACKLOG_ENV),
        })
    })
    .await
}

/// Bytes of the import bodies the backlog needs, in 40,000-contact bodies.
fn payload_bytes(msgs: &[Vec<u8>], lists: &[uuid::Uuid]) -> Result<u64, BenchError> {
    let contacts = msgs
        .iter()
        .map(|b| crate::contact::decode(b, lists))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|r| BenchError::Setup(format!("bench message rejected: {}", r.detail)))?;
    let refs: Vec<&crate::contact::Contact> = contacts.iter().collect();
    Ok(refs
        .chunks(CC_MAX_CONTACTS_PER_IMPORT as usize)
        .map(|c| crate::cc::api::Api::import_body(lists, c).len() as u64)
        .sum())
}

/// Figure 3 at one rate.
#[derive(Debug, Clone)]
pub struct Latency {
    pub rate: u64,
    pub messages: u64,
    /// Publish (broker-confirmed) → the worker's ack, seconds.
    pub p50_ack: f64,
    pub p99_ack: f64,
    /// Publish → the contact written in the simulator (activity end), seconds.
    pub p50_visible: f64,
    pub p99_visible: f64,
    /// API requests (not token calls) the phase cost, and that rate projected over a day.
    pub api_requests: u64,
    pub per_day: f64,
    pub config: String,
    /// The linger the pacing would choose at a full daily budget right now (unscaled); for
    /// [`latency_paced`], the linger it ran with.
    pub unscaled_linger_secs: f64,
}

/// Worker settings of the latency phase: CC's limits, but the linger capped at 2 s (scaled:
/// at a full daily budget the pacing would let a trickle batch linger for minutes, see
/// [`Latency::unscaled_linger_secs`]) and paced for one replica.
const LATENCY_ENV: &[(&str, &str)] = &[
    ("CCSYNC_WORKER__LINGER_MIN_MS", "500"),
    ("CCSYNC_WORKER__LINGER_MAX_MS", "2000"),
    ("CCSYNC_RATELIMIT__EXPECTED_REPLICAS", "1"),
];

/// Figure 3: publish → ack at 1 and 50 messages/s under CC's limits, at the scaled linger.
///
/// Ack times are read from the worker: its synced counter (incremented right after each ack) is
/// scraped every 10 ms, and the k-th ack is matched with the k-th publish (one consumer, one list
/// set, activities of equal length: batches settle in publish order). The time each contact
/// became visible in the simulator (the end of its import activity) is reported beside it.
pub async fn latency(scale: Scale) -> Result<Vec<Latency>, BenchError> {
    let (slow_secs, fast_secs) = scale.trickle_secs();
    trickles(LATENCY_ENV, &[(1, slow_secs), (50, fast_secs)]).await
}

/// Figure 3 as an operator gets it: the default configuration, whose budget-aware pacing keeps
/// a whole day of this trickle within 10,000 requests. The linger then dominates (and is the
/// same at 50 msg/s: a trickle batch is far from full), so one rate is measured, over at least
/// one whole linger. At the tiny scale the linger is capped at 3 s so the smoke test stays short.
pub async fn latency_paced(scale: Scale) -> Result<Latency, BenchError> {
    let env: &'static [(&'static str, &'static str)] = if scale == Scale::Tiny {
        &[("CCSYNC_WORKER__LINGER_MAX_MS", "3000")]
    } else {
        &[]
    };
    let linger = if scale == Scale::Tiny {
        3.0
    } else {
        unscaled_linger()
    };
    let secs = scale.trickle_secs().0.max(linger.ceil() as u64 + 10);
    let mut out = trickles(env, &[(1, secs)]).await?;
    let mut l = out
        .pop()
        .ok_or_else(|| BenchError::Setup("the paced trickle measured nothing".into()))?;
    l.unscaled_linger_secs = linger;
    Ok(l)
}

/// One worker with `env`, then each (rate, seconds) trickle in turn.
async fn trickles(
    env: &[(&'static str, &'static str)],
    rates: &[(u64, u64)],
) -> Result<Vec<Latency>, BenchError> {
    with_bed(SimConfig::default(), async |bed: &mut Bed| {
        bed.seed_tokens("default").await?;
        let q = bed.queue().await?;
        let worker = bed.spawn_worker(&q, &env_of(env)).await?;
        let publisher = bed.broker.publisher().await?;
        let run = super::bed::short_id();
        // Warm up: the consumer is up and the token is cached before the clock starts.
        publisher
            .publish(&q, &message(&format!("{run}w"), 0))
            .await?;
        // The unscaled linger bounds every wait: a paced batch may linger that long.
        let linger = unscaled_linger();
        let warm_limit = Duration::from_secs(60 + 2 * linger as u64);
        wait_for(warm_limit, "the warm-up message", || async {
            worker.synced().await.is_ok_and(|s| s >= 1)
        })
        .await?;
        let mut out = Vec::new();
        for &(rate, secs) in rates {
            let tag = format!("{run}r{rate}");
            let n = rate * secs;
            let base = worker.synced().await?;
            let log_before = bed.sim.requests().len();
            let stop = Arc::new(AtomicBool::new(false));
            let watcher = tokio::spawn(watch_synced(worker.metrics_addr(), stop.clone()));
            let mut published = Vec::with_capacity(n as usize);
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            let started = Instant::now();
            for i in 0..n {
                tick.tick().await;
                let body = message(&tag, i);
                let (at, wall) = (Instant::now(), OffsetDateTime::now_utc());
                publisher.publish(&q, &body).await?;
                published.push((at, wall));
            }
            wait_for(
                warm_limit + Duration::from_secs(secs),
                "every trickle message to be acked",
                || async { worker.synced().await.is_ok_and(|s| s >= base + n) },
            )
            .await?;
            // One more scrape period so the watcher has seen the last change.
            tokio::time::sleep(Duration::from_millis(30)).await;
            stop.store(true, Ordering::Relaxed);
            let changes = watcher
                .await
                .map_err(|e| BenchError::Setup(format!("watcher: {e}")))?;
            let elapsed = started.elapsed().as_secs_f64();
            let mut ack = Vec::with_capacity(n as usize);
            for (k, (at, _)) in published.iter().enumerate() {
                let want = base + k as u64 + 1;
                if let Some((t, _)) = changes.iter().find(|(_, c)| *c >= want) {
                    ack.push(t.saturating_duration_since(*at).as_secs_f64());
                }
            }
            let mut visible = Vec::with_capacity(n as usize);
            for (i, (_, wall)) in published.iter().enumerate() {
                if let Some(c) = bed.sim.contact(&format!("p{i}.{tag}@example.com")) {
                    visible.push((c.updated_at - *wall).as_seconds_f64());
                }
            }
            let log = bed.sim.requests();
            let api_requests = log[log_before..]
                .iter()
                .filter(|r| r.path.starts_with("/v3/"))
                .count() as u64;
            out.push(Latency {
                rate,
                messages: n,
                p50_ack: quantile(&mut ack, 0.50),
                p99_ack: quantile(&mut ack, 0.99),
                p50_visible: quantile(&mut visible, 0.50),
                p99_visible: quantile(&mut visible, 0.99),
                api_requests,
                per_day: api_requests as f64 * 86_400.0 / elapsed,
                config: describe(env),
                unscaled_linger_secs: linger,
            });
        }
        worker.stop().await;
        Ok(out)
    })
    .await
}

/// The linger `worker.linger_*` defaults and the pacing give a trickle right now, with the whole
/// day's budget left and the default three expected replicas.
fn unscaled_linger() -> f64 {
    use crate::ratelimit::{Budget, pacing_linger};
    let d = crate::config::Settings::from_pairs([]).ok();
    let (min, max) = d
        .as_ref()
        .map(|s| s.linger_bounds())
        .unwrap_or((Duration::from_secs(2), Duration::from_secs(600)));
    let (reserve, replicas) = d
        .as_ref()
        .map(|s| (s.ratelimit.daily_reserve, s.ratelimit.expected_replicas))
        .unwrap_or((300, 3));
    let b = Budget {
        remaining_today: CC_DAILY_QUOTA,
        reserve,
        until_reset: Duration::from_secs(crate::clock::secs_until_utc_midnight(
            crate::clock::now_utc(),
        )),
        replicas,
        paused_until: None,
    };
    // The worker's own estimate of what a batch costs (src/app.rs).
    pacing_linger(&b, 4.0, min, max).as_secs_f64()
}

/// Sorted-sample quantile (nearest rank); NaN for no samples.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Scrape the synced counter every 10 ms until `stop`; every change with its time.
async fn watch_synced(addr: String, stop: Arc<AtomicBool>) -> Vec<(Instant, u64)> {
    let mut out: Vec<(Instant, u64)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(s) = super::bed::synced_at(&addr).await
            && out.last().is_none_or(|(_, c)| *c != s)
        {
            out.push((Instant::now(), s));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out
}

/// Figure 5.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub cached_ns_per_op: f64,
    pub iterations: u64,
    pub token_ttl: Duration,
    pub refresh_calls: u64,
    pub refresh_ok: u64,
    pub window_secs: f64,
    /// Refreshes one process alone would make in the window: window / (ttl − refresh lead).
    pub expiries_by_time: f64,
}

impl Tokens {
    pub fn per_expiry(&self) -> f64 {
        self.refresh_calls as f64 / self.refresh_ok.max(1) as f64
    }
}

/// Worker settings of the fan-in phase: batches leave after at most 1 s, so every process calls
/// CC (and needs its token) all the time.
const FANIN_ENV: &[(&str, &str)] = &[
    ("CCSYNC_WORKER__LINGER_MIN_MS", "500"),
    ("CCSYNC_WORKER__LINGER_MAX_MS", "1000"),
];

/// Figure 5: `access_token()` from the in-process cache, and the refresh fan-in of 3 worker
/// processes sharing one token set with a short lifetime (rotating refresh tokens, as CC
/// recommends: a second refresh with a spent token would show as an extra, failing call).
pub async fn tokens(scale: Scale) -> Result<Tokens, BenchError> {
    let (ttl, want) = scale.fanin();
    let cfg = SimConfig {
        token_ttl: ttl,
        ..SimConfig::default()
    };
    with_bed(cfg, async |bed: &mut Bed| {
        // Cached path, in process, right after seeding (far from the refresh window).
        bed.seed_tokens("cached").await?;
        let settings = bed.settings(&[])?;
        let gate: Arc<dyn crate::ratelimit::Gate> =
            crate::ratelimit::SharedLimiter::connect(&settings, &settings.client_id)
                .await
                .map_err(|e| BenchError::Setup(format!("limiter: {e}")))?;
        let provider = crate::auth::TokenProvider::connect(&settings, gate)
            .await
            .map_err(|e| BenchError::Setup(format!("token provider: {e}")))?;
        provider
            .access_token("cached")
            .await
            .map_err(|e| BenchError::Setup(format!("first access_token: {e}")))?;
        let iterations = scale.token_iterations();
        let t = Instant::now();
        for _ in 0..iterations {
            let tok = provider.access_token(std::hint::black_box("cached")).await;
            std::hint::black_box(tok.is_ok());
        }
        let cached_ns_per_op = t.elapsed().as_nanos() as f64 / iterations as f64;

        // Fan-in: 3 processes, a trickle of work so each uses its token.
        bed.seed_tokens("default").await?;
        // The window starts with the token set: every refresh of it falls inside.
        let started = Instant::now();
        let q = bed.queue().await?;
        let mut workers: Vec<Worker> = Vec::new();
        let env = env_of(FANIN_ENV);
        for _ in 0..3 {
            workers.push(bed.spawn_worker(&q, &env).await?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = bed.broker.publisher().await?;
        let (q2, stop2, run) = (q.clone(), stop.clone(), super::bed::short_id());
        let feeder = tokio::spawn(async move {
            let mut i = 0;
            while !stop2.load(Ordering::Relaxed) {
                let _ = publisher.publish(&q2, &message(&run, i)).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let ok = |log: &[RequestRecord]| {
            log.iter()
                .filter(|r| is_refresh(r) && r.status == Some(200))
                .count() as u64
        };
        let limit = ttl * (want as u32 + 4);
        let res = wait_for(limit, "the token refreshes", || async {
            ok(&bed.sim.requests()) >= want
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let _ = feeder.await;
        let window_secs = started.elapsed().as_secs_f64();
        for w in workers {
            w.stop().await;
        }
        res?;
        let log = bed.sim.requests();
        let lead = (ttl.as_secs_f64() * 0.2).min(settings.auth.refresh_before.as_secs_f64());
        Ok(Tokens {
            cached_ns_per_op,
            iterations,
            token_ttl: ttl,
            refresh_calls: log.iter().filter(|r| is_refresh(r)).count() as u64,
            refresh_ok: ok(&log),
            window_secs,
            expiries_by_time: window_secs / (ttl.as_secs_f64() - lead),
        })
    })
    .await
}

fn is_refresh(r: &RequestRecord) -> bool {
    r.path.ends_with("/token") && r.grant_type.as_deref() == Some("refresh_token")
}

/// Figure 8: `ccsync ingest` against `ccsync publish` and a bare confirmed publisher, on the
/// same broker in the same run, each into its own fresh queue.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// Signed single-message requests (`application/json`), each answered 202 after its confirm.
    pub single_requests: u64,
    pub single_secs: f64,
    pub single_conns: usize,
    /// Signed NDJSON requests of `ndjson_lines` messages each.
    pub ndjson_messages: u64,
    pub ndjson_lines: usize,
    pub ndjson_secs: f64,
    pub ndjson_conns: usize,
    /// CPU (user + system) of the ingest process in each phase, seconds.
    pub single_cpu_secs: f64,
    pub ndjson_cpu_secs: f64,
    /// `ccsync publish` of `publish_messages` NDJSON lines (its own code, from memory).
    pub publish_messages: u64,
    pub publish_secs: f64,
    /// The bare confirmed lapin publisher, same messages, same confirm window.
    pub bare_secs: f64,
    pub window: usize,
}

impl Ingest {
    pub fn single_rate(&self) -> f64 {
        self.single_requests as f64 / self.single_secs
    }
    pub fn ndjson_rate(&self) -> f64 {
        self.ndjson_messages as f64 / self.ndjson_secs
    }
    pub fn publish_rate(&self) -> f64 {
        self.publish_messages as f64 / self.publish_secs
    }
    pub fn bare_rate(&self) -> f64 {
        self.publish_messages as f64 / self.bare_secs
    }
}

/// The one `X-Ccsync-Signature` secret of the bench's ingest process.
const INGEST_SECRET: &str = "bench-ingest-secret-0123456789abcdef";

/// Figure 8 (issue 16): signed single-message requests per second and NDJSON messages per second
/// through `ccsync ingest` (its own process, rate limit off) to a confirmed publish, against
/// `ccsync publish` and a bare confirmed lapin publisher (issue 18) publishing as many messages.
///
/// Requests are built and signed before the clock starts and sent over keep-alive connections,
/// one request at a time per connection ([`super::load`]); every answer must be 202, and the
/// queue must hold every message afterwards. Each measurement has its own queue, deleted after
/// it, so each starts on the same empty broker.
pub async fn ingest(scale: Scale) -> Result<Ingest, BenchError> {
    let (singles, ndjson_messages, ndjson_lines) = scale.ingest();
    let (single_conns, ndjson_conns) = (16, 4);
    let window = crate::publish::CONFIRM_WINDOW;
    with_bed(SimConfig::default(), async |bed: &mut Bed| {
        let run = super::bed::short_id();
        let msgs = bodies(&format!("{run}b"), ndjson_messages, message);
        // The bare publisher, then `ccsync publish`, each into a fresh queue, checked and dropped.
        let q = bed.queue().await?;
        let bare_secs = bed
            .broker
            .publish_confirmed(&q, &msgs, window)
            .await?
            .as_secs_f64();
        expect_len(bed, &q, ndjson_messages).await?;
        bed.drop_queue(&q).await?;
        let msgs = bodies(&format!("{run}p"), ndjson_messages, message);
        let q = bed.queue().await?;
        let publish_secs = bed.publish_all(&q, &msgs).await?.as_secs_f64();
        expect_len(bed, &q, ndjson_messages).await?;
        bed.drop_queue(&q).await?;
        drop(msgs);

        let q = bed.queue().await?;
        let ingest = bed.spawn_ingest(&q, INGEST_SECRET).await?;
        let addr = ingest.metrics_addr();
        let signed = |body: &[u8], ct: &str| {
            let sig =
                crate::ingest::sign::ccsync_header(INGEST_SECRET, crate::clock::now_unix(), body);
            super::load::post(
                &addr,
                "/v1/contacts",
                &[("Content-Type", ct), ("X-Ccsync-Signature", &sig)],
                body,
            )
        };
        let requests: Vec<Vec<u8>> = (0..singles)
            .map(|i| signed(&message(&format!("{run}s"), i), "application/json"))
            .collect();
        let cpu0 = ingest.stats()?.cpu_secs;
        let single_secs = super::load::drive(&addr, requests, single_conns, 202)
            .await?
            .as_secs_f64();
        let cpu1 = ingest.stats()?.cpu_secs;
        expect_len(bed, &q, singles).await?;

        let requests: Vec<Vec<u8>> = bodies(&format!("{run}n"), ndjson_messages, message)
            .chunks(ndjson_lines)
            .map(|c| {
                let mut body = c.join(&b'\n');
                body.push(b'\n');
                signed(&body, "application/x-ndjson")
            })
            .collect();
        let ndjson_secs = super::load::drive(&addr, requests, ndjson_conns, 202)
            .await?
            .as_secs_f64();
        let cpu2 = ingest.stats()?.cpu_secs;
        expect_len(bed, &q, singles + ndjson_messages).await?;
        ingest.stop().await;
        bed.drop_queue(&q).await?;
        Ok(Ingest {
            single_requests: singles,
            single_secs,
            single_conns,
            ndjson_messages,
            ndjson_lines,
            ndjson_secs,
            ndjson_conns,
            single_cpu_secs: cpu1 - cpu0,
            ndjson_cpu_secs: cpu2 - cpu1,
            publish_messages: ndjson_messages,
            publish_secs,
            bare_secs,
            window,
        })
    })
    .await
}

/// Every confirmed message must be in the queue (a 202 or a confirm that lost one is a bug, not
/// a slow run).
async fn expect_len(bed: &Bed, queue: &str, want: u64) -> Result<(), BenchError> {
    let got = u64::from(bed.queue_len(queue).await?);
    if got != want {
        return Err(BenchError::Setup(format!(
            "{queue} holds {got} messages after {want} confirmed publishes"
        )));
    }
    Ok(())
}

/// Figure 9 (issue 18): three worker processes sharing one API key (one token set, one Redis
/// limiter and quota, one queue) drain the backlog of figure 2, against one worker.
#[derive(Debug, Clone)]
pub struct Replicas {
    pub one: Backlog,
    pub three: Backlog,
    /// Whether `one` was measured in this phase (an `--only` run) or is figure 2's backlog.
    pub one_measured_here: bool,
}

/// Figure 9: the backlog of figure 2 drained by three replicas (the default
/// `ratelimit.expected_replicas` = 3). `one` is figure 2's single-worker backlog when the whole
/// table is measured; an `--only replicas` run measures it here first.
pub async fn replicas(scale: Scale, one: Option<&Backlog>) -> Result<Replicas, BenchError> {
    let n = scale.backlog_messages();
    let (one, one_measured_here) = match one {
        Some(b) => (b.clone(), false),
        None => (drain_backlog_with(n, message, 1).await?, true),
    };
    let three = drain_backlog_with(n, message, 3).await?;
    Ok(Replicas {
        one,
        three,
        one_measured_here,
    })
}

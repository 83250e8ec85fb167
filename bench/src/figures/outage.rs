//! Figure 7: the requests a worker spends per hour of CC outage, then the drain.

use super::*;

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
        let run = crate::bed::short_id();
        bed.publish_all(&q, &[message(&format!("{run}w"), 0)])
            .await?;
        wait_for(Duration::from_secs(60), "the warm-up message", || async {
            worker.synced().await.is_ok_and(|s| s >= 1)
        })
        .await?;
        let dead_q = ccsync::queue::Topology::for_queue(&q).dead;
        let from = bed.sim.requests().len();
        bed.sim.set_faults(ccsync_sim::Faults {
            error_rate: 1.0,
            ..ccsync_sim::Faults::default()
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
        bed.sim.set_faults(ccsync_sim::Faults::default());
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
pub(super) fn payload_bytes(msgs: &[Vec<u8>], lists: &[uuid::Uuid]) -> Result<u64, BenchError> {
    let contacts = msgs
        .iter()
        .map(|b| ccsync::contact::decode(b, lists))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|r| BenchError::Setup(format!("bench message rejected: {}", r.detail)))?;
    let refs: Vec<&ccsync::contact::Contact> = contacts.iter().collect();
    Ok(refs
        .chunks(CC_MAX_CONTACTS_PER_IMPORT as usize)
        .map(|c| ccsync::cc::api::Api::import_body(lists, c).len() as u64)
        .sum())
}

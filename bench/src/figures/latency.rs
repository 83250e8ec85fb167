//! Figure 3: publish → ack latency at trickle load, scaled and budget-paced linger.

use super::*;

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
        let run = crate::bed::short_id();
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
    use ccsync::ratelimit::{Budget, pacing_linger};
    let d = ccsync::config::Settings::from_pairs([]).ok();
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
        until_reset: Duration::from_secs(ccsync::clock::secs_until_utc_midnight(
            ccsync::clock::now_utc(),
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
        if let Ok(s) = crate::bed::synced_at(&addr).await
            && out.last().is_none_or(|(_, c)| *c != s)
        {
            out.push((Instant::now(), s));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out
}

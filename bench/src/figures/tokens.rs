//! Figure 5: the cached token path and the refresh fan-in of several workers.

use super::*;

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
        let gate: Arc<dyn ccsync::ratelimit::Gate> =
            ccsync::ratelimit::SharedLimiter::connect(&settings, &settings.client_id)
                .await
                .map_err(|e| BenchError::Setup(format!("limiter: {e}")))?;
        let provider = ccsync::auth::TokenProvider::connect(&settings, gate)
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
        let (q2, stop2, run) = (q.clone(), stop.clone(), crate::bed::short_id());
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

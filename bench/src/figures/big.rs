//! Figure 4 with ~4 KB messages: memory under the byte budget for held deliveries.

use super::*;

/// Custom fields of a big message (issue 11: 15 of ~255 characters each).
pub const BIG_FIELDS: usize = 15;
/// Characters of each custom field value of a big message (CC's maximum).
pub const BIG_FIELD_CHARS: usize = 255;

/// The custom field names a big message carries; the bed's simulator knows them
/// ([`ccsync_sim::Sim::create_custom_field`]), as CC must (`worker.create_custom_fields` is off).
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
    ccsync_kit::message(
        &format!("p{i}.{run}@example.com"),
        super::OCCURRED_AT,
        json!({
            "first_name": format!("First{i}"),
            "last_name": "Benchmark",
            "company_name": "Engines Ltd",
            "custom_fields": fields,
        }),
    )
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
        let run = crate::bed::short_id();
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
                crate::bed::sample(&text, "ccsync_messages_total{outcome=\"synced\"}") as u64;
            peak_held_bytes =
                peak_held_bytes.max(crate::bed::sample(&text, "ccsync_held_bytes") as u64);
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
pub(super) async fn largest_batch(bed: &Bed) -> Result<u64, BenchError> {
    let acts: Vec<serde_json::Value> =
        serde_json::from_str(&bed.sim_get("/_sim/activities").await?)
            .map_err(|e| BenchError::Setup(format!("simulator activities: {e}")))?;
    Ok(acts
        .iter()
        .filter_map(|a| a["status"]["items_total_count"].as_u64())
        .max()
        .unwrap_or(0))
}

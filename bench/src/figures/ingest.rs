//! Figure 8: `ccsync ingest` against `ccsync publish` and a bare confirmed publisher.

use super::*;

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
/// one request at a time per connection ([`crate::load`]); every answer must be 202, and the
/// queue must hold every message afterwards. Each measurement has its own queue, deleted after
/// it, so each starts on the same empty broker.
pub async fn ingest(scale: Scale) -> Result<Ingest, BenchError> {
    let (singles, ndjson_messages, ndjson_lines) = scale.ingest();
    let (single_conns, ndjson_conns) = (16, 4);
    let window = ccsync::publish::CONFIRM_WINDOW;
    with_bed(SimConfig::default(), async |bed: &mut Bed| {
        let run = crate::bed::short_id();
        let msgs = bodies(&format!("{run}b"), ndjson_messages, message);
        // The bare publisher, then `ccsync publish`, each into a fresh queue, checked and dropped.
        let q = bed.queue().await?;
        let bare_secs = bed
            .plain
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
                ccsync::ingest::sign::ccsync_header(INGEST_SECRET, ccsync::clock::now_unix(), body);
            crate::load::post(
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
        let single_secs = crate::load::drive(&addr, requests, single_conns, 202)
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
        let ndjson_secs = crate::load::drive(&addr, requests, ndjson_conns, 202)
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

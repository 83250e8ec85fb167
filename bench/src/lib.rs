//! `ccsync bench` (issue 7): every figure of `BENCHMARKS.md`, measured in one run against real
//! RabbitMQ, real Redis and an in-process simulator, with the workers as separate OS processes
//! (the `ccsync` binary next to this one, `worker`), so memory and CPU are read per process from
//! `/proc`. The `ccsync-bench` binary is what `ccsync bench` runs (feature `sim`).
//!
//! Phases, each in its own [`bed::Bed`] (random queue names, random Redis key prefix, its own
//! simulator; queues deleted afterwards):
//! 1. [`figures::overhead`]: plain lapin consumers ([`crate::baseline::Plain::consume_and_ack`],
//!    acks folded into `multiple` acks as the worker does, and one ack per delivery) against one
//!    worker draining the same number of messages into an unthrottled simulator.
//! 2. [`figures::backlog`]: a backlog at CC's real limits: every request the simulator logged,
//!    against the floor (one import per 40,000 contacts or 4 MB, plus one poll each); the same
//!    worker's peak RSS (a full batch in flight) and CPU per message.
//! 3. [`figures::latency`]: publish → ack at 1 and 50 messages/s under real limits, with a scaled
//!    linger (stated in the table).
//! 4. [`figures::tokens`]: `TokenProvider::access_token()` from the cache (ns/op, in process) and
//!    the refresh fan-in of 3 worker processes against a short token lifetime.
//! 5. [`figures::outage`]: the requests a worker spends per hour while CC answers 503 to every
//!    call with a backlog waiting, then the backlog drained once CC answers again.
//! 6. [`figures::ingest`]: signed requests through `ccsync ingest` (its own process) to a
//!    confirmed publish, against `ccsync publish` and a bare confirmed lapin publisher.
//! 7. [`figures::replicas`]: figure 2's backlog drained by three workers sharing one key.
//!
//! Phase 2 also drains a backlog of ~4 KB messages ([`figures::big_messages`], figure 4 under
//! the byte budget for held deliveries).
//!
//! Targets are printed next to the measured values, never asserted (machines are noisy).
//! Design choices where the issue is silent are documented at each phase.

pub mod baseline;
pub mod bed;
pub mod figures;
pub mod load;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use ccsync::queue::QueueError;

/// `ccsync bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Backlog sizes and phase lengths: `tiny` (smoke test, seconds), `small` (about a minute),
    /// `full` (the published table, a few minutes).
    #[arg(long, value_enum, default_value_t = Scale::Small)]
    pub scale: Scale,
    /// Where to write the markdown table.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Measure only these figures and write their rows and notes into the existing `--out`
    /// table, leaving every other row as it was measured (a `Partial run` line says so).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
}

/// Figures `--only` can measure on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Figure 1, the worker against plain lapin consumers (`overhead.*`,
    /// `cpu.per_message_unthrottled`).
    Overhead,
    /// Figure 2, API efficiency: a backlog drained at CC's real limits, its requests against the
    /// floor (`api.*`).
    Api,
    /// Figure 4 with ~4 KB messages (`memory.peak_rss_4kb`).
    Big,
    /// Figure 7, requests per hour of outage (`outage.*`).
    Outage,
    /// Figure 8, `ccsync ingest` against `ccsync publish` and a bare publisher (`ingest.*`,
    /// `publish.*`).
    Ingest,
    /// Figure 9, three replicas sharing one key (`replicas.*`; measures one replica too).
    Replicas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    Tiny,
    Small,
    Full,
}

impl Scale {
    pub fn name(self) -> &'static str {
        match self {
            Scale::Tiny => "tiny",
            Scale::Small => "small",
            Scale::Full => "full",
        }
    }

    /// Messages each side of the overhead comparison drains.
    pub fn overhead_messages(self) -> u64 {
        match self {
            Scale::Tiny => 2_000,
            Scale::Small => 50_000,
            Scale::Full => 100_000,
        }
    }

    /// Backlog of the API-efficiency phase (issue 7: 200,000 at full scale).
    pub fn backlog_messages(self) -> u64 {
        match self {
            Scale::Tiny => 2_000,
            Scale::Small => 50_000,
            Scale::Full => 200_000,
        }
    }

    /// Email-only backlog of the memory figure at CC's 40,000-contact cap (2.5 full imports at
    /// full scale).
    pub fn contact_cap_messages(self) -> u64 {
        match self {
            Scale::Tiny => 2_000,
            Scale::Small => 50_000,
            Scale::Full => 100_000,
        }
    }

    /// Backlog of ~4 KB messages of figure 4 with big messages (issue 11 measured 50,000).
    pub fn big_messages(self) -> u64 {
        match self {
            Scale::Tiny => 1_000,
            Scale::Small => 20_000,
            Scale::Full => 50_000,
        }
    }

    /// Backlog waiting through the outage, and the outage's measured span.
    pub fn outage(self) -> (u64, Duration) {
        match self {
            Scale::Tiny => (200, Duration::from_secs(25)),
            Scale::Small => (1_000, Duration::from_secs(60)),
            Scale::Full => (2_000, Duration::from_secs(180)),
        }
    }

    /// Figure 8: signed single-message requests, NDJSON messages (also what `ccsync publish`
    /// and the bare publisher send), and lines per NDJSON request.
    pub fn ingest(self) -> (u64, u64, usize) {
        match self {
            Scale::Tiny => (300, 2_000, 500),
            Scale::Small => (5_000, 50_000, 1_000),
            Scale::Full => (20_000, 200_000, 1_000),
        }
    }

    /// Seconds of trickle at 1 message/s and at 50 messages/s.
    pub fn trickle_secs(self) -> (u64, u64) {
        match self {
            Scale::Tiny => (4, 2),
            Scale::Small => (20, 10),
            Scale::Full => (60, 30),
        }
    }

    /// Access-token lifetime of the fan-in phase, and how many refreshes it waits for.
    pub fn fanin(self) -> (Duration, u64) {
        match self {
            Scale::Tiny => (Duration::from_secs(5), 2),
            Scale::Small => (Duration::from_secs(8), 3),
            Scale::Full => (Duration::from_secs(10), 5),
        }
    }

    /// Iterations of the cached `access_token()` loop.
    pub fn token_iterations(self) -> u64 {
        match self {
            Scale::Tiny => 100_000,
            _ => 2_000_000,
        }
    }
}

/// Why a bench run stopped. Nothing here is retried: fix the cause and run again.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench setup failed: {0} (are RabbitMQ and Redis up? `bash scripts/services.sh`)")]
    Setup(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("cannot write {path}: {err}")]
    Write { path: String, err: std::io::Error },
}

/// Run every phase and write the table to `args.out`.
pub async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let started = std::time::Instant::now();
    let scale = args.scale;
    // Development aid: `CCSYNC_BENCH_ONLY=overhead|backlog|cap|big|latency|paced|outage|ingest|replicas|tokens` runs one phase and
    // prints it without writing the table.
    if let Ok(only) = std::env::var("CCSYNC_BENCH_ONLY") {
        match only.as_str() {
            "overhead" => eprintln!("{:?}", figures::overhead(scale).await?),
            "backlog" => eprintln!("{:?}", figures::backlog(scale).await?),
            "cap" => eprintln!("{:?}", figures::backlog_at_contact_cap(scale).await?),
            "latency" => eprintln!("{:?}", figures::latency(scale).await?),
            "paced" => eprintln!("{:?}", figures::latency_paced(scale).await?),
            "big" => eprintln!("{:?}", figures::big_messages(scale).await?),
            "outage" => eprintln!("{:?}", figures::outage(scale).await?),
            "ingest" => eprintln!("{:?}", figures::ingest(scale).await?),
            "replicas" => eprintln!("{:?}", figures::replicas(scale, None).await?),
            _ => eprintln!("{:?}", figures::tokens(scale).await?),
        }
        return Ok(());
    }
    if !args.only.is_empty() {
        return run_only(args).await;
    }
    eprintln!(
        "ccsync bench --scale {}: 1/7 pipeline overhead",
        scale.name()
    );
    let overhead = figures::overhead(scale).await?;
    eprintln!("  {overhead:?}");
    eprintln!("2/7 backlog at real limits (API efficiency, memory, CPU)");
    let backlog = figures::backlog(scale).await?;
    eprintln!("  {backlog:?}");
    eprintln!("   the same with email-only messages (memory at 40,000-contact imports)");
    let contact_cap = figures::backlog_at_contact_cap(scale).await?;
    eprintln!("  {contact_cap:?}");
    eprintln!("   ~4 KB messages (memory under the byte budget for held deliveries)");
    let big = figures::big_messages(scale).await?;
    eprintln!("  {big:?}");
    eprintln!("3/7 latency at trickle load");
    let latency = figures::latency(scale).await?;
    eprintln!("  {latency:?}");
    eprintln!("   the same at the default, budget-aware pacing");
    let latency_paced = figures::latency_paced(scale).await?;
    eprintln!("  {latency_paced:?}");
    eprintln!("4/7 token path");
    let tokens = figures::tokens(scale).await?;
    eprintln!("  {tokens:?}");
    eprintln!("5/7 requests per hour of outage");
    let outage = figures::outage(scale).await?;
    eprintln!("  {outage:?}");
    eprintln!("6/7 ingest against ccsync publish and a bare publisher");
    let ingest = figures::ingest(scale).await?;
    eprintln!("  {ingest:?}");
    eprintln!("7/7 three replicas sharing one key");
    let replicas = figures::replicas(scale, Some(&backlog)).await?;
    eprintln!("  {replicas:?}");
    let all = report::Results {
        scale,
        overhead,
        backlog,
        contact_cap,
        big,
        latency,
        latency_paced,
        tokens,
        outage,
        ingest,
        replicas,
        runtime: started.elapsed(),
    };
    let md = report::render(&all);
    std::fs::write(&args.out, md).map_err(|err| BenchError::Write {
        path: args.out.display().to_string(),
        err,
    })?;
    eprintln!(
        "wrote {} in {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One figure of an `--only` run: measured and printed when `on`, else `None`.
async fn measure<T, F>(
    on: bool,
    what: &str,
    figure: impl FnOnce() -> F,
) -> Result<Option<T>, BenchError>
where
    T: std::fmt::Debug,
    F: std::future::Future<Output = Result<T, BenchError>>,
{
    if !on {
        return Ok(None);
    }
    eprintln!("{what}");
    let t = figure().await?;
    eprintln!("  {t:?}");
    Ok(Some(t))
}

/// `--only`: the chosen figures, spliced into the existing table.
async fn run_only(args: &BenchArgs) -> Result<(), BenchError> {
    let started = std::time::Instant::now();
    let write_err = |err| BenchError::Write {
        path: args.out.display().to_string(),
        err,
    };
    let md = std::fs::read_to_string(&args.out).map_err(write_err)?;
    let want = |p: Part| args.only.contains(&p);
    let scale = args.scale;
    let overhead = measure(want(Part::Overhead), "figure 1: pipeline overhead", || {
        figures::overhead(scale)
    })
    .await?;
    let api = measure(
        want(Part::Api),
        "figure 2: API efficiency on a backlog at CC's limits",
        || figures::backlog(scale),
    )
    .await?;
    let big = measure(want(Part::Big), "figure 4 with ~4 KB messages", || {
        figures::big_messages(scale)
    })
    .await?;
    let outage = measure(
        want(Part::Outage),
        "figure 7: requests per hour of outage",
        || figures::outage(scale),
    )
    .await?;
    let ingest = measure(
        want(Part::Ingest),
        "figure 8: ingest against ccsync publish and a bare publisher",
        || figures::ingest(scale),
    )
    .await?;
    let replicas = measure(
        want(Part::Replicas),
        "figure 9: one and three replicas sharing one key",
        || figures::replicas(scale, None),
    )
    .await?;
    let partial = report::Partial {
        overhead: overhead.as_ref(),
        api: api.as_ref(),
        big: big.as_ref(),
        outage: outage.as_ref(),
        ingest: ingest.as_ref(),
        replicas: replicas.as_ref(),
    };
    let md = report::splice(&md, scale, &partial, started.elapsed());
    std::fs::write(&args.out, md).map_err(write_err)?;
    eprintln!(
        "updated {} in {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

//! `ccsync bench` (issue 7): every figure of `BENCHMARKS.md`, measured in one run against real
//! RabbitMQ, real Redis and an in-process simulator, with the workers as separate OS processes
//! (this same binary, `worker`), so memory and CPU are read per process from `/proc`.
//!
//! Phases, each in its own [`bed::Bed`] (random queue names, random Redis key prefix, its own
//! simulator; queues deleted afterwards):
//! 1. [`figures::overhead`]: a bare lapin consume-and-ack loop ([`crate::queue::Broker::consume_and_ack`])
//!    against one worker draining the same number of messages into an unthrottled simulator.
//! 2. [`figures::backlog`]: a backlog at CC's real limits: every request the simulator logged,
//!    against the floor (one import per 40,000 contacts or 4 MB, plus one poll each); the same
//!    worker's peak RSS (a full batch in flight) and CPU per message.
//! 3. [`figures::latency`]: publish → ack at 1 and 50 messages/s under real limits, with a scaled
//!    linger (stated in the table).
//! 4. [`figures::tokens`]: `TokenProvider::access_token()` from the cache (ns/op, in process) and
//!    the refresh fan-in of 3 worker processes against a short token lifetime.
//!
//! Targets are printed next to the measured values, never asserted (machines are noisy).
//! Design choices where the issue is silent are documented at each phase.

pub mod bed;
pub mod figures;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use crate::queue::QueueError;

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
    // Development aid: `CCSYNC_BENCH_ONLY=overhead|backlog|cap|latency|paced|tokens` runs one phase and
    // prints it without writing the table.
    if let Ok(only) = std::env::var("CCSYNC_BENCH_ONLY") {
        match only.as_str() {
            "overhead" => eprintln!("{:?}", figures::overhead(scale).await?),
            "backlog" => eprintln!("{:?}", figures::backlog(scale).await?),
            "cap" => eprintln!("{:?}", figures::backlog_at_contact_cap(scale).await?),
            "latency" => eprintln!("{:?}", figures::latency(scale).await?),
            "paced" => eprintln!("{:?}", figures::latency_paced(scale).await?),
            _ => eprintln!("{:?}", figures::tokens(scale).await?),
        }
        return Ok(());
    }
    eprintln!(
        "ccsync bench --scale {}: 1/4 pipeline overhead",
        scale.name()
    );
    let overhead = figures::overhead(scale).await?;
    eprintln!("  {overhead:?}");
    eprintln!("2/4 backlog at real limits (API efficiency, memory, CPU)");
    let backlog = figures::backlog(scale).await?;
    eprintln!("  {backlog:?}");
    eprintln!("   the same with email-only messages (memory at 40,000-contact imports)");
    let contact_cap = figures::backlog_at_contact_cap(scale).await?;
    eprintln!("  {contact_cap:?}");
    eprintln!("3/4 latency at trickle load");
    let latency = figures::latency(scale).await?;
    eprintln!("  {latency:?}");
    eprintln!("   the same at the default, budget-aware pacing");
    let latency_paced = figures::latency_paced(scale).await?;
    eprintln!("  {latency_paced:?}");
    eprintln!("4/4 token path");
    let tokens = figures::tokens(scale).await?;
    eprintln!("  {tokens:?}");
    let all = report::Results {
        scale,
        overhead,
        backlog,
        contact_cap,
        latency,
        latency_paced,
        tokens,
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

//! `ccsync-bench`: what `ccsync bench ARGS...` runs (the `ccsync` binary forwards its arguments
//! here). Starts the workers from the `ccsync` binary next to this one (or `CCSYNC_BIN`).

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "ccsync bench",
    bin_name = "ccsync bench",
    version,
    about = "Measure throughput, API efficiency, latency, memory, token path and CPU; write BENCHMARKS.md"
)]
struct Cli {
    #[command(flatten)]
    args: ccsync_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    ccsync::telemetry::init_tracing(ccsync::config::LogFormat::Text);
    match ccsync_bench::run(&cli.args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ccsync: {e}");
            ExitCode::FAILURE
        }
    }
}

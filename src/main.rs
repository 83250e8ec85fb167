//! Thin entry point: parse the command line, run it, print a failure on one line.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ccsync::cli::Cli::parse();
    match ccsync::cli::run(cli).await.map_err(|e| anyhow::anyhow!(e)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ccsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The command line (DESIGN §5.2): each command parses its arguments and calls into a room.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// Errors a command reports to `main`, which prints them on one line and exits non-zero.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(
    name = "ccsync",
    version,
    about = "Keep Constant Contact in sync with RabbitMQ contact events"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume `contact.upsert` messages and sync them to Constant Contact.
    Worker,
    /// One-time approval and token-set management.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Publish NDJSON messages or a CSV of contacts into the queue (with publisher confirms).
    Publish(PublishArgs),
    /// Run the local Constant Contact simulator.
    #[cfg(feature = "sim")]
    Sim(SimArgs),
    /// Run the whole pipeline against an in-process simulator.
    #[cfg(feature = "sim")]
    Demo(DemoArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Authorize through the OAuth device flow and store the token set in Redis.
    Login(AccountArg),
    /// Seed the token set from an existing refresh token read from standard input.
    Import(AccountArg),
    /// Show the token set's health; exits non-zero when re-authorization is needed.
    Status(AccountArg),
    /// Delete the stored token set.
    Logout(AccountArg),
}

#[derive(Debug, clap::Args)]
pub struct AccountArg {
    /// The account whose token set to use (messages name it in `account`).
    #[arg(long, default_value = "default")]
    pub account: String,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// NDJSON (`.ndjson`, `.jsonl`) or CSV (`.csv`) file; `-` reads NDJSON from standard input.
    pub file: String,
    /// Override the format detected from the file name.
    #[arg(long, value_parser = ["ndjson", "csv"])]
    pub format: Option<String>,
    /// Account for CSV rows.
    #[arg(long, default_value = "default")]
    pub account: String,
    /// Hide the progress bar (for scripts).
    #[arg(long)]
    pub quiet: bool,
}

#[cfg(feature = "sim")]
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    /// Access-token lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub token_ttl: u64,
    /// Refresh-token mode: rotating (single use) or long-lived.
    #[arg(long, default_value = "rotating", value_parser = ["rotating", "long-lived"])]
    pub refresh_mode: String,
    /// Rotation grace window in seconds (0: a rotated token dies at once).
    #[arg(long, default_value_t = 0)]
    pub grace_secs: u64,
    /// API requests per second per client (CC: 4).
    #[arg(long, default_value_t = 4)]
    pub per_second: u32,
    /// API requests per day per client (CC: 10000).
    #[arg(long, default_value_t = 10_000)]
    pub daily_quota: u64,
    /// Approve device codes without a human.
    #[arg(long)]
    pub auto_approve: bool,
    /// Milliseconds an import activity spends processing.
    #[arg(long, default_value_t = 1_000)]
    pub processing_ms: u64,
    /// Address to bind (use 0.0.0.0 inside a container).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Token-endpoint requests per second per client (CC: 1).
    #[arg(long, default_value_t = 1)]
    pub token_per_second: u32,
    /// Device-flow polling interval announced to clients, seconds.
    #[arg(long, default_value_t = 5)]
    pub device_interval_secs: u64,
    /// Require this client secret in HTTP Basic auth (default: accept any client).
    #[arg(long, env = "CCSYNC_SIM_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// Reusing a rotated refresh token after the grace window also kills the current one.
    #[arg(long)]
    pub reuse_revokes_family: bool,
    /// Seed for the fault random number generator.
    #[arg(long)]
    pub seed: Option<u64>,
}

#[cfg(feature = "sim")]
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many contact messages to publish.
    #[arg(long, default_value_t = 2_000)]
    pub contacts: usize,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration, print it with secrets redacted, list warnings.
    Check,
}

/// Run a parsed command. `settings` is loaded by `main` (the simulator does not need it).
pub async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    match cli.command {
        Command::Config(ConfigCommand::Check) => {
            let settings = Settings::load()?;
            println!("{}", settings.redacted());
            for w in settings.warnings() {
                println!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Command::Sim(args) => {
            crate::sim::run_cli(&args).await?;
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("command not available yet: {other:?}").into()),
    }
}

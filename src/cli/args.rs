//! The command line: commands and their arguments (clap).

use super::*;

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
    Sim(crate::sim::SimArgs),
    /// Run the whole pipeline against an in-process simulator.
    #[cfg(feature = "sim")]
    Demo(DemoArgs),
    /// Serve the signed webhook endpoint (POST /v1/contacts, POST /webhooks/shopify) that
    /// publishes into the queue; answers 2xx only once the broker confirmed.
    Ingest,
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Dead letters (`<queue>.dead`): look at them, or send them back through the worker.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Measure throughput, API efficiency, latency, memory, token path and CPU; write BENCHMARKS.md.
    #[cfg(feature = "sim")]
    #[command(disable_help_flag = true)]
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show dead letters (reason, detail, time, message id) without removing them.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Move dead letters back to the queue (after fixing the cause, e.g. creating a custom field).
    Replay {
        #[arg(long, default_value_t = usize::MAX)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Authorize (OAuth device flow by default; `--flow code|pkce` for apps with a redirect URI)
    /// and store the token set in Redis.
    Login(LoginArgs),
    /// Seed the token set from an existing refresh token read from standard input.
    Import(AccountArg),
    /// Show the token set's health (every account without `--account`); exits non-zero when any
    /// needs re-authorization.
    Status(StatusArgs),
    /// Delete the stored token set.
    Logout(AccountArg),
    /// Print a signed, single-use connect link that `ccsync ingest` serves: the customer opens it,
    /// approves at CC, and the account's token set is stored (needs CCSYNC_AUTH__INVITE_SECRET and
    /// CCSYNC_INGEST__PUBLIC_URL).
    Invite(InviteArgs),
}

#[derive(Debug, clap::Args)]
pub struct InviteArgs {
    /// The account to connect (messages name it in `account`).
    #[arg(long)]
    pub account: String,
    /// How long the link stays valid: a number and s, m, h or d (at most 30d).
    #[arg(long, default_value = "7d")]
    pub ttl: String,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One account; without it, every account with a token set (and every configured one).
    #[arg(long)]
    pub account: Option<String>,
    /// One JSON document (an array without `--account`) for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AccountArg {
    /// The account whose token set to use (messages name it in `account`).
    #[arg(long, default_value = "default")]
    pub account: String,
}

/// Which OAuth flow `auth login` runs (DESIGN §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoginFlowArg {
    /// Device flow: a code to enter on CC's page; no redirect URI (the app must enable Device Flow).
    Device,
    /// Authorization code with the client secret (CCSYNC_CLIENT_SECRET); what CC's long-lived
    /// refresh tokens need.
    Code,
    /// Authorization code with a PKCE S256 challenge, for apps without a client secret.
    Pkce,
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The account whose token set to use (messages name it in `account`).
    #[arg(long, default_value = "default")]
    pub account: String,
    /// The OAuth flow: device, code or pkce.
    #[arg(long, value_enum, default_value_t = LoginFlowArg::Device)]
    pub flow: LoginFlowArg,
    /// code/pkce: the redirect URI registered for the app. `http://127.0.0.1:PORT/...` or
    /// `http://localhost:PORT/...` is received on a local listener; any other needs `--paste`.
    #[arg(long, value_name = "URI")]
    pub redirect_uri: Option<String>,
    /// code/pkce: read the URL the browser was redirected to (or the bare code) from standard
    /// input instead of listening for it.
    #[arg(long)]
    pub paste: bool,
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

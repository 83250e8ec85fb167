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

/// Run a parsed command. `settings` is loaded by `main` (the simulator does not need it).
pub async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    match cli.command {
        Command::Config(ConfigCommand::Check) => {
            let settings = Settings::load()?;
            println!("{}", settings.redacted());
            if let Some(public) = &settings.ingest.public_url {
                println!(
                    "connect links: register this redirect URI on the CC app: {}",
                    crate::ingest::invite::redirect_uri(public)
                );
            }
            for w in settings.warnings() {
                println!("warning: {w}");
            }
            for w in crate::auth::cli::refresh_mode_warnings(&settings).await {
                println!("warning: {w}");
            }
            if let Some(w) = crate::app::check_default_lists(&settings).await? {
                println!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish(args) => {
            let settings = Settings::load()?;
            crate::telemetry::init_tracing(crate::config::LogFormat::Text);
            publish_cmd(&settings, args).await
        }
        Command::Auth(cmd) => run_auth(cmd).await,
        Command::Dlq(cmd) => dlq_cmd(cmd).await,
        Command::Worker => {
            let settings = Settings::load()?;
            crate::telemetry::init_tracing(settings.log_format);
            let shutdown = crate::app::shutdown_on_signals();
            crate::app::run_worker(settings, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest => {
            let settings = Settings::load()?;
            crate::telemetry::init_tracing(settings.log_format);
            let shutdown = crate::app::shutdown_on_signals();
            crate::ingest::run(settings, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Command::Demo(args) => {
            crate::telemetry::init_tracing_with(crate::config::LogFormat::Text, "warn");
            crate::demo::run(args.contacts).await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Command::Sim(args) => {
            crate::sim::run_cli(&args).await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Command::Bench(args) => crate::bench::run(&args).await,
    }
}

async fn publish_cmd(settings: &Settings, args: PublishArgs) -> Result<ExitCode, BoxError> {
    use crate::publish::{Format, Options};
    use crate::queue::{Broker, Topology};
    use std::io::BufRead;

    let format = match args.format.as_deref() {
        Some("csv") => Format::Csv,
        Some(_) => Format::Ndjson,
        None => Format::detect(&args.file),
    };
    let (input, total): (Box<dyn BufRead + Send>, Option<u64>) = if args.file == "-" {
        (Box::new(std::io::BufReader::new(std::io::stdin())), None)
    } else {
        let f = std::fs::File::open(&args.file).map_err(|e| format!("{}: {e}", args.file))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(std::io::BufReader::with_capacity(1 << 16, f)), len)
    };
    let broker = Broker::connect(&settings.amqp()).await?;
    broker
        .declare(&Topology::for_queue(&settings.queue))
        .await?;
    let publisher = broker.publisher().await?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        match total {
            Some(t) => indicatif::ProgressBar::new(t).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {msg} ({per_sec}, ETA {eta})",
                )
                .expect("valid template"),
            ),
            None => indicatif::ProgressBar::new_spinner(),
        }
    };
    let progress = |rows: u64, bytes: u64| {
        if rows.is_multiple_of(500) {
            bar.set_position(bytes);
            bar.set_message(format!("{rows} rows"));
        }
    };
    let opts = Options {
        queue: &settings.queue,
        account: &args.account,
        default_lists: &settings.default_list_ids,
        progress: &progress,
    };
    let started = std::time::Instant::now();
    let summary = crate::publish::publish(&publisher, input, format, &opts).await?;
    bar.finish_and_clear();
    broker.close().await;
    println!(
        "published {} messages to {} in {:.1}s (broker-confirmed); skipped {} invalid rows",
        summary.published,
        settings.queue,
        started.elapsed().as_secs_f64(),
        summary.skipped
    );
    for (line, code, detail) in &summary.first_skips {
        println!("  line {line}: {code}: {detail}");
    }
    Ok(if summary.skipped > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// `ccsync auth ...`.
async fn run_auth(cmd: AuthCommand) -> Result<ExitCode, BoxError> {
    use crate::auth::cli as auth_cli;
    let settings = Settings::load()?;
    // The token endpoint's 1 request/s is shared with the running workers (reference §3.6);
    // connected only by the commands that call it.
    let gate = || async {
        crate::ratelimit::SharedLimiter::connect(&settings, &settings.client_id)
            .await
            .map(|g| g as std::sync::Arc<dyn crate::ratelimit::Gate>)
    };
    let mut out = std::io::stdout();
    let code = match cmd {
        AuthCommand::Login(a) => {
            use crate::auth::LoginFlow;
            let opts = auth_cli::LoginOptions {
                flow: match a.flow {
                    LoginFlowArg::Device => LoginFlow::Device,
                    LoginFlowArg::Code => LoginFlow::Code,
                    LoginFlowArg::Pkce => LoginFlow::Pkce,
                },
                redirect_uri: a.redirect_uri,
                paste: a.paste,
            };
            let mut input = std::io::stdin().lock();
            auth_cli::login_with(
                &settings,
                gate().await?,
                &a.account,
                &opts,
                &mut input,
                &mut out,
            )
            .await?
        }
        AuthCommand::Import(a) => {
            let mut input = std::io::stdin().lock();
            auth_cli::import(&settings, gate().await?, &a.account, &mut input, &mut out).await?
        }
        AuthCommand::Status(a) => match (&a.account, a.json) {
            (Some(account), false) => auth_cli::status(&settings, account, &mut out).await?,
            (account, json) => {
                auth_cli::status_all(&settings, account.as_deref(), json, &mut out).await?
            }
        },
        AuthCommand::Logout(a) => auth_cli::logout(&settings, &a.account, &mut out).await?,
        AuthCommand::Invite(a) => {
            // A signed link needs neither Redis nor CC: only its use is recorded, by ingest.
            let now = crate::clock::now_unix();
            crate::ingest::invite::invite_cmd(&settings, &a.account, &a.ttl, now, &mut out)?;
            ExitCode::SUCCESS
        }
    };
    Ok(code)
}

async fn dlq_cmd(cmd: DlqCommand) -> Result<ExitCode, BoxError> {
    use crate::queue::{Broker, Topology};
    let settings = Settings::load()?;
    let topo = Topology::for_queue(&settings.queue);
    let broker = Broker::connect(&settings.amqp()).await?;
    broker.declare(&topo).await?;
    match cmd {
        DlqCommand::List { limit } => {
            let letters = broker.peek(&topo.dead, limit).await?;
            println!("{} dead letter(s) shown from {}", letters.len(), topo.dead);
            for f in letters {
                #[derive(serde::Deserialize)]
                struct IdOnly {
                    id: Option<String>,
                }
                let id = serde_json::from_slice::<IdOnly>(&f.body)
                    .ok()
                    .and_then(|m| m.id)
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{}  {:<22} id={}  {}",
                    f.failed_at.as_deref().unwrap_or("-"),
                    f.reason.as_deref().unwrap_or("-"),
                    id,
                    f.detail.as_deref().unwrap_or("")
                );
            }
        }
        DlqCommand::Replay { limit } => {
            let n = broker.replay(&topo, limit).await?;
            println!(
                "moved {n} dead letter(s) from {} back to {}",
                topo.dead, topo.queue
            );
        }
    }
    broker.close().await;
    Ok(ExitCode::SUCCESS)
}

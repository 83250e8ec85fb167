//! The command line (DESIGN §5.2): each command parses its arguments and calls into a room.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

mod args;

pub use args::*;

/// Errors a command reports to `main`, which prints them on one line and exits non-zero.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    let default_lists = settings.default_lists();
    let opts = Options {
        queue: &settings.queue,
        account: &args.account,
        default_lists: &default_lists,
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

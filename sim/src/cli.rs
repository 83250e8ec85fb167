//! `ccsync sim`: the simulator's command-line arguments (the product's `ccsync sim` command
//! parses them) and the standalone server they start.

use std::time::Duration;

use crate::{RefreshMode, Sim, SimConfig};

/// `ccsync sim` arguments.
#[derive(Debug, Clone, clap::Args)]
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
    /// Milliseconds added to an import's processing per 1,000 rows it carries (CC takes minutes
    /// for 40,000 rows; 0 = every import takes `--processing-ms`).
    #[arg(long, default_value_t = 0)]
    pub processing_per_1000_rows_ms: u64,
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
    /// A redirect URI registered for the app (repeat for several); `GET /authorize` refuses any
    /// other, as CC does.
    #[arg(long = "redirect-uri", value_name = "URI")]
    pub redirect_uris: Vec<String>,
    /// Reusing a rotated refresh token after the grace window also kills the current one.
    #[arg(long)]
    pub reuse_revokes_family: bool,
    /// Seed for the fault random number generator.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `ccsync sim`: map the flags onto a [`SimConfig`] and run until Ctrl-C or SIGTERM.
pub async fn run_cli(a: &SimArgs) -> std::io::Result<()> {
    let cfg = SimConfig {
        token_ttl: Duration::from_secs(a.token_ttl),
        refresh_mode: if a.refresh_mode == "long-lived" {
            RefreshMode::LongLived
        } else {
            RefreshMode::Rotating
        },
        grace: Duration::from_secs(a.grace_secs),
        reuse_revokes_family: a.reuse_revokes_family,
        per_second: a.per_second,
        daily_quota: a.daily_quota,
        token_per_second: a.token_per_second,
        auto_approve: a.auto_approve,
        redirect_uris: a.redirect_uris.clone(),
        device_interval_secs: a.device_interval_secs,
        processing: Duration::from_millis(a.processing_ms),
        processing_per_1000_rows: Duration::from_millis(a.processing_per_1000_rows_ms),
        client_secret: a.client_secret.clone(),
        seed: a.seed,
        ..SimConfig::default()
    };
    run_standalone(std::net::SocketAddr::new(a.host, a.port), cfg).await
}

/// Run standalone until Ctrl-C or SIGTERM.
pub async fn run_standalone(addr: std::net::SocketAddr, cfg: SimConfig) -> std::io::Result<()> {
    let sim = Sim::start_at(addr, cfg.clone()).await?;
    println!("Constant Contact simulator listening on {}", sim.base_url());
    println!("  CCSYNC_API_BASE_URL={}", sim.api_base_url());
    println!("  CCSYNC_AUTH_BASE_URL={}", sim.auth_base_url());
    println!(
        "  JWKS: {}   admin API: {}/_sim/",
        sim.jwks_url(),
        sim.base_url()
    );
    println!("  any client_id is accepted (e.g. CCSYNC_CLIENT_ID=sim-client)");
    if cfg.redirect_uris.is_empty() {
        println!(
            "  no redirect URI registered: `auth login --flow code|pkce` needs --redirect-uri URI here"
        );
    } else {
        println!(
            "  registered redirect URIs: {}",
            cfg.redirect_uris.join(" ")
        );
    }
    println!(
        "  refresh tokens: {:?}, grace {} s, access-token ttl {} s, {} req/s, {} req/day, auto-approve: {}",
        cfg.refresh_mode,
        cfg.grace.as_secs(),
        cfg.token_ttl.as_secs(),
        cfg.per_second,
        cfg.daily_quota,
        cfg.auto_approve
    );
    shutdown_signal().await;
    println!("simulator shutting down");
    sim.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

//! Assembles a worker from the rooms: metrics server, shared limiter, token provider, ordering
//! ledger, CC client, pipeline, the opt-out feed; and the signal handling that turns SIGTERM/SIGINT into an orderly
//! shutdown (Kubernetes sends SIGTERM, DESIGN §7).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{AccessToken, AuthError, TokenProvider};
use crate::batch::Pace;
use crate::cc::api::Api;
use crate::config::Settings;
use crate::ledger::Ledger;
use crate::pipeline::{self, Ctx, Pacing, Stores, TokenError, TokenSource};
use crate::ratelimit::{Gate, SharedLimiter, pacing_linger, request_spacing, run_ahead};

/// Why the worker could not start or stopped with an error. Fix and restart.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    #[error("metrics server: cannot bind {addr}: {err}")]
    Metrics { addr: String, err: std::io::Error },
    #[error("{0}")]
    Start(String),
    #[error(transparent)]
    Worker(#[from] pipeline::WorkerError),
}

#[async_trait::async_trait]
impl TokenSource for TokenProvider {
    async fn access_token(&self, account: &str) -> Result<AccessToken, TokenError> {
        TokenProvider::access_token(self, account)
            .await
            .map_err(token_error)
    }

    async fn token_rejected(
        &self,
        account: &str,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        TokenProvider::token_rejected(self, account, rejected)
            .await
            .map_err(token_error)
    }

    async fn wait_until_alive(&self, account: &str) {
        TokenProvider::wait_until_alive(self, account).await
    }
}

fn token_error(e: AuthError) -> TokenError {
    match e {
        AuthError::Dead {
            reason,
            never_authorized: true,
            ..
        } => TokenError::Unknown(reason),
        AuthError::Dead { reason, .. } => TokenError::Dead(reason),
        AuthError::Unavailable(r) => TokenError::Unavailable(r),
    }
}

/// A batch costs one import plus, typically, a few polls.
const CALLS_PER_BATCH: f64 = 4.0;

struct LimiterPacing {
    limiter: Arc<SharedLimiter>,
    min: Duration,
    max: Duration,
}

#[async_trait::async_trait]
impl Pacing for LimiterPacing {
    async fn linger(&self) -> Duration {
        // Piggy-back readiness on the pacing check (every few seconds): Redis answers unless the
        // limiter runs on its fallback share.
        crate::telemetry::health().redis_ok.store(
            !self.limiter.is_degraded(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let budget = self.limiter.budget().await;
        pacing_linger(&budget, CALLS_PER_BATCH, self.min, self.max)
    }

    async fn pace(&self) -> Pace {
        crate::telemetry::health().redis_ok.store(
            !self.limiter.is_degraded(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let budget = self.limiter.budget().await;
        Pace {
            min: self.min,
            max: self.max,
            ahead: run_ahead(&budget),
            spacing: request_spacing(&budget),
            calls_per_batch: CALLS_PER_BATCH,
        }
    }
}

/// A cancellation token fired by SIGTERM or SIGINT.
pub(crate) fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let term = async {
            #[cfg(unix)]
            {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
            #[cfg(not(unix))]
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = term => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}

/// The accounts whose default lists are checked at start: `default` and every configured one.
fn configured_accounts(settings: &Settings) -> Vec<String> {
    let mut v = vec!["default".to_string()];
    v.extend(
        settings
            .accounts
            .keys()
            .filter(|a| *a != "default")
            .cloned(),
    );
    v
}

fn missing_lists_line(account: &str, gone: &[uuid::Uuid]) -> String {
    let ids: Vec<String> = gone.iter().map(uuid::Uuid::to_string).collect();
    let setting = if account == "default" {
        "CCSYNC_DEFAULT_LIST_IDS".to_string()
    } else {
        format!("CCSYNC_DEFAULT_LIST_IDS or [accounts.{account}] default_list_ids")
    };
    format!(
        "default list {} ({setting}) does not exist in CC account '{account}'; create it in CC or fix the setting",
        ids.join(", ")
    )
}

/// Everything a sender needs, connected: shared limiter, token provider, ledger, crash marks,
/// the CC client.
async fn build_ctx(settings: &Settings) -> Result<(Arc<Ctx>, Arc<TokenProvider>), AppError> {
    // Redis first, once: a wrong URL, password or CA stops the start with one line naming the
    // connection (rather than a limiter on its fallback share and a token provider error).
    let redis = crate::redis::Redis::from_settings(settings)
        .map_err(|e| AppError::Start(format!("cannot start: {e}")))?;
    redis
        .check()
        .await
        .map_err(|e| AppError::Start(format!("cannot start: {e}")))?;
    let limiter = SharedLimiter::connect(settings, &settings.client_id)
        .await
        .map_err(|e| AppError::Start(e.to_string()))?;
    let gate: Arc<dyn Gate> = limiter.clone();
    let tokens = TokenProvider::connect(settings, gate.clone())
        .await
        .map_err(|e| AppError::Start(e.to_string()))?;
    let ledger = Ledger::connect(settings).map_err(|e| AppError::Start(e.to_string()))?;
    let (min, max) = settings.linger_bounds();
    let pacing = Arc::new(LimiterPacing {
        limiter: limiter.clone(),
        min,
        max,
    });
    let api = Api::new(
        crate::cc::http_client(settings.worker.request_timeout),
        &settings.api_base_url,
    );
    let marks =
        crate::poison::Marks::connect(settings).map_err(|e| AppError::Start(e.to_string()))?;
    let source: Arc<dyn TokenSource> = tokens.clone();
    let parking = crate::parking::Parking::connect(settings, source)
        .map_err(|e| AppError::Start(e.to_string()))?;
    let stores = Stores {
        ledger: Arc::new(ledger),
        marks: Arc::new(marks),
        parking,
    };
    let mut ctx = Ctx::new(
        api,
        tokens.clone(),
        gate,
        Some(pacing),
        stores,
        settings.worker.clone(),
    );
    ctx.default_lists = settings.default_lists();
    ctx.configured_accounts
        .extend(settings.accounts.keys().cloned());
    for a in &ctx.configured_accounts {
        crate::telemetry::metrics().know_account(a);
    }
    ctx.weights = settings.account_weights();
    ctx.turns = crate::ratelimit::FairTurns::new(ctx.weights.clone());
    Ok((Arc::new(ctx), tokens))
}

/// `ccsync config check`'s look at CC: each configured account's default lists exist in it. `Ok`
/// carries a warning when CC or the token set cannot be reached (the check is then skipped).
pub(crate) async fn check_default_lists(settings: &Settings) -> Result<Option<String>, AppError> {
    let accounts = configured_accounts(settings);
    let lists = settings.default_lists();
    if accounts.iter().all(|a| lists.for_account(a).is_empty()) {
        return Ok(None);
    }
    let (ctx, _tokens) = match build_ctx(settings).await {
        Ok(v) => v,
        Err(e) => {
            return Ok(Some(format!(
                "cannot check the default lists against CC: {e}"
            )));
        }
    };
    let mut warnings = Vec::new();
    for account in accounts {
        match pipeline::lists::missing_default_lists(&ctx, &account).await {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => return Err(AppError::Start(missing_lists_line(&account, &gone))),
            Err(e) => warnings.push(format!(
                "cannot check the default lists of account '{account}' against CC: {e}"
            )),
        }
    }
    Ok((!warnings.is_empty()).then(|| warnings.join("; ")))
}

/// Run a worker until `shutdown` fires.
pub(crate) async fn run_worker(
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    crate::clock::set_offset_secs(settings.testing.clock_offset_secs);
    let m = crate::telemetry::metrics();
    let (addr, server) = crate::telemetry::serve(settings.metrics_addr, shutdown.clone())
        .await
        .map_err(|err| AppError::Metrics {
            addr: settings.metrics_addr.to_string(),
            err,
        })?;
    tracing::info!(%addr, queue = %settings.queue, "worker starting; metrics on /metrics");
    for w in settings.warnings() {
        tracing::warn!("{w}");
    }
    let _ = m;
    let (ctx, tokens) = build_ctx(&settings).await?;
    crate::telemetry::health()
        .redis_ok
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Every account with a token set in Redis, from the first scrape: its auth state, and the
    // keep-alive that stops the 180-day expiry (not only the accounts this process happens to use).
    tokens.discover().await;
    let background = tokens.spawn_background(shutdown.clone());
    tokio::spawn(ctx.parking.clone().rescan_forever(shutdown.clone()));
    // A default list CC lacks would fail every import that uses it: refuse to start on it.
    for account in configured_accounts(&settings) {
        match pipeline::lists::missing_default_lists(&ctx, &account).await {
            Ok(gone) if !gone.is_empty() => {
                shutdown.cancel();
                let _ = background.await;
                let _ = server.await;
                return Err(AppError::Start(missing_lists_line(&account, &gone)));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                account,
                error = %e,
                "cannot check the default lists against CC now; the worker checks them before each batch"
            ),
        }
    }
    // CC's own opt-outs out to upstream systems (issue 15): one replica at a time polls; every
    // worker runs the feed so another takes over when the holder stops.
    let feed = if settings.optouts.enabled {
        let live = tokens.clone();
        let accounts: pipeline::optouts::Accounts = Arc::new(move || live.live_accounts());
        let feed = pipeline::optouts::Feed::new(&settings, ctx.clone(), accounts)
            .map_err(AppError::Start)?;
        Some(tokio::spawn(feed.run(shutdown.clone())))
    } else {
        None
    };
    let res = pipeline::run(settings, ctx, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(feed) = feed {
        let _ = feed.await;
    }
    let _ = background.await;
    let _ = server.await;
    tracing::info!("worker stopped");
    res.map_err(AppError::from)
}

//! Logs, metrics and the health server: the only room that knows the `prometheus` crate.
//!
//! Metric names follow DESIGN §5.4: `ccsync_<what>_<unit>`, counters end in `_total`, labels are
//! small fixed sets (never an email, a token or an id). Every room records through [`metrics()`],
//! one process-wide registry, so `/metrics` stays scrapeable whatever the worker is doing, paused
//! included. The components tests drive on their own (the token provider, the shared limiter, the
//! settler) take another registry instead ([`Metrics::isolated`]): the tests of one binary share
//! the process, and each must read only what its own components recorded.
//!
//! `/healthz` answers 200 while the process runs (liveness: restart only a wedged process).
//! `/readyz` answers 200 while the worker holds a broker connection (or is paused on purpose) and
//! Redis answers; a replica paused for auth, quota, an outage or a 403 stays ready although its
//! consumer is closed (it is healthy and waiting, restarting it would not help, and a not-ready
//! replica blocks rollouts and node drains under the PodDisruptionBudget), which is why pauses are
//! exported as `ccsync_paused{reason}` instead.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

mod families;
mod logs;
mod metrics;
mod read;

pub use read::series_value;

pub use families::{API_SERIES, CONNECT_OUTCOMES, INGEST_REFUSALS, INGEST_ROUTES};
pub use logs::{init_tracing, init_tracing_with};
pub use metrics::Metrics;

/// The process-wide metrics: what `/metrics` serves, and the default registry of every component.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Readiness inputs, set by the rooms that own the connections.
#[derive(Default)]
pub(crate) struct Health {
    pub broker_connected: AtomicBool,
    pub redis_ok: AtomicBool,
    /// Paused on purpose (auth, quota, outage, forbidden): the consumer is closed, yet the
    /// replica is ready — draining or restarting it would not help, and while it is not ready
    /// a PodDisruptionBudget blocks node drains and rollouts.
    pub paused: AtomicBool,
}

impl Health {
    pub(crate) fn ready(&self) -> bool {
        let consuming_or_paused =
            self.broker_connected.load(Ordering::Relaxed) || self.paused.load(Ordering::Relaxed);
        consuming_or_paused && self.redis_ok.load(Ordering::Relaxed)
    }
}

/// The process-wide health flags.
pub(crate) fn health() -> &'static Health {
    static H: OnceLock<Health> = OnceLock::new();
    H.get_or_init(Health::default)
}

/// Serve `/metrics`, `/healthz` and `/readyz` until `shutdown` fires. Returns the bound address
/// (useful with port 0).
pub(crate) async fn serve(
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::Router;
    use axum::http::{StatusCode, header};
    use axum::routing::get;

    let app = Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics().render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|| async {
                if health().ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: broker or redis\n",
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok((bound, handle))
}

#[cfg(test)]
mod tests;

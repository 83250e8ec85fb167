//! `ccsync ingest`: signed webhooks straight into the worker's queue (issue 16, DESIGN §5.2).
//!
//! Routes, all on `ingest.addr` (`CCSYNC_INGEST__ADDR`):
//! * `POST /v1/contacts`: one message (`application/json`) or many (`application/x-ndjson`), in
//!   the queue's own schema, signed with `X-Ccsync-Signature` ([`sign`]). Every line is checked
//!   with the worker's decoder; one bad line refuses the request (400, a reason per line) and
//!   nothing is published. Otherwise every body is published as sent (persistent, `mandatory`,
//!   to the worker's queue) and the answer, 202 with the ids, waits for the broker's confirm of
//!   every one: a 2xx means durable.
//! * `POST /webhooks/<adapter>`: a source's own webhook ([`adapters`]; Shopify today), verified
//!   with the source's signature and mapped to one `contact.upsert`.
//! * `GET /connect/<token>` and `GET /oauth/callback`: connect links (issue 14, [`connect`]),
//!   mounted when `auth.invite_secret` and `ingest.public_url` are set; they store token sets in
//!   Redis as `ccsync auth login --flow code` does, so ingest then also needs the Redis URL, the
//!   token-encryption key and the client id and secret.
//! * `/healthz` (the process runs), `/readyz` (the broker connection is up: [`link`]),
//!   `/metrics` (the process-wide registry, `ccsync_ingest_*` included).
//!
//! Refusals, in the order they are checked: 429 over `ingest.rate_per_second` (per route and
//! replica), 413 over `ingest.max_body_bytes` or `ingest.max_lines`, 401 for a missing, wrong or
//! stale signature, 415 for a content type other than JSON/NDJSON, 400 for invalid messages,
//! 503 with `Retry-After` when the broker is down, blocked, or has not confirmed within
//! `ingest.publish_timeout_ms`. A 503 promises nothing either way: the sender retries the same
//! request, and the same message ids make a duplicate harmless.

pub(crate) mod adapters;
pub(crate) mod connect;
pub(crate) mod contacts;
pub(crate) mod invite;
pub(crate) mod link;
pub mod sign;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{IngestSettings, Settings};
use crate::queue::Topology;
use adapters::{Adapter, Mapped, Webhook};
use contacts::{Framing, Refused};
use link::Link;

mod handlers;

use handlers::{Bucket, contacts_handler, webhook_handler};

/// Why `ccsync ingest` could not start. Fix the named thing and restart.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "ingest: no endpoint is configured: set CCSYNC_INGEST__SECRETS (POST /v1/contacts), CCSYNC_INGEST__SHOPIFY_SECRET (POST /webhooks/shopify), or CCSYNC_AUTH__INVITE_SECRET with CCSYNC_INGEST__PUBLIC_URL (connect links)"
    )]
    NothingToServe,
    #[error("ingest: {0}")]
    Connect(String),
    #[error("ingest: cannot listen on {addr} (CCSYNC_INGEST__ADDR): {err}")]
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
}

/// What the handlers share.
struct Server {
    settings: IngestSettings,
    /// The worker's default lists, per account: a message naming none is checked against them,
    /// as the worker would check it.
    default_lists: crate::contact::DefaultLists,
    link: Arc<Link>,
    adapters: Vec<Box<dyn Adapter>>,
    /// One token bucket per route (`ingest.rate_per_second`); empty when unlimited.
    buckets: BTreeMap<&'static str, Mutex<Bucket>>,
}

/// A running ingest server.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Wait until `shutdown` fired and in-flight requests finished.
    pub async fn wait(self) {
        let _ = self.server.await;
        let _ = self.keeper.await;
    }
}

/// Bind and serve until `shutdown` fires. Returns once listening; the broker link connects in
/// the background (`/readyz` turns 200 when it is up).
pub async fn start(
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<Running, IngestError> {
    let s = &settings.ingest;
    let adapters = adapters::from_settings(s);
    let connect = if settings.connect_links() {
        // The token endpoint's 1 request/s is shared with the workers (reference §3.6).
        let gate = crate::ratelimit::SharedLimiter::connect(settings, &settings.client_id)
            .await
            .map_err(|e| IngestError::Connect(e.to_string()))?;
        connect::Connect::from_settings(settings, gate)
            .map_err(|e| IngestError::Connect(e.to_string()))?
    } else {
        None
    };
    if s.secrets.is_empty() && adapters.is_empty() && connect.is_none() {
        return Err(IngestError::NothingToServe);
    }
    // A certificate the configured CA did not sign is a configuration error, not an outage:
    // stop at start with the one line that names the setting, as the worker does, instead of
    // retrying (not ready) forever. Anything else (broker down) is retried in the background.
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::queue::Broker::connect(&settings.amqp()),
    )
    .await
    {
        Ok(Ok(b)) => b.close().await,
        Ok(Err(e @ crate::queue::QueueError::Tls(_))) => {
            return Err(IngestError::Connect(e.to_string()));
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "broker not reachable yet; ingest answers 503 until it is")
        }
        Err(_) => tracing::warn!("connecting to the broker timed out; retrying in the background"),
    }
    let topology = Topology::for_queue(&settings.queue);
    let (link, keeper) = Link::spawn(
        settings.amqp(),
        topology,
        s.publish_channels,
        shutdown.clone(),
    );
    let mut buckets = BTreeMap::new();
    if s.rate_per_second > 0 {
        for route in crate::telemetry::INGEST_ROUTES {
            buckets.insert(
                *route,
                Mutex::new(Bucket::new(s.rate_per_second, Instant::now())),
            );
        }
    }
    let mut routes: Vec<&str> = Vec::new();
    let mut app = Router::new();
    if !s.secrets.is_empty() {
        app = app.route("/v1/contacts", post(contacts_handler));
        routes.push("POST /v1/contacts");
    }
    for a in &adapters {
        routes.push(a.name());
    }
    if !adapters.is_empty() {
        app = app.route("/webhooks/{source}", post(webhook_handler));
    }
    if let Some(c) = connect {
        app = app.merge(Arc::new(c).router());
        routes.push("GET /connect/{token}");
        routes.push("GET /oauth/callback");
    }
    let server = Arc::new(Server {
        settings: s.clone(),
        default_lists: settings.default_lists(),
        link,
        adapters,
        buckets,
    });
    let app = app
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    crate::telemetry::metrics().render(),
                )
            }),
        )
        .layer(DefaultBodyLimit::max(s.max_body_bytes))
        .with_state(server);
    let listener = tokio::net::TcpListener::bind(s.addr)
        .await
        .map_err(|err| IngestError::Bind { addr: s.addr, err })?;
    let addr = listener
        .local_addr()
        .map_err(|err| IngestError::Bind { addr: s.addr, err })?;
    tracing::info!(%addr, queue = %settings.queue, routes = ?routes, "ingest listening");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(Running {
        addr,
        server,
        keeper,
    })
}

/// `ccsync ingest`: serve until `shutdown` fires.
pub(crate) async fn run(
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    for w in settings.warnings() {
        tracing::warn!("{w}");
    }
    if settings.ingest.shopify_secret.is_some()
        && settings.ingest.shopify_list_ids.is_empty()
        && settings.default_list_ids.is_empty()
    {
        tracing::warn!(
            "neither CCSYNC_INGEST__SHOPIFY_LIST_IDS nor CCSYNC_DEFAULT_LIST_IDS is set: Shopify customers cannot be published (counted as ccsync_ingest_refused_total{{reason=\"unmappable\"}})"
        );
    }
    let running = start(&settings, shutdown).await?;
    running.wait().await;
    tracing::info!("ingest stopped");
    Ok(())
}

async fn readyz(State(s): State<Arc<Server>>) -> Response {
    if s.link.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no broker connection (check CCSYNC_AMQP_URL and the broker)\n",
        )
            .into_response()
    }
}

/// Count a request and build its JSON answer.
fn reply(route: &'static str, status: StatusCode, body: Value) -> Response {
    crate::telemetry::metrics().ingest_answered(route, status.as_u16());
    (status, axum::Json(body)).into_response()
}

fn refused(route: &'static str, reason: &str, n: u64) {
    crate::telemetry::metrics().ingest_refused(route, reason, n);
}

fn with_retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

impl Server {
    /// The checks every route makes before reading the request: rate, then body size.
    fn admit(
        &self,
        route: &'static str,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Bytes, Box<Response>> {
        if let Some(b) = self.buckets.get(route)
            && !b.lock().expect("bucket lock").take(Instant::now())
        {
            refused(route, "rate_limited", 1);
            let r = reply(
                route,
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": "rate_limited", "detail": format!(
                    "more than {} requests per second on this route; retry after Retry-After seconds (ingest.rate_per_second)",
                    self.settings.rate_per_second
                )}),
            );
            return Err(Box::new(with_retry_after(r, 1)));
        }
        match body {
            Ok(b) => Ok(b),
            Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
                refused(route, "too_large", 1);
                Err(Box::new(reply(
                    route,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({"error": "too_large", "detail": format!(
                        "the body is over {} bytes (ingest.max_body_bytes): split it into smaller requests",
                        self.settings.max_body_bytes
                    )}),
                )))
            }
            Err(e) => Err(Box::new(reply(
                route,
                StatusCode::BAD_REQUEST,
                json!({"error": "unreadable_body", "detail": e.body_text()}),
            ))),
        }
    }

    fn unauthorized(&self, route: &'static str, e: sign::SignatureError, header: &str) -> Response {
        let m = crate::telemetry::metrics();
        m.ingest_signature_failed(route, e.label());
        refused(route, "unauthorized", 1);
        tracing::info!(route, reason = e.label(), "signature refused");
        reply(
            route,
            StatusCode::UNAUTHORIZED,
            json!({"error": "unauthorized", "detail": e.explain(header)}),
        )
    }

    /// Publish and confirm, or the 503.
    async fn publish(
        &self,
        route: &'static str,
        bodies: Vec<Vec<u8>>,
    ) -> Result<(), Box<Response>> {
        let n = bodies.len() as u64;
        let m = crate::telemetry::metrics();
        let started = Instant::now();
        match self
            .link
            .publish(bodies, self.settings.publish_timeout)
            .await
        {
            Ok(()) => {
                m.ingest_confirmed(route, n, started.elapsed());
                Ok(())
            }
            Err(e) => {
                tracing::warn!(route, messages = n, error = %e, "publish not confirmed; answering 503");
                refused(route, "broker_unavailable", n);
                let r = reply(
                    route,
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "broker_unavailable", "detail": format!(
                        "{e}; nothing is confirmed: send the same request again after Retry-After seconds (the same message ids make a retry harmless)"
                    )}),
                );
                Err(Box::new(with_retry_after(
                    r,
                    self.settings.retry_after.as_secs(),
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests;

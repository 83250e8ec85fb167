//! Webhook adapters: the seam where another source (WooCommerce, Stripe customers) is one file.
//!
//! An adapter is mounted at `POST /webhooks/<name>`. It verifies the source's own signature on
//! the raw body and maps one webhook to at most one queue message; everything else (rate limit,
//! body limit, validation with the worker's decoder, the confirmed publish, the answer and the
//! metrics) is the server's. Add a source by writing `adapters/<name>.rs` with its tests,
//! constructing it in [`from_settings`], and adding `<name>` to
//! [`crate::telemetry::INGEST_ROUTES`] (its `route` label).

pub(crate) mod shopify;

use axum::http::HeaderMap;
use time::OffsetDateTime;

use super::sign::SignatureError;
use crate::config::IngestSettings;

/// One webhook request as it arrived.
pub(crate) struct Webhook<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// When it arrived (UTC): a fallback for sources whose payload carries no event time.
    pub now: OffsetDateTime,
}

impl Webhook<'_> {
    /// A header as text (`None` when absent or not visible ASCII).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a verified webhook becomes.
#[derive(Debug, PartialEq)]
pub(crate) enum Mapped {
    /// One queue message (a JSON body the worker's decoder reads), with its id.
    Publish { id: String, body: Vec<u8> },
    /// Acknowledged (2xx, so the source does not retry it) and counted, not published.
    /// `reason` is a label of `ccsync_ingest_refused_total`.
    Skip {
        reason: &'static str,
        detail: String,
    },
}

/// A webhook source.
pub(crate) trait Adapter: Send + Sync {
    /// Path segment and `route` label.
    fn name(&self) -> &'static str;
    /// The header carrying the signature (named in a 401).
    fn signature_header(&self) -> &'static str;
    /// Check the source's signature over the raw body.
    fn verify(&self, w: &Webhook<'_>) -> Result<(), SignatureError>;
    /// Map a verified webhook; `Err` is a 400 with that sentence (a request the source must fix).
    fn map(&self, w: &Webhook<'_>) -> Result<Mapped, String>;
}

/// The adapters the configuration enables (a source without a secret is not mounted).
pub(crate) fn from_settings(s: &IngestSettings) -> Vec<Box<dyn Adapter>> {
    let mut out: Vec<Box<dyn Adapter>> = Vec::new();
    if let Some(secret) = &s.shopify_secret {
        out.push(Box::new(shopify::Shopify::new(secret.clone(), s)));
    }
    out
}

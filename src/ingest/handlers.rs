//! The two POST routes (`/v1/contacts`, `/webhooks/shopify`) and the per-route rate bucket.

use super::*;

pub(super) async fn contacts_handler(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const ROUTE: &str = "contacts";
    const HEADER: &str = "X-Ccsync-Signature";
    let body = match s.admit(ROUTE, body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let signature = headers
        .get("x-ccsync-signature")
        .and_then(|v| v.to_str().ok());
    let now = crate::clock::now_unix();
    if let Err(e) = sign::verify_ccsync(
        signature,
        &body,
        &s.settings.secrets,
        now,
        s.settings.signature_tolerance,
    ) {
        return s.unauthorized(ROUTE, e, HEADER);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(framing) = Framing::from_content_type(ct) else {
        return reply(
            ROUTE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": "unsupported_media_type", "detail":
                "send application/json (one message) or application/x-ndjson (one message per line)"}),
        );
    };
    let batch = match contacts::parse(&body, framing, &s.default_lists, s.settings.max_lines) {
        Ok(b) => b,
        Err(Refused::Invalid(lines)) => {
            refused(ROUTE, "invalid_message", lines.len() as u64);
            return reply(
                ROUTE,
                StatusCode::BAD_REQUEST,
                json!({
                    "error": "invalid_messages",
                    "detail": format!(
                        "{} message(s) are invalid, so nothing was published: fix the lines below and send the whole request again",
                        lines.len()
                    ),
                    "lines": lines,
                }),
            );
        }
        Err(Refused::TooManyLines { lines, max }) => {
            refused(ROUTE, "too_large", 1);
            return reply(
                ROUTE,
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "too_many_lines", "detail": format!(
                    "{lines} messages in one request; at most {max} (ingest.max_lines): split it"
                )}),
            );
        }
        Err(Refused::Empty) => {
            return reply(
                ROUTE,
                StatusCode::BAD_REQUEST,
                json!({"error": "empty", "detail": "the body holds no message"}),
            );
        }
    };
    let accepted = batch.ids.len();
    if let Err(r) = s.publish(ROUTE, batch.bodies).await {
        return *r;
    }
    reply(
        ROUTE,
        StatusCode::ACCEPTED,
        json!({"accepted": accepted, "ids": batch.ids}),
    )
}

pub(super) async fn webhook_handler(
    State(s): State<Arc<Server>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(adapter) = s.adapters.iter().find(|a| a.name() == source) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "unknown_source", "detail": format!(
                "no webhook adapter named {source:?} is configured"
            )})),
        )
            .into_response();
    };
    let route = adapter.name();
    let body = match s.admit(route, body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let w = Webhook {
        headers: &headers,
        body: &body,
        now: crate::clock::now_utc(),
    };
    if let Err(e) = adapter.verify(&w) {
        return s.unauthorized(route, e, adapter.signature_header());
    }
    let (id, message) = match adapter.map(&w) {
        Err(detail) => {
            return reply(
                route,
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_webhook", "detail": detail}),
            );
        }
        Ok(Mapped::Skip { reason, detail }) => {
            refused(route, reason, 1);
            tracing::info!(route, reason, "webhook acknowledged and skipped: {detail}");
            return reply(
                route,
                StatusCode::OK,
                json!({"skipped": reason, "detail": detail}),
            );
        }
        Ok(Mapped::Publish { id, body }) => (id, body),
    };
    if let Err(r) = s.default_lists.decode(&message) {
        // A retry would map the same way: acknowledge, count, and say why in the log (never
        // the email).
        refused(route, "unmappable", 1);
        tracing::warn!(route, webhook_id = %id, code = r.code.as_str(), "mapped webhook refused by the decoder; acknowledged and skipped");
        return reply(
            route,
            StatusCode::OK,
            json!({"skipped": "unmappable", "detail": format!("{}: {}", r.code, r.detail)}),
        );
    }
    if let Err(r) = s.publish(route, vec![message]).await {
        return *r;
    }
    reply(route, StatusCode::OK, json!({"accepted": 1, "ids": [id]}))
}

/// A token bucket: `rate` requests per second, bursts up to one second's worth.
pub(super) struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn new(rate: u32, now: Instant) -> Bucket {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: now,
        }
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

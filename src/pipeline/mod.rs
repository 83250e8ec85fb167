//! Joins the rooms: deliveries → contacts → batches → authenticated, rate-limited CC calls →
//! outcomes → settlement. The only room that knows all the others; it owns no external crate.
//!
//! # Acknowledge only when CC has the data
//! A delivery is acked after the import activity that carries it reaches `completed` with every
//! row accounted for, or after a 2xx `sign_up_form` (DESIGN §2). Until then it stays unacked and
//! the broker redelivers it if the worker dies; CC writes are create-or-update by email, so
//! redelivery is safe. See [`sender`] for what happens on each CC outcome.
//!
//! # Holding deliveries
//! RabbitMQ closes a channel that holds a delivery unacked longer than its consumer timeout
//! (30 minutes by default). The worker keeps its own bound, `worker.max_hold_secs` (25 minutes),
//! measured from the moment the batch's oldest delivery arrived: a batch whose activity is still
//! not terminal by then is requeued (re-importing it later is safe), and a message redelivered more
//! than `worker.max_redeliveries` times is dead-lettered as `redelivered_too_often` — so an
//! activity that never finishes cannot become an endless redelivery loop.
//!
//! # Pauses
//! A spent daily quota, CC failing call after call, a 403 or a missing default list stops
//! consumption as a whole (one queue serves all accounts, DESIGN §3): held deliveries are
//! requeued (never acked, never dead-lettered), the consumer is cancelled,
//! `ccsync_paused{reason}` is set, and the worker resumes by itself when the reason is gone (the
//! quota resets at 00:00 UTC, CC answers a probe, the list exists). A dead connection
//! (`invalid_grant`, revoked app) does not pause the worker: that account's messages wait in its
//! parking queue ([`crate::parking`]) while the other accounts keep flowing.
//!
//! # Shutdown (SIGTERM)
//! Cancel the consumer, requeue what waits in the batcher, give in-flight imports until
//! `worker.shutdown_deadline_secs` to finish (their deliveries are settled normally), then close
//! the channel (anything still unsettled returns to the queue) and the connection, and return.

mod call;
mod claims;
pub(crate) mod consent;
mod ctx;
mod fields;
mod import;
pub(crate) mod lists;
pub(crate) mod optouts;
mod pause;
mod prefetch;
mod ready;
pub(crate) mod sender;
mod session;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, Coalesce, Cost};
use crate::config::Settings;
use crate::contact::{Action, Consent, Contact};
use crate::queue::{Broker, QueueError, Tag, Topology};
use crate::telemetry::{health, metrics};

pub(crate) use ctx::{Ctx, Pacing, Pause, Stores, TokenError, TokenSource};

/// One delivery as the pipeline holds it: the settle handle and the original body (kept for the
/// dead letter, which carries the body exactly as it was published).
#[derive(Debug)]
pub(crate) struct Held {
    pub tag: Tag,
    pub body: Vec<u8>,
    /// When the delivery arrived: the hold bound counts from the batch's oldest delivery.
    pub received: Instant,
    /// This delivery's share of the session's held bytes and deliveries: never read, its drop
    /// (when the delivery is settled) gives them back.
    pub _held: HeldBytes,
}

/// What one session holds unacked: bytes (against `worker.max_held_bytes`) and deliveries
/// (against the prefetch window: when they fill it, the broker sends nothing more until some
/// are settled).
#[derive(Debug, Default)]
pub(crate) struct HeldTally {
    bytes: std::sync::atomic::AtomicUsize,
    deliveries: std::sync::atomic::AtomicUsize,
}

impl HeldTally {
    fn bytes(&self) -> usize {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn deliveries(&self) -> usize {
        self.deliveries.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Bytes of one held delivery (body, decoded contact, bookkeeping), counted in the session's
/// tally while the delivery is held and taken off when it is dropped (settled).
#[derive(Debug)]
pub(crate) struct HeldBytes {
    tally: Arc<HeldTally>,
    n: usize,
}

impl HeldBytes {
    fn new(tally: &Arc<HeldTally>, n: usize) -> HeldBytes {
        tally
            .bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        tally
            .deliveries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics().delivery_held(true);
        HeldBytes {
            tally: tally.clone(),
            n,
        }
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.tally
            .bytes
            .fetch_sub(self.n, std::sync::atomic::Ordering::Relaxed);
        self.tally
            .deliveries
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        metrics().delivery_held(false);
    }
}

/// Bookkeeping per held delivery beyond its body and decoded fields (tag, ack-window slot,
/// batch entry, allocations).
const HELD_OVERHEAD: usize = 400;

/// Contacts group by import: same account, same list set, same write path, same action (the
/// consent actions are other CC calls, issue 15).
impl Coalesce for Contact {
    type Group = (String, Vec<uuid::Uuid>, Consent, Action);
    type Key = String;
    /// Each CC account has its share of the key's plan (issue 13).
    type Tenant = String;
    fn tenant(group: &Self::Group) -> String {
        group.0.clone()
    }
    fn group(&self) -> Self::Group {
        (
            self.account.clone(),
            self.list_ids.clone(),
            self.consent,
            self.action,
        )
    }
    fn key(&self) -> String {
        self.email.clone()
    }
    fn bytes(&self) -> usize {
        crate::cc::api::import_row_len(self)
    }
    fn merge(&mut self, other: Self) {
        Contact::merge(self, other)
    }
    /// An explicit-consent group costs one `sign_up_form` per contact, an import one batch.
    /// The consent actions cost a look-up per contact (and an unsubscribe a PUT).
    fn cost(group: &Self::Group) -> Cost {
        match (group.2, group.3) {
            (_, Action::Unsubscribe | Action::RemoveLists | Action::Delete) => Cost::PerItem,
            (Consent::Explicit, _) => Cost::PerItem,
            (Consent::Implicit, _) => Cost::PerBatch,
        }
    }
}

pub(crate) type ContactBatch = Batch<Contact, Held>;

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Run the worker until `shutdown` fires. Broker connection losses are retried with backoff.
pub(crate) async fn run(
    settings: Settings,
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let topo = Topology::for_queue(&settings.queue).with_events(&settings.events_exchange);
    let mut backoff = Duration::from_millis(500);
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let broker = match Broker::connect(&settings.amqp()).await {
            Ok(b) => b,
            // A certificate the CA does not vouch for stays so: stop with the one line.
            Err(e @ QueueError::Tls(_)) => return Err(e.into()),
            Err(e) => {
                health()
                    .broker_connected
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "broker unavailable");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        health()
            .broker_connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        backoff = Duration::from_millis(500);
        broker.declare(&topo).await?;
        let end = session::session(&settings, &ctx, &broker, &topo, &shutdown).await;
        health()
            .broker_connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        match end {
            SessionEnd::Shutdown => {
                broker.close().await;
                return Ok(());
            }
            SessionEnd::Lost(e) => {
                tracing::warn!(error = %e, "broker connection lost; reconnecting");
            }
            SessionEnd::Paused(p) => {
                broker.close().await;
                pause::wait_out_pause(&ctx, p, &shutdown).await;
            }
        }
    }
}

enum SessionEnd {
    Shutdown,
    Lost(QueueError),
    Paused(Pause),
}

/// One consumer's life: consume, batch, dispatch, settle; ends on shutdown, pause or broker loss.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Batcher, Limits};
    use crate::cc::api::Api;
    use crate::contact;
    use serde_json::json;

    fn contact(i: usize, fat: bool) -> Contact {
        let long = |n: usize| "é\"".repeat(n / 2);
        let body = serde_json::json!({
            "type": "contact.upsert", "version": 1, "id": format!("m{i}"),
            "occurred_at": "2026-11-23T10:00:00Z",
            "contact": {
                "email": format!("p{i}@example.com"),
                "first_name": if fat { long(50) } else { "A".into() },
                "last_name": if fat { long(50) } else { "B".into() },
                "company_name": if fat { long(50) } else { "C".into() },
                "address": { "street": if fat { long(255) } else { "1 Main".into() } },
                "custom_fields": if fat {
                    (0..25).map(|f| (format!("field{f}"), serde_json::Value::from(long(255)))).collect()
                } else { serde_json::Map::new() },
            }
        });
        let lists = [uuid::Uuid::nil()];
        contact::decode(&serde_json::to_vec(&body).unwrap(), &lists).unwrap()
    }

    /// DESIGN §2: no import exceeds 40,000 contacts or (well under) 4 MB, whatever the contacts
    /// look like: the batcher's estimate bounds the real request body.
    #[test]
    fn batches_never_exceed_cc_import_limits() {
        let defaults = crate::config::Settings::from_pairs([]).unwrap().worker;
        for fat in [false, true] {
            let mut b: Batcher<Contact, usize> = Batcher::new(Limits {
                max_items: defaults.batch_max_contacts,
                max_bytes: defaults.batch_max_bytes - crate::cc::api::IMPORT_ENVELOPE_MAX,
            });
            let now = Instant::now();
            let mut flushed = Vec::new();
            let n = if fat { 800 } else { 41_000 };
            for i in 0..n {
                flushed.extend(b.push(contact(i, fat), i, now));
            }
            flushed.extend(b.drain());
            assert!(flushed.len() >= 2, "the limits split the stream");
            for batch in &flushed {
                let rows: Vec<&Contact> = batch.entries.iter().map(|e| &*e.item).collect();
                let body = Api::import_body(&batch.group.1, &rows);
                assert!(rows.len() <= 40_000);
                assert!(
                    body.len() <= defaults.batch_max_bytes,
                    "{} bytes",
                    body.len()
                );
                assert!(body.len() < 4_000_000);
            }
        }
    }
    fn row_len(c: &Contact) -> usize {
        // One row in a body, minus the empty body, plus the separating comma.
        Api::import_body(&[], &[c]).len() - Api::import_body(&[], &[]).len() + 1
    }

    fn decode(contact: serde_json::Value) -> Contact {
        let body = json!({
            "type": "contact.upsert", "version": 1, "id": "m1",
            "occurred_at": "2026-11-23T10:00:00Z", "contact": contact,
        });
        let lists = [uuid::Uuid::nil()];
        crate::contact::decode(&serde_json::to_vec(&body).unwrap(), &lists).unwrap()
    }

    #[test]
    fn import_row_bytes_matches_the_serialized_row() {
        let cases = [
            json!({"email": "a@b.co"}),
            json!({"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"}),
            json!({
                "email": "x.y@example.org", "first_name": "Zoë \"Quote\" \\ back",
                "last_name": "Ünïcödé 日本", "job_title": "Analyst", "company_name": "Engines Ltd",
                "phone": "+1 555 0100", "birthday_month": 12, "birthday_day": 1,
                "anniversary": "2020-06-01",
                "address": {"street": "1 Main St", "city": "London", "state": "",
                            "postal_code": "N1", "country": "GB"},
                "custom_fields": {"loyalty_tier": "gold", "note": "a\"b"}
            }),
        ];
        for c in cases {
            let contact = decode(c.clone());
            assert_eq!(
                crate::cc::api::import_row_len(&contact),
                row_len(&contact),
                "{c}"
            );
        }
    }

    #[test]
    fn import_row_bytes_never_undercounts_control_characters() {
        // `decode` refuses control characters in names; guard the estimate anyway.
        let mut contact = decode(json!({"email": "t@example.com"}));
        contact.fields.first_name = Some("tab\there\u{1}".into());
        assert!(crate::cc::api::import_row_len(&contact) >= row_len(&contact));
    }
}

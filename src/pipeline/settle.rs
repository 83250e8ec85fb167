//! Settling deliveries: ack, requeue, dead-letter (with metrics and logs).

use super::{ContactBatch, Held};
use crate::batch::Entry;
use crate::contact::Contact;
use crate::queue::{Settler, Tag};
use crate::telemetry::metrics;

use super::call::Stop;
use super::ctx::*;

pub(super) type Chunk = Vec<Entry<Contact, Held>>;

pub(super) fn halves(mut chunk: Chunk) -> [Chunk; 2] {
    let b = chunk.split_off(chunk.len() / 2);
    [chunk, b]
}

pub(super) async fn settle_stop(rest: Chunk, stop: Stop) -> Option<Pause> {
    match stop {
        Stop::Pause(p) => {
            requeue_chunk(rest).await;
            Some(p)
        }
        Stop::Deadline | Stop::Reject(_) => {
            tracing::warn!(
                contacts = rest.len(),
                "hold bound reached before CC completed; requeueing"
            );
            requeue_chunk(rest).await;
            None
        }
    }
}

pub(super) async fn ack_all(chunk: Chunk) {
    let m = metrics();
    let entries = chunk.len() as u64;
    let deliveries: usize = chunk.iter().map(|e| e.tags.len()).sum();
    let tags: Vec<Tag> = chunk
        .into_iter()
        .flat_map(|e| e.tags.into_iter().map(|h| h.tag))
        .collect();
    for err in Tag::ack_many(&tags).await {
        tracing::warn!(error = %err, "ack failed; the broker will redeliver (safe: imports are upserts)");
    }
    m.contacts_synced.inc_by(entries);
    m.messages.with_label_values(&["synced"]).inc_by(entries);
    m.messages
        .with_label_values(&["superseded"])
        .inc_by((deliveries as u64).saturating_sub(entries));
}

pub(super) async fn requeue_chunk(chunk: Chunk) {
    for e in chunk {
        requeue_tags(e.tags).await;
    }
}

pub(super) async fn requeue_tags(tags: Vec<Held>) {
    let m = metrics();
    for h in tags {
        if h.tag.requeue().await.is_ok() {
            m.messages.with_label_values(&["requeued"]).inc();
        }
    }
}

/// Requeue every delivery of a batch that was never sent (shutdown, pause).
pub async fn requeue_batch(b: &ContactBatch) {
    let m = metrics();
    for e in &b.entries {
        for h in &e.tags {
            if h.tag.requeue().await.is_ok() {
                m.messages.with_label_values(&["requeued"]).inc();
            }
        }
    }
}

pub(super) async fn dead_letter_chunk(settler: &Settler, chunk: Chunk, reason: &str, detail: &str) {
    for e in chunk {
        for h in e.tags {
            dead_letter(settler, &h.tag, &h.body, reason, detail).await;
        }
    }
}

/// Dead-letter one delivery; a failure leaves it unsettled (the broker redelivers it).
pub async fn dead_letter(settler: &Settler, tag: &Tag, body: &[u8], reason: &str, detail: &str) {
    let m = metrics();
    // The message id when the body has one (never the email).
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    let message_id = serde_json::from_slice::<IdOnly>(body)
        .ok()
        .and_then(|m| m.id)
        .unwrap_or_default();
    match settler.dead_letter(tag, body, reason, detail).await {
        Ok(()) => {
            m.messages.with_label_values(&["dead_lettered"]).inc();
            m.dead_letters.with_label_values(&[reason]).inc();
            tracing::info!(
                outcome = "dead_lettered",
                message_id = %message_id,
                reason,
                detail,
                "message dead-lettered"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, reason, "dead-letter publish failed; the message stays in the queue")
        }
    }
}

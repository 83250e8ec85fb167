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
//! A dead connection (`invalid_grant`, revoked app) or a spent daily quota stops consumption as a
//! whole (one queue serves all accounts, DESIGN §3): held deliveries are requeued (never acked,
//! never dead-lettered), the consumer is cancelled, `ccsync_paused{reason}` is set, and the worker
//! resumes by itself when a token set reappears or the quota resets at 00:00 UTC.
//!
//! # Shutdown (SIGTERM)
//! Cancel the consumer, requeue what waits in the batcher, give in-flight imports until
//! `worker.shutdown_deadline_secs` to finish (their deliveries are settled normally), then close
//! the channel (anything still unsettled returns to the queue) and the connection, and return.

mod call;
pub mod consent;
mod ctx;
mod fields;
pub mod lists;
pub mod optouts;
mod ready;
pub mod sender;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, Batcher, Coalesce, Cost, Limits};
use crate::config::Settings;
use crate::contact::{self, Action, Consent, Contact, Reason};
use crate::queue::{Broker, Incoming, QueueError, Settler, Tag, Topology};
use crate::telemetry::{health, metrics};

pub use ctx::{Ctx, Pacing, Pause, TokenError, TokenSource};

/// One delivery as the pipeline holds it: the settle handle and the original body (kept for the
/// dead letter, which carries the body exactly as it was published).
#[derive(Debug)]
pub struct Held {
    pub tag: Tag,
    pub body: Vec<u8>,
    /// When the delivery arrived: the hold bound counts from the batch's oldest delivery.
    pub received: Instant,
    /// This delivery's share of the session's held bytes, given back when it is settled.
    pub bytes: HeldBytes,
}

/// Bytes of one held delivery (body, decoded contact, bookkeeping), counted in the session's
/// total while the delivery is held and taken off when it is dropped (settled).
#[derive(Debug)]
pub struct HeldBytes {
    total: Arc<std::sync::atomic::AtomicUsize>,
    n: usize,
}

impl HeldBytes {
    fn new(total: &Arc<std::sync::atomic::AtomicUsize>, n: usize) -> HeldBytes {
        total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        metrics().held_messages.inc();
        HeldBytes {
            total: total.clone(),
            n,
        }
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.total
            .fetch_sub(self.n, std::sync::atomic::Ordering::Relaxed);
        metrics().held_messages.dec();
    }
}

/// Bookkeeping per held delivery beyond its body and decoded fields (tag, ack-window slot,
/// batch entry, allocations).
const HELD_OVERHEAD: usize = 400;

/// The prefetch window sized to `worker.max_held_bytes`: the broker pushes a whole window of
/// deliveries at once, so its count, not the reading, bounds the bytes held.
struct PrefetchWindow {
    /// `worker.prefetch`: the most it may be.
    max: u16,
    budget: usize,
    current: u16,
    /// Running mean of the bytes one held delivery costs (body twice: raw and decoded).
    mean: f64,
    seen: u64,
}

impl PrefetchWindow {
    /// The smallest window it shrinks to (batches of fewer would waste requests).
    const MIN: u16 = 256;
    /// Until messages are seen, assume 4 KB ones.
    const ASSUMED: usize = 2 * 4096 + HELD_OVERHEAD;

    fn new(max: u16, budget: usize) -> PrefetchWindow {
        let mut w = PrefetchWindow {
            max,
            budget,
            current: max,
            mean: Self::ASSUMED as f64,
            seen: 0,
        };
        w.current = w.fitting();
        w
    }

    fn fitting(&self) -> u16 {
        self.fits(self.budget)
    }

    /// The window that fits `bytes` at the mean size seen, within `[MIN, max]`.
    fn fits(&self, bytes: usize) -> u16 {
        let n = (bytes as f64 / self.mean.max(1.0)) as u64;
        n.clamp(u64::from(Self::MIN.min(self.max)), u64::from(self.max)) as u16
    }

    fn seen(&mut self, body: usize) {
        let cost = (2 * body + HELD_OVERHEAD) as f64;
        self.seen += 1;
        // A mean over about the last 100 deliveries (a change of message sizes shows quickly;
        // the hold-off on the byte budget covers the moment in between).
        let k = (self.seen.min(100)) as f64;
        self.mean += (cost - self.mean) / k;
    }

    /// The window for a new consumer on the channel, given the bytes already held. A prefetch
    /// count is per consumer (quorum queues have no channel-wide QoS), so the deliveries an
    /// earlier consumer of the channel still holds do not count against a new one: the new
    /// window gets only what the budget leaves.
    fn for_new_consumer(&mut self, held: usize) -> u16 {
        self.current = self.fits(self.budget.saturating_sub(held));
        self.current
    }

    /// Whether to start a new consumer with a re-sized window: the messages got bigger (the
    /// window no longer fits the budget by more than a quarter), or the budget now leaves room
    /// for a window a quarter larger.
    fn resize(&mut self, held: usize) -> Option<u16> {
        if self.seen == 0 {
            return None;
        }
        let (fit, room) = (self.fitting(), self.fits(self.budget.saturating_sub(held)));
        let cur = f64::from(self.current);
        if f64::from(fit) < cur * 0.75 || f64::from(room) > cur * 1.25 {
            Some(self.for_new_consumer(held))
        } else {
            None
        }
    }
}

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

pub type ContactBatch = Batch<Contact, Held>;

/// How long a ready batch may wait for a sender slot before the worker stops reading (see
/// `session`): far below RabbitMQ's consumer timeout (30 minutes by default), which closes the
/// channel of a delivery held unacked longer.
const READY_WAIT_MAX: Duration = Duration::from_secs(300);

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Run the worker until `shutdown` fires. Broker connection losses are retried with backoff.
pub async fn run(
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
        let end = session(&settings, &ctx, &broker, &topo, &shutdown).await;
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
                wait_out_pause(&ctx, p, &shutdown).await;
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
async fn session(
    settings: &Settings,
    ctx: &Arc<Ctx>,
    broker: &Broker,
    topo: &Topology,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let w = &settings.worker;
    // The broker pushes a whole prefetch window at once, so the window is what bounds the bytes
    // held: start it at what the byte budget allows for 4 KB messages (the largest the issue
    // measured), then size it to the messages really seen (see `Window`).
    let mut window = PrefetchWindow::new(w.prefetch, w.max_held_bytes);
    let mut consumer = match broker.consume(topo, window.current).await {
        Ok(c) => c,
        Err(e) => return SessionEnd::Lost(e),
    };
    let settler = consumer.settler();
    let mut batcher: Batcher<Contact, Held> = Batcher::new(Limits {
        max_items: w.batch_max_contacts,
        // Rows only: the body's envelope (list ids) needs its own room under the limit.
        max_bytes: w.batch_max_bytes - crate::cc::api::IMPORT_ENVELOPE_MAX,
    });
    let mut ready = ready::Ready::new(ctx.weights.clone());
    let mut senders: JoinSet<Option<Pause>> = JoinSet::new();
    // Whose batch each sender task carries (its slot is freed when the task ends).
    let mut sending: std::collections::HashMap<tokio::task::Id, String> = Default::default();
    let mut pause: Option<Pause> = None;
    let mut lost: Option<QueueError> = None;
    batcher.set_weights(ctx.weights.clone());
    batcher.set_pace(ctx.pace().await, Instant::now());
    let mut linger_checked = Instant::now();
    // Bytes of the deliveries this session holds, against `worker.max_held_bytes`: a prefetch
    // count bounds messages, not bytes (issue 11: 50,000 messages of 4.2 KB peaked at 281 MB).
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut consumer_paused = false;

    loop {
        // Hand ready batches to free sender slots: up to `max_activities_in_flight` per
        // account, the account furthest behind its share first (`ready`).
        while let Some(b) = ready.next(w.max_activities_in_flight, &batcher.pace()) {
            let account = b.group.0.clone();
            let ctx = ctx.clone();
            let settler = settler.clone();
            let h = senders.spawn(async move { sender::send(ctx, settler, b).await });
            sending.insert(h.id(), account);
        }
        metrics().activities_in_flight.set(senders.len() as i64);
        if linger_checked.elapsed() > Duration::from_secs(5) {
            batcher.set_pace(ctx.pace().await, Instant::now());
            linger_checked = Instant::now();
            // Re-size the prefetch window to the messages seen (a new consumer on the same
            // channel: what it delivered stays held and settleable).
            let held_now = held.load(std::sync::atomic::Ordering::Relaxed);
            if !consumer_paused && let Some(p) = window.resize(held_now) {
                tracing::debug!(
                    prefetch = p,
                    "resizing the prefetch window to the byte budget"
                );
                if let Err(e) = consumer.pause().await {
                    lost = Some(e);
                    break;
                }
                if let Err(e) = consumer.resume(Some(p)).await {
                    lost = Some(e);
                    break;
                }
            }
        }
        let next_due = batcher.next_release();
        // Byte budget: hold off the broker while held deliveries weigh more than the budget;
        // take deliveries again below three quarters of it.
        let held_now = held.load(std::sync::atomic::Ordering::Relaxed);
        metrics().held_bytes.set(held_now as i64);
        if !consumer_paused && held_now > w.max_held_bytes {
            tracing::debug!(
                held_now,
                "byte budget for held deliveries spent; holding off the broker"
            );
            if let Err(e) = consumer.pause().await {
                lost = Some(e);
                break;
            }
            consumer_paused = true;
        } else if consumer_paused && held_now < w.max_held_bytes / 4 * 3 {
            if let Err(e) = consumer
                .resume(Some(window.for_new_consumer(held_now)))
                .await
            {
                lost = Some(e);
                break;
            }
            consumer_paused = false;
        }
        // Back-pressure: stop reading while ready batches pile up unsent for long. Reading on
        // past a backlog is what lets another account's messages behind it in the queue reach
        // their own sender slots (issue 13); the byte budget above bounds what is held, and a
        // batch that waited `READY_WAIT_MAX` means CC takes work slower than we read.
        let can_read = ready.len() < 2 * w.max_activities_in_flight
            || ready.oldest_wait(Instant::now()) < READY_WAIT_MAX;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(joined) = senders.join_next_with_id(), if !senders.is_empty() => {
                let id = match &joined {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                if let Some(account) = sending.remove(&id) {
                    ready.done(&account);
                }
                if let Ok((_, Some(p))) = joined {
                    pause = Some(p);
                    break;
                }
            }
            _ = async { tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)).await },
                if next_due.is_some() => {
                ready.extend(batcher.release(Instant::now()));
            }
            d = consumer.next(), if can_read => match d {
                Some(Ok(inc)) => {
                    window.seen(inc.body.len());
                    if let Some(b) = accept(settings, ctx, &settler, &mut batcher, &held, inc).await {
                        ready.extend(b);
                    }
                }
                Some(Err(e)) => { lost = Some(e); break; }
                None => { lost = Some(QueueError::Broker("consumer cancelled by the broker".into())); break; }
            },
        }
    }

    // Leaving the session: stop receiving, return what has not been sent, let in-flight work end.
    let _ = consumer.cancel().await;
    for b in batcher.drain().into_iter().chain(ready.drain()) {
        settle::requeue_batch(&settler, b).await;
    }
    let deadline = if shutdown.is_cancelled() {
        w.shutdown_deadline
    } else {
        // Pausing or reconnecting: in-flight imports settle or requeue on their own quickly
        // (a paused gate answers at once); give them the same bound.
        w.shutdown_deadline
    };
    let drained = tokio::time::timeout(deadline, async {
        while let Some(j) = senders.join_next().await {
            if let Ok(Some(p)) = j {
                pause.get_or_insert(p);
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "in-flight imports outlived the deadline; their messages return to the queue"
        );
        senders.abort_all();
    }
    metrics().activities_in_flight.set(0);
    consumer.close().await;
    if let Some(e) = lost {
        return SessionEnd::Lost(e);
    }
    match pause {
        Some(p) if !shutdown.is_cancelled() => SessionEnd::Paused(p),
        _ => SessionEnd::Shutdown,
    }
}

/// Decode one delivery: a bad one is dead-lettered at once, a good one joins the batcher.
///
/// A delivery the broker returned after a worker died (or lost its channel) is read under a
/// crash mark ([`crate::poison`]): one that keeps killing the worker as it is read is
/// dead-lettered unread as `crashes_worker` once its unfinished readings reach
/// `worker.max_redeliveries`. Every other give-back is a blameless re-publish, so nothing else
/// counts against a message.
async fn accept(
    settings: &Settings,
    ctx: &Ctx,
    settler: &Settler,
    batcher: &mut Batcher<Contact, Held>,
    held: &Arc<std::sync::atomic::AtomicUsize>,
    inc: Incoming,
) -> Option<Vec<ContactBatch>> {
    let Incoming {
        body,
        delivery_count,
        tag,
        ..
    } = inc;
    let marks = ctx.marks.as_deref().filter(|_| delivery_count > 0);
    let mut marked = false;
    if let Some(marks) = marks {
        match marks.begin(&body).await {
            Ok(deaths) if deaths >= settings.worker.max_redeliveries => {
                let detail = format!(
                    "a worker died {deaths} times while reading this message (worker.max_redeliveries = {}); it was set aside unread",
                    settings.worker.max_redeliveries
                );
                settle::dead_letter(settler, &tag, &body, Reason::CrashesWorker, &detail).await;
                let _ = marks.forget(&body).await;
                return None;
            }
            Ok(_) => marked = true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot mark a redelivered message; reading it unmarked")
            }
        }
    }
    let decoded = contact::decode_for(&body, &|a| settings.default_lists_for(a));
    if let Ok(c) = &decoded
        && settings
            .testing
            .abort_on_email
            .as_deref()
            .is_some_and(|e| e == c.email)
    {
        // TEST ONLY (`testing.abort_on_email`): a message that kills the worker when it is read.
        tracing::error!("testing.abort_on_email matched; aborting the process as configured");
        std::process::abort();
    }
    if marked && let Some(marks) = marks {
        let _ = marks.end(&body).await;
    }
    match decoded {
        Ok(c)
            if ctx
                .parking
                .as_ref()
                .is_some_and(|p| p.is_parked(&c.account)) =>
        {
            // Its account's connection is dead: straight to the account's parking queue.
            let h = Held {
                bytes: HeldBytes::new(held, 0),
                tag,
                body,
                received: Instant::now(),
            };
            settle::park_held(settler, &c.account, std::slice::from_ref(&h)).await;
            None
        }
        Ok(c) => {
            let now = Instant::now();
            let decoded_len = crate::cc::api::import_row_len(&c);
            Some(batcher.push(
                c,
                Held {
                    bytes: HeldBytes::new(held, body.len() + decoded_len + HELD_OVERHEAD),
                    tag,
                    body,
                    received: now,
                },
                now,
            ))
        }
        Err(r) => {
            settle::dead_letter(settler, &tag, &body, r.code, &r.detail).await;
            None
        }
    }
}

/// First probe of an outage or `forbidden` pause, and the cap its backoff doubles to: at most
/// three requests a minute per replica while CC is down (issue 11: "a few a minute at most").
pub const PROBE_FIRST: Duration = Duration::from_secs(5);
pub const PROBE_MAX: Duration = Duration::from_secs(20);

/// Wait until the reason for a pause is gone (or shutdown). The gauge `ccsync_paused{reason}`
/// is 1 meanwhile; the replica stays ready (a pause is on purpose: restarting or draining it
/// would not help, and a not-ready replica would block rollouts and node drains).
async fn wait_out_pause(ctx: &Ctx, p: Pause, shutdown: &CancellationToken) {
    let m = metrics();
    let reason = p.reason();
    let account = p.account().to_string();
    m.set_paused(reason, &account, true);
    health()
        .paused
        .store(true, std::sync::atomic::Ordering::Relaxed);
    match p {
        Pause::Auth { account } => {
            tracing::error!(account = %account, "paused: the CC connection needs re-authorization; run `ccsync auth login --account {account}`; messages stay queued");
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = ctx.tokens.wait_until_alive(&account) => {
                    tracing::info!(account = %account, "token set is back; resuming");
                }
            }
        }
        Pause::Quota { wait } => {
            tracing::warn!(
                resume_in_secs = wait.as_secs(),
                "paused: CC's daily quota is spent; resuming after 00:00 UTC; messages stay queued"
            );
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        Pause::Outage { account } | Pause::Forbidden { account } => {
            if reason == "forbidden" {
                tracing::error!(account = %account, "paused: CC answers 403 Forbidden. Likely fixes: the app's scopes must include contact_data (re-run `ccsync auth login --account {account}` after changing them), the CC user who approved it needs the contacts privileges, or the app is deactivated in CC's developer portal; probing every {}s at most; messages stay queued", PROBE_MAX.as_secs());
            } else {
                tracing::error!(account = %account, "paused: CC is failing (5xx or timeouts, call after call); probing every {}s at most and resuming by itself; messages stay queued", PROBE_MAX.as_secs());
            }
            let mut wait = PROBE_FIRST;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                m.probes.with_label_values(&[reason]).inc();
                if let call::Probe::Answers = call::probe(ctx, &account).await {
                    tracing::info!(account = %account, reason, "CC answers again; resuming");
                    break;
                }
                wait = (wait * 2).min(PROBE_MAX);
            }
            ctx.outage.answered();
        }
        Pause::Config { account, list } => {
            tracing::error!(account = %account, %list, "paused: the default list {list} (CCSYNC_DEFAULT_LIST_IDS) does not exist in CC account '{account}'; create it or fix the setting; checking again every {}s; messages stay queued", lists::LISTS_RECHECK.as_secs());
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(lists::LISTS_RECHECK) => {}
                }
                m.probes.with_label_values(&[reason]).inc();
                match lists::missing_default_lists(ctx, &account).await {
                    Ok(gone) if !gone.contains(&list) => {
                        tracing::info!(account = %account, %list, "the default list exists again; resuming");
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    m.set_paused(reason, &account, false);
    health()
        .paused
        .store(false, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cc::api::Api;

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
    use serde_json::json;

    /// The prefetch window follows the messages seen so a full window stays within the byte
    /// budget: 4 KB messages get a small window, 200-byte ones the whole configured prefetch.
    #[test]
    fn the_prefetch_window_fits_the_byte_budget_to_the_messages_seen() {
        let budget = 48_000_000;
        let mut w = PrefetchWindow::new(65_535, budget);
        assert!(usize::from(w.current) * PrefetchWindow::ASSUMED <= budget);
        assert_eq!(w.resize(0), None, "nothing seen yet");
        for _ in 0..2_000 {
            w.seen(200);
        }
        assert_eq!(w.resize(0), Some((budget / 800) as u16));
        for _ in 0..2_000 {
            w.seen(4_200);
        }
        let p = w.resize(0).expect("shrinks for big messages");
        assert!(usize::from(p) * (2 * 4_200 + HELD_OVERHEAD) <= budget * 11 / 10);
        assert_eq!(w.resize(0), None, "stable while the messages are");
        // A new consumer gets only what the deliveries still held leave of the budget (they do
        // not count against its own prefetch), and never less than the floor.
        let cost = 2 * 4_200 + HELD_OVERHEAD;
        let half = w.for_new_consumer(budget / 2);
        assert!(usize::from(half) * cost <= budget / 2 + cost);
        assert_eq!(w.for_new_consumer(budget * 2), PrefetchWindow::MIN);
        // It grows back once the held ones are settled.
        assert!(w.resize(0).is_some_and(|p| p > half));
        // Never below the floor, never above the configured prefetch.
        let mut tiny = PrefetchWindow::new(100, 1);
        tiny.seen(10_000);
        assert_eq!(tiny.fitting(), 100);
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

//! One consumer's life: consume, batch, dispatch to senders, settle; and the reading of one
//! delivery ([`accept`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::prefetch::PrefetchWindow;
use super::ready::{REFILL_GRACE, release_at};
use super::settle::{self, Deliveries, Disposition};
use super::{
    ContactBatch, Ctx, HELD_OVERHEAD, Held, HeldBytes, HeldTally, Pause, SessionEnd, ready, sender,
};
use crate::batch::{Batcher, Limits};
use crate::config::Settings;
use crate::contact::{Contact, Reason};
use crate::queue::{Broker, Incoming, QueueError, Settler, Topology};
use crate::telemetry::metrics;

/// How long a ready batch may wait for a sender slot before the worker stops reading (see
/// `session`): far below RabbitMQ's consumer timeout (30 minutes by default), which closes the
/// channel of a delivery held unacked longer.
const READY_WAIT_MAX: Duration = Duration::from_secs(300);

/// How many deliveries that have already arrived one turn of the session loop reads. The byte
/// budget and the window are checked once a turn, so they may be passed by this many deliveries
/// at most (the prefetch window still bounds what the broker sends).
const READ_BURST: usize = 64;

pub(super) async fn session(
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
    // Whether the window has been fitted to the messages seen once (the first window is a guess).
    let mut window_fitted = false;
    // Bytes of the deliveries this session holds, against `worker.max_held_bytes`: a prefetch
    // count bounds messages, not bytes (issue 11: 50,000 messages of 4.2 KB peaked at 281 MB).
    let held = Arc::new(HeldTally::default());
    let mut consumer_paused = false;
    // Set when an import settles while the window was full (see `release_at`).
    let mut refill_until: Option<Instant> = None;
    let hold_cap = (w.max_hold / 4).min(w.linger_max);

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
        metrics().set_activities_in_flight(senders.len());
        let pace_due = linger_checked.elapsed() > Duration::from_secs(5);
        if pace_due {
            batcher.set_pace(ctx.pace().await, Instant::now());
            linger_checked = Instant::now();
        }
        // Re-size the prefetch window to the messages seen (a new consumer on the same channel:
        // what it delivered stays held and settleable): every 5 s, and at once the first time the
        // window fills (`resize` answers `None` unless the fit changed by a quarter). The first
        // window assumes 4 KB messages; with small ones it fills in a moment, and waiting 5 s to
        // grow it sent a backlog's first import at a sixth of its size (one import more than the
        // floor, BENCHMARKS.md figure 2).
        let window_full_now = held.deliveries() >= usize::from(window.current);
        if pace_due || (window_full_now && !window_fitted) {
            window_fitted = true;
            let held_now = held.bytes();
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
        // Byte budget: hold off the broker while held deliveries weigh more than the budget;
        // take deliveries again below three quarters of it.
        let held_now = held.bytes();
        metrics().set_held_bytes(held_now);
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
        let window_full = consumer_paused || held.deliveries() >= usize::from(window.current);
        let full_and_busy = window_full && !senders.is_empty();
        if refill_until.is_some_and(|r| r <= Instant::now()) {
            refill_until = None;
        }
        let next_due = batcher
            .next_release()
            .map(|due| release_at(due, full_and_busy, refill_until, hold_cap));
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
                if window_full {
                    refill_until = Some(Instant::now() + REFILL_GRACE);
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
            d = consumer.next(), if can_read => {
                // Read what has already arrived in the same turn, up to READ_BURST: a turn of
                // this loop costs more than reading one delivery (BENCHMARKS.md, figure 1).
                let mut d = d;
                let mut burst = 0;
                loop {
                    match d {
                        Some(Ok(inc)) => {
                            window.seen(inc.body.len());
                            if let Some(b) = accept(settings, ctx, &settler, &mut batcher, &held, inc).await {
                                ready.extend(b);
                            }
                        }
                        Some(Err(e)) => { lost = Some(e); break; }
                        None => { lost = Some(QueueError::Broker("consumer cancelled by the broker".into())); break; }
                    }
                    burst += 1;
                    if burst >= READ_BURST {
                        break;
                    }
                    match consumer.next_ready() {
                        Some(next) => d = Some(next),
                        None => break,
                    }
                }
                if lost.is_some() {
                    break;
                }
            },
        }
    }

    // Leaving the session: stop receiving, return what has not been sent, let in-flight work end.
    let _ = consumer.cancel().await;
    for b in batcher.drain().into_iter().chain(ready.drain()) {
        settle::apply(&settler, b.entries, Disposition::Requeue).await;
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
    metrics().set_activities_in_flight(0);
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
    held: &Arc<HeldTally>,
    inc: Incoming,
) -> Option<Vec<ContactBatch>> {
    let Incoming {
        body,
        delivery_count,
        tag,
        ..
    } = inc;
    let marks = Some(&*ctx.marks).filter(|_| delivery_count > 0);
    let mut marked = false;
    if let Some(marks) = marks {
        match marks.begin(&body).await {
            Ok(deaths) if deaths >= settings.worker.max_redeliveries => {
                let detail = format!(
                    "a worker died {deaths} times while reading this message (worker.max_redeliveries = {}); it was set aside unread",
                    settings.worker.max_redeliveries
                );
                let h = Held {
                    _held: HeldBytes::new(held, 0),
                    tag,
                    body: body.clone(),
                    received: Instant::now(),
                };
                let d = Disposition::DeadLetter {
                    reason: Reason::CrashesWorker,
                    detail,
                };
                settle::apply(settler, Deliveries::one("", h), d).await;
                let _ = marks.forget(&body).await;
                return None;
            }
            Ok(_) => marked = true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot mark a redelivered message; reading it unmarked")
            }
        }
    }
    let decoded = ctx.default_lists.decode(&body);
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
        Ok(c) if ctx.parking.is_parked(&c.account) => {
            // Its account's connection is dead: straight to the account's parking queue.
            let h = Held {
                _held: HeldBytes::new(held, 0),
                tag,
                body,
                received: Instant::now(),
            };
            let d = Disposition::Park {
                account: c.account.clone(),
            };
            settle::apply(settler, Deliveries::one(&c.account, h), d).await;
            None
        }
        Ok(c) => {
            let now = Instant::now();
            let decoded_len = crate::cc::api::import_row_len(&c);
            Some(batcher.push(
                c,
                Held {
                    _held: HeldBytes::new(held, body.len() + decoded_len + HELD_OVERHEAD),
                    tag,
                    body,
                    received: now,
                },
                now,
            ))
        }
        Err(r) => {
            let h = Held {
                _held: HeldBytes::new(held, 0),
                tag,
                body,
                received: Instant::now(),
            };
            let d = Disposition::DeadLetter {
                reason: r.code,
                detail: r.detail,
            };
            settle::apply(settler, Deliveries::one("", h), d).await;
            None
        }
    }
}

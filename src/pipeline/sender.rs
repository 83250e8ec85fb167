//! One batch's journey: custom fields resolved → import (or one `sign_up_form` per contact for
//! explicit consent) → activity polled to a terminal state → every delivery settled.
//!
//! What each CC outcome means for the deliveries:
//! * `completed` with every row accounted for → ack all.
//! * `completed` with `error_count` > 0 or fewer items than sent (CC does not say which rows
//!   failed, reference §6.5) → split the batch in halves and import each again; a single row that
//!   still fails is dead-lettered as `rejected_by_cc` with CC's error text. Re-importing rows that
//!   did land is harmless: imports are create-or-update by email.
//! * 400 on the import itself → the same halving, down to the offending row.
//! * `failed` / `cancelled` / `timed_out`, 5xx, timeouts, transport errors → retry with backoff
//!   until the hold bound, then requeue (never ack what CC has not completed).
//! * 401 → one refresh through the token source, then retry; 429 → reported to the shared gate,
//!   which spreads the cool-down (`throttled`) or the daily pause (`quota_exceeded`) to all
//!   replicas.
//! * dead connection or spent quota → requeue everything and ask the worker to pause.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{ContactBatch, Held};
use crate::batch::Entry;
use crate::cc::api::{ActivityState, Api};
use crate::cc::{CcError, RetryAction};
use crate::config::WorkerSettings;
use crate::contact::{Consent, Contact};
use crate::ledger::{Ledger, Verdict};
use crate::queue::{Settler, Tag};
use crate::ratelimit::{CallKind, Gate, RateLimitError};
use crate::telemetry::metrics;

/// Why the worker must stop consuming for a while.
#[derive(Debug, Clone)]
pub enum Pause {
    /// The account's connection is dead: a human must run `ccsync auth login`.
    Auth { account: String },
    /// The daily quota is spent until 00:00 UTC.
    Quota { wait: Duration },
}

/// Failure to get an access token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// Re-authorization needed (`ccsync auth login`): pause.
    #[error("connection dead: {0}")]
    Dead(String),
    /// Transient (Redis, token endpoint): retry later.
    #[error("token unavailable: {0}")]
    Unavailable(String),
}

/// Where access tokens come from (the auth room's `TokenProvider` in production).
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    async fn access_token(&self, account: &str) -> Result<SecretString, TokenError>;
    /// CC refused `rejected` with a 401: refresh unless someone already did.
    async fn token_rejected(
        &self,
        account: &str,
        rejected: &SecretString,
    ) -> Result<SecretString, TokenError>;
    /// Returns once the account has a usable token set again.
    async fn wait_until_alive(&self, account: &str);
}

/// How long a batch may linger (the rate limiter's budget-aware pacing in production).
#[async_trait::async_trait]
pub trait Pacing: Send + Sync {
    async fn linger(&self) -> Duration;
}

/// Everything a sender needs; shared by all sender tasks.
pub struct Ctx {
    pub api: Api,
    pub tokens: Arc<dyn TokenSource>,
    pub gate: Arc<dyn Gate>,
    pub pacing: Option<Arc<dyn Pacing>>,
    /// The newest-event ledger; `None` only in tests that run one batch at a time.
    pub ledger: Option<Arc<Ledger>>,
    pub worker: WorkerSettings,
    /// Per account: CC custom-field name → id, and when it was fetched.
    custom_fields: Mutex<HashMap<String, FieldIds>>,
}

/// CC custom-field name → id for one account, and when it was fetched.
type FieldIds = (Instant, HashMap<String, String>);

impl Ctx {
    pub fn new(
        api: Api,
        tokens: Arc<dyn TokenSource>,
        gate: Arc<dyn Gate>,
        pacing: Option<Arc<dyn Pacing>>,
        ledger: Option<Arc<Ledger>>,
        worker: WorkerSettings,
    ) -> Ctx {
        Ctx {
            api,
            tokens,
            gate,
            pacing,
            ledger,
            worker,
            custom_fields: Mutex::new(HashMap::new()),
        }
    }

    /// The current linger, within the configured bounds.
    pub async fn linger(&self) -> Duration {
        let min = Duration::from_millis(self.worker.linger_min_ms);
        let max = Duration::from_millis(self.worker.linger_max_ms);
        match &self.pacing {
            Some(p) => p.linger().await.clamp(min, max),
            None => min,
        }
    }
}

/// Why a call sequence stopped without a result.
enum Stop {
    Pause(Pause),
    /// CC refused this content; resubmitting it unchanged cannot succeed.
    Reject(String),
    /// The hold bound is reached; requeue.
    Deadline,
}

type Chunk = Vec<Entry<Contact, Held>>;

/// Send one batch and settle its deliveries. Returns a pause request when the worker must stop.
pub async fn send(ctx: Arc<Ctx>, settler: Settler, batch: ContactBatch) -> Option<Pause> {
    let (account, lists, consent) = batch.group.clone();
    let oldest = batch
        .entries
        .iter()
        .flat_map(|e| e.tags.iter().map(|h| h.received))
        .min()
        .unwrap_or_else(Instant::now);
    let deadline = oldest + Duration::from_secs(ctx.worker.max_hold_secs);
    let entries = batch.entries;
    let (entries, cf_ids) =
        match resolve_custom_fields(&ctx, &settler, &account, entries, deadline).await {
            Ok(v) => v,
            Err((rest, stop)) => return settle_stop(rest, stop).await,
        };
    let Some(ledger) = ctx.ledger.clone() else {
        return send_group(
            &ctx, &settler, &account, &lists, consent, entries, &cf_ids, deadline,
        )
        .await;
    };
    // Claim the emails in the shared ledger; send what is free, retry what another import carries
    // once this one has settled (see `crate::ledger`).
    let owner = uuid::Uuid::now_v7().to_string();
    let mut pending = entries;
    let mut round = 0u32;
    while !pending.is_empty() {
        let (go, busy) = match claim(&ledger, &owner, &account, pending).await {
            Ok(v) => v,
            Err((rest, e)) => {
                tracing::warn!(error = %e, "cannot claim emails; retrying");
                if Instant::now() >= deadline {
                    return settle_stop(rest, Stop::Deadline).await;
                }
                backoff_sleep(round, deadline).await;
                round += 1;
                pending = rest;
                continue;
            }
        };
        let emails: Vec<String> = go.iter().map(|e| e.item.email.clone()).collect();
        let pause = if go.is_empty() {
            None
        } else {
            send_group(
                &ctx, &settler, &account, &lists, consent, go, &cf_ids, deadline,
            )
            .await
        };
        let refs: Vec<(&str, &str)> = emails
            .iter()
            .map(|e| (account.as_str(), e.as_str()))
            .collect();
        if let Err(e) = ledger.release(&owner, &refs).await {
            tracing::warn!(error = %e, "cannot release ledger leases; they expire on their own");
        }
        if let Some(p) = pause {
            requeue_chunk(busy).await;
            return Some(p);
        }
        if !busy.is_empty() {
            if Instant::now() >= deadline {
                return settle_stop(busy, Stop::Deadline).await;
            }
            backoff_sleep(round.min(3), deadline).await;
            round += 1;
        }
        pending = busy;
    }
    None
}

#[allow(clippy::too_many_arguments)]
async fn send_group(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    lists: &[uuid::Uuid],
    consent: Consent,
    entries: Chunk,
    cf_ids: &HashMap<String, String>,
    deadline: Instant,
) -> Option<Pause> {
    if entries.is_empty() {
        return None;
    }
    match consent {
        Consent::Explicit => sign_up_each(ctx, settler, account, entries, cf_ids, deadline).await,
        Consent::Implicit => import_all(ctx, settler, account, lists, entries, deadline).await,
    }
}

/// Split entries into (send now, with stale ones stripped of their fields) and (busy elsewhere).
async fn claim(
    ledger: &Ledger,
    owner: &str,
    account: &str,
    entries: Chunk,
) -> Result<(Chunk, Chunk), (Chunk, crate::ledger::LedgerError)> {
    let items: Vec<(&str, &str, i64, Vec<String>)> = entries
        .iter()
        .map(|e| {
            let ms = (e.item.occurred_at.unix_timestamp_nanos() / 1_000_000) as i64;
            (account, e.item.email.as_str(), ms, e.item.fields.names())
        })
        .collect();
    let verdicts = match ledger.claim(owner, &items).await {
        Ok(v) => v,
        Err(e) => return Err((entries, e)),
    };
    let (mut go, mut busy) = (Vec::new(), Vec::new());
    let mut stale_fields = 0;
    for (mut e, v) in entries.into_iter().zip(verdicts) {
        match v {
            Verdict::Go { stale } => {
                stale_fields += stale.len();
                e.item.fields.drop_named(&stale);
                go.push(e);
            }
            Verdict::Busy => busy.push(e),
        }
    }
    tracing::debug!(
        account,
        go = go.len(),
        busy = busy.len(),
        stale_fields,
        "claimed emails in the ordering ledger"
    );
    Ok((go, busy))
}

async fn import_all(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    lists: &[uuid::Uuid],
    entries: Chunk,
    deadline: Instant,
) -> Option<Pause> {
    // A work stack: a chunk that fails in part is split in halves until the bad rows stand alone.
    let mut stack: Vec<(Chunk, u32)> = vec![(entries, 0)];
    while let Some((chunk, failures)) = stack.pop() {
        let contacts: Vec<&Contact> = chunk.iter().map(|e| &e.item).collect();
        let body = Api::import_body(lists, &contacts);
        if body.len() > ctx.worker.batch_max_bytes && chunk.len() > 1 {
            // The batcher's estimate was short: never let CC truncate at 4 MB.
            stack.extend(halves(chunk).into_iter().map(|c| (c, 0)));
            continue;
        }
        metrics().batch_size.observe(chunk.len() as f64);
        match import_once(ctx, account, body, chunk.len() as u64, deadline).await {
            Ok(Landed::All) => ack_all(chunk).await,
            Ok(Landed::Shortfall(text)) if chunk.len() == 1 => {
                dead_letter_chunk(settler, chunk, "rejected_by_cc", &text).await
            }
            Ok(Landed::Shortfall(_)) => stack.extend(halves(chunk).into_iter().map(|c| (c, 0))),
            Ok(Landed::Failed(state)) => {
                tracing::warn!(
                    account,
                    ?state,
                    "import activity ended without completing; retrying"
                );
                if failures >= 3 {
                    requeue_chunk(chunk).await;
                } else {
                    backoff_sleep(failures, deadline).await;
                    stack.push((chunk, failures + 1));
                }
            }
            Err(Stop::Reject(text)) if chunk.len() == 1 => {
                dead_letter_chunk(settler, chunk, "rejected_by_cc", &text).await
            }
            Err(Stop::Reject(_)) => stack.extend(halves(chunk).into_iter().map(|c| (c, 0))),
            Err(stop) => {
                let mut rest: Chunk = chunk;
                rest.extend(stack.into_iter().flat_map(|(c, _)| c));
                return settle_stop(rest, stop).await;
            }
        }
    }
    None
}

enum Landed {
    All,
    Shortfall(String),
    Failed(ActivityState),
}

/// Create one import and follow it to a terminal state.
async fn import_once(
    ctx: &Ctx,
    account: &str,
    body: Vec<u8>,
    rows: u64,
    deadline: Instant,
) -> Result<Landed, Stop> {
    let created = call(ctx, account, CallKind::Import, deadline, |t| {
        let body = body.clone();
        async move { ctx.api.import(&t, body).await }
    })
    .await?;
    let started = Instant::now();
    let id = created.activity_id;
    tracing::debug!(account, activity_id = %id, rows, "import created");
    let mut wait = Duration::from_millis(ctx.worker.poll_initial_ms);
    loop {
        if Instant::now() + wait > deadline {
            return Err(Stop::Deadline);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(ctx.worker.poll_max_ms));
        let st = call(ctx, account, CallKind::Poll, deadline, |t| {
            let id = id.clone();
            async move { ctx.api.activity(&t, &id).await }
        })
        .await?;
        if !st.state.is_terminal() {
            continue;
        }
        metrics()
            .activity_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(account, activity_id = %id, state = ?st.state, rows, items = st.items_total, errors = st.errors, "import finished");
        return Ok(match st.state {
            ActivityState::Completed if st.errors == 0 && st.items_total >= rows => Landed::All,
            ActivityState::Completed => Landed::Shortfall(if st.activity_errors.is_empty() {
                format!(
                    "CC completed the import with {} of {rows} rows and {} errors but named no reason",
                    st.items_total, st.errors
                )
            } else {
                format!("CC rejected the row: {}", st.activity_errors.join("; "))
            }),
            other => Landed::Failed(other),
        });
    }
}

async fn sign_up_each(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    entries: Chunk,
    cf_ids: &HashMap<String, String>,
    deadline: Instant,
) -> Option<Pause> {
    let mut it = entries.into_iter();
    while let Some(e) = it.next() {
        let res = call(ctx, account, CallKind::Upsert, deadline, |t| {
            let c = &e.item;
            async move { ctx.api.sign_up_form(&t, c, cf_ids).await }
        })
        .await;
        match res {
            Ok(()) => ack_all(vec![e]).await,
            Err(Stop::Reject(text)) => {
                dead_letter_chunk(settler, vec![e], "rejected_by_cc", &text).await
            }
            Err(stop) => {
                let mut rest = vec![e];
                rest.extend(it);
                return settle_stop(rest, stop).await;
            }
        }
    }
    None
}

/// Resolve the custom-field names the batch uses; unknown names are created when configured,
/// otherwise the contacts naming them are dead-lettered as `unknown_custom_field`.
async fn resolve_custom_fields(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    entries: Chunk,
    deadline: Instant,
) -> Result<(Chunk, HashMap<String, String>), (Chunk, Stop)> {
    let names: std::collections::BTreeSet<&String> = entries
        .iter()
        .flat_map(|e| e.item.fields.custom_fields.keys())
        .collect();
    if names.is_empty() {
        return Ok((entries, HashMap::new()));
    }
    let mut cache = ctx.custom_fields.lock().await;
    let fresh = |c: &Option<&FieldIds>| {
        c.is_some_and(|(at, map)| {
            names.iter().all(|n| map.contains_key(*n)) || at.elapsed() < Duration::from_secs(60)
        })
    };
    if !fresh(&cache.get(account)) {
        match call(ctx, account, CallKind::Lookup, deadline, |t| async move {
            ctx.api.custom_fields(&t).await
        })
        .await
        {
            Ok(map) => {
                cache.insert(account.to_string(), (Instant::now(), map));
            }
            Err(stop) => return Err((entries, stop)),
        }
    }
    let known = &mut cache.get_mut(account).expect("just filled").1;
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| !known.contains_key(**n))
        .map(|n| (*n).clone())
        .collect();
    if ctx.worker.create_custom_fields {
        for name in &unknown {
            match call(ctx, account, CallKind::Lookup, deadline, |t| async move {
                ctx.api.create_custom_field(&t, name).await
            })
            .await
            {
                Ok(id) => {
                    known.insert(name.clone(), id);
                }
                Err(Stop::Reject(text)) => {
                    tracing::warn!(account, error = %text, "CC refused to create a custom field");
                }
                Err(stop) => return Err((entries, stop)),
            }
        }
    }
    let ids = known.clone();
    drop(cache);
    let mut keep = Vec::with_capacity(entries.len());
    for e in entries {
        match e
            .item
            .fields
            .custom_fields
            .keys()
            .find(|n| !ids.contains_key(*n))
        {
            None => keep.push(e),
            Some(n) => {
                let detail = format!(
                    "custom field '{n}' does not exist in CC; create it there, or set worker.create_custom_fields = true"
                );
                dead_letter_chunk(settler, vec![e], "unknown_custom_field", &detail).await;
            }
        }
    }
    Ok((keep, ids))
}

/// One CC call through the gate and the token source, with the retry policy of the module docs.
async fn call<T, F, Fut>(
    ctx: &Ctx,
    account: &str,
    kind: CallKind,
    deadline: Instant,
    f: F,
) -> Result<T, Stop>
where
    F: Fn(SecretString) -> Fut,
    Fut: Future<Output = Result<T, CcError>>,
{
    let mut transient = 0u32;
    let mut unauthorized = 0u32;
    let mut token = get_token(ctx, account, deadline).await?;
    loop {
        if Instant::now() >= deadline {
            return Err(Stop::Deadline);
        }
        let waited = Instant::now();
        match ctx.gate.acquire(kind).await {
            Ok(()) => {}
            Err(RateLimitError::QuotaPaused(wait)) => {
                return Err(Stop::Pause(Pause::Quota { wait }));
            }
        }
        metrics()
            .ratelimit_wait
            .observe(waited.elapsed().as_secs_f64());
        let err = match f(token.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match err.action() {
            RetryAction::Reauthenticate => {
                unauthorized += 1;
                if unauthorized > 1 {
                    backoff_sleep(unauthorized - 2, deadline).await;
                }
                token = match ctx.tokens.token_rejected(account, &token).await {
                    Ok(t) => t,
                    Err(TokenError::Dead(_)) => return Err(Stop::Pause(auth_pause(account))),
                    Err(TokenError::Unavailable(_)) => get_token(ctx, account, deadline).await?,
                };
            }
            RetryAction::RateLimited => {
                if let CcError::RateLimited { error_key } = &err {
                    metrics().rate_limited.with_label_values(&[error_key]).inc();
                    ctx.gate.report_429(kind, error_key).await;
                }
            }
            RetryAction::Reject => return Err(Stop::Reject(err.to_string())),
            RetryAction::Halt => {
                tracing::error!(account, error = %err, "CC forbids the call; pausing");
                return Err(Stop::Pause(auth_pause(account)));
            }
            RetryAction::Retry => {
                tracing::warn!(account, kind = kind.as_str(), error = %err, "CC call failed; retrying");
                backoff_sleep(transient, deadline).await;
                transient += 1;
            }
        }
    }
}

fn auth_pause(account: &str) -> Pause {
    Pause::Auth {
        account: account.to_string(),
    }
}

async fn get_token(ctx: &Ctx, account: &str, deadline: Instant) -> Result<SecretString, Stop> {
    let mut n = 0;
    loop {
        match ctx.tokens.access_token(account).await {
            Ok(t) => return Ok(t),
            Err(TokenError::Dead(_)) => return Err(Stop::Pause(auth_pause(account))),
            Err(TokenError::Unavailable(e)) => {
                tracing::warn!(account, error = %e, "no access token yet; retrying");
                if Instant::now() >= deadline {
                    return Err(Stop::Deadline);
                }
                backoff_sleep(n, deadline).await;
                n += 1;
            }
        }
    }
}

/// Exponential backoff with jitter (0.5 s doubling to 30 s), never past the deadline.
async fn backoff_sleep(attempt: u32, deadline: Instant) {
    let base = Duration::from_millis(500) * 2u32.saturating_pow(attempt.min(6));
    let base = base.min(Duration::from_secs(30));
    let jitter = rand::random_range(0.8..1.2);
    let wait = base.mul_f64(jitter);
    let until = (Instant::now() + wait).min(deadline);
    tokio::time::sleep_until(until).await;
}

fn halves(mut chunk: Chunk) -> [Chunk; 2] {
    let b = chunk.split_off(chunk.len() / 2);
    [chunk, b]
}

async fn settle_stop(rest: Chunk, stop: Stop) -> Option<Pause> {
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

async fn ack_all(chunk: Chunk) {
    let m = metrics();
    for e in chunk {
        m.contacts_synced.inc();
        let n = e.tags.len() as u64;
        for h in e.tags {
            if let Err(err) = h.tag.ack().await {
                tracing::warn!(error = %err, "ack failed; the broker will redeliver (safe: imports are upserts)");
            }
        }
        m.messages.with_label_values(&["synced"]).inc();
        m.messages
            .with_label_values(&["superseded"])
            .inc_by(n.saturating_sub(1));
    }
}

async fn requeue_chunk(chunk: Chunk) {
    for e in chunk {
        requeue_tags(e.tags).await;
    }
}

async fn requeue_tags(tags: Vec<Held>) {
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

async fn dead_letter_chunk(settler: &Settler, chunk: Chunk, reason: &str, detail: &str) {
    for e in chunk {
        for h in e.tags {
            dead_letter(settler, &h.tag, &h.body, reason, detail).await;
        }
    }
}

/// Dead-letter one delivery; a failure leaves it unsettled (the broker redelivers it).
pub async fn dead_letter(settler: &Settler, tag: &Tag, body: &[u8], reason: &str, detail: &str) {
    let m = metrics();
    match settler.dead_letter(tag, body, reason, detail).await {
        Ok(()) => {
            m.messages.with_label_values(&["dead_lettered"]).inc();
            m.dead_letters.with_label_values(&[reason]).inc();
            tracing::info!(reason, detail, "message dead-lettered");
        }
        Err(e) => {
            tracing::warn!(error = %e, reason, "dead-letter publish failed; the message stays in the queue")
        }
    }
}

//! The opt-out feed (issue 15, item 3; DESIGN §5.1b "Events out"): people unsubscribe in CC
//! itself (the link in every email), CC has no webhook for it, and `updated_after` does not see
//! an email opt-out; `GET /contacts?status=unsubscribed&optout_after=` does (reference §5.4).
//! So one replica at a time polls that, per account, and publishes one `contact.unsubscribed`
//! event per opt-out to the events exchange; each opt-out also raises the ledger's `out` fact
//! ([`crate::ledger::Ledger::record_optout`]), so a replayed explicit sign-up from before it never
//! goes through `sign_up_form` again (it would re-subscribe the person, reference §5.1).
//!
//! # One replica at a time
//! Every worker runs [`Feed::run`]; the one that holds the lease in Redis
//! ([`crate::ledger::FeedStore`], [`LEASE`], renewed every third of it) polls; the others try
//! again every third of the lease, so a killed holder is replaced within one lease and a
//! stopped one (SIGTERM releases the lease) within a third of it. The cursor only moves under
//! the lease and its fencing number.
//!
//! # A poll, and when the cursor moves
//! An account is due when its last complete poll started `optouts.poll_secs` ago (the time is in
//! the cursor, so restarts and a new holder neither skip nor add polls). A poll asks for
//! `optout_after=<cursor>` and follows every `_links.next` page; each page's new opt-outs are
//! recorded in the ledger, then published, persistent, and the page's confirms awaited before the
//! next page is read. The cursor moves once, after the last page: CC documents no order for
//! `GET /contacts` (the simulator lists by email), so the newest opt-out date of one page says
//! nothing about the next. A poll cut short (a crash, a lost lease, CC or the broker failing)
//! leaves the cursor where it was; the next poll publishes those opt-outs again (at least once:
//! consumers dedupe on the event id, which is the same every time).
//!
//! The cursor is CC's own `opt_out_date` of the newest opt-out published (CC's clock, never
//! ours), sent back as `optout_after`, which is strict. Addresses whose opt-out date equals the
//! cursor exactly are kept (hashed) with it: if CC's `optout_after` compares coarser than the
//! dates it prints (or equal dates come back), those are skipped instead of published again at
//! every poll, and any other address at that date is still published ([`Position`]).
//!
//! An account without a cursor starts at `optouts.backfill_from`, or 5 minutes before the feed
//! first ran ([`FIRST_LOOK_BACK`], a margin for clock skew between CC and us), without a CC call;
//! its first poll follows one interval later.
//!
//! # Budget
//! Each poll is one `GET` per account (plus one per further 500 opt-outs) through the gate as
//! [`CallKind::Feed`], with the account's fair turn: counted in the daily quota, never from the
//! reserve kept for polls and look-ups (the cursor lets the feed catch up after 00:00 UTC).
//! With the default 900 s that is 96 requests a day per account.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use super::call::{Stop, call};
use super::ctx::Ctx;
use crate::config::Settings;
use crate::ledger::{FeedCursor, FeedLease, FeedStore};
use crate::queue::{Broker, Publisher};
use crate::ratelimit::CallKind;
use crate::telemetry::metrics;

mod position;

pub(crate) use position::{Position, event};

/// The routing key (and AMQP `type`) of the feed's events.
pub(crate) const ROUTING_KEY: &str = "contact.unsubscribed";

/// The feed lease: a killed holder is replaced within this long.
pub(crate) const LEASE: Duration = Duration::from_secs(15);

/// How far before its first run an account's feed starts when `optouts.backfill_from` is empty.
pub(crate) const FIRST_LOOK_BACK: Duration = Duration::from_secs(300);

/// The least the holder waits between two looks (a clock step must not make it spin).
const MIN_LOOK: Duration = Duration::from_millis(50);

/// How long a poll under way may still run after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The holder looks at which accounts are due at least this often (new accounts, a shorter
/// `poll_secs` than this is honoured as is).
const LOOK_EVERY: Duration = Duration::from_secs(10);

/// Which accounts to poll: those with a live token set (an account without one has nothing CC
/// would answer; its feed resumes from its cursor after the next login).
pub(crate) type Accounts = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// The opt-out feed of one worker.
pub(crate) struct Feed {
    ctx: Arc<Ctx>,
    store: Arc<FeedStore>,
    amqp: crate::config::AmqpEndpoint,
    exchange: String,
    poll: Duration,
    backfill_from: Option<OffsetDateTime>,
    accounts: Accounts,
}

/// Why a poll stopped short; the cursor stayed where it was.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("CC: {0:?}")]
    Cc(Stop),
    #[error("{0}")]
    Redis(#[from] crate::ledger::LedgerError),
    #[error("{0}")]
    Broker(#[from] crate::queue::QueueError),
    #[error("the feed lease was lost (another replica polls now)")]
    LeaseLost,
}

impl Feed {
    pub(crate) fn new(
        settings: &Settings,
        ctx: Arc<Ctx>,
        accounts: Accounts,
    ) -> Result<Feed, String> {
        Ok(Feed {
            ctx,
            store: Arc::new(FeedStore::connect(settings).map_err(|e| e.to_string())?),
            amqp: settings.amqp(),
            exchange: settings.events_exchange.clone(),
            poll: settings.optouts.poll,
            backfill_from: settings.optouts.backfill_from,
            accounts,
        })
    }

    /// Try for the lease until `shutdown`; poll while holding it.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.store.try_lease(LEASE.as_millis() as u64).await {
                Ok(Some(lease)) => self.lead(lease, &shutdown).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "opt-out feed: cannot reach Redis for the feed lease; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(LEASE / 3) => {}
            }
        }
    }

    /// Hold the lease (renewing it) and poll due accounts until it is lost or `shutdown`.
    async fn lead(&self, lease: FeedLease, shutdown: &CancellationToken) {
        tracing::info!(
            fence = lease.fence,
            "opt-out feed: this replica polls CC for opt-outs now"
        );
        metrics().set_optouts_leader(true);
        // `lost`: the lease is gone (stop at once: the cursor write would be refused anyway);
        // `done`: this term is over, the renewer stops.
        let (lost, done) = (CancellationToken::new(), CancellationToken::new());
        let renewer = {
            let (lost, done, lease, store) = (
                lost.clone(),
                done.clone(),
                lease.clone(),
                self.store.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = done.cancelled() => return,
                        _ = tokio::time::sleep(LEASE / 3) => {}
                    }
                    let why = match store.renew(&lease, LEASE.as_millis() as u64).await {
                        Ok(true) => continue,
                        Ok(false) => "the lease ran out".to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(reason = %why, "opt-out feed: cannot keep the lease; stepping down (another replica takes over)");
                    lost.cancel();
                    return;
                }
            })
        };
        // A poll under way when SIGTERM comes may finish (a graceful stop then neither repeats
        // nor skips an event), within `SHUTDOWN_GRACE`.
        let stopped = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::pin!(stopped);
        let mut publisher: Option<(Broker, Publisher)> = None;
        'term: while !lost.is_cancelled() && !shutdown.is_cancelled() {
            // The next look: when the first account is due, at most `LOOK_EVERY` away (accounts
            // that appear meanwhile), and a retry interval after a failed poll.
            let mut wait = LOOK_EVERY.min(self.poll);
            for account in (self.accounts)() {
                if shutdown.is_cancelled() {
                    break 'term;
                }
                let res = tokio::select! {
                    _ = lost.cancelled() => break 'term,
                    _ = &mut stopped => break 'term,
                    r = self.poll_if_due(&lease, &account, &mut publisher) => r,
                };
                match res {
                    Ok(due_in) => wait = wait.min(due_in),
                    Err(PollError::LeaseLost) => break 'term,
                    Err(PollError::Cc(Stop::Pause(p))) => tracing::info!(
                        account,
                        reason = p.reason(),
                        "opt-out feed: CC paused for this account; the next poll tries again"
                    ),
                    Err(e) => {
                        if matches!(e, PollError::Broker(_)) {
                            publisher = None;
                        }
                        tracing::warn!(account, error = %e, "opt-out feed: poll failed; the cursor stays and the next poll publishes these opt-outs again")
                    }
                }
            }
            tokio::select! {
                _ = lost.cancelled() => {}
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(wait.max(MIN_LOOK)) => {}
            }
        }
        done.cancel();
        let _ = renewer.await;
        if let Err(e) = self.store.release(&lease).await {
            tracing::debug!(error = %e, "opt-out feed: cannot release the lease; it runs out by itself");
        }
        if let Some((broker, _)) = publisher {
            broker.close().await;
        }
        metrics().set_optouts_leader(false);
    }

    /// Poll `account` if its interval has passed since its last complete poll; `Ok` says when
    /// it is due next.
    async fn poll_if_due(
        &self,
        lease: &FeedLease,
        account: &str,
        publisher: &mut Option<(Broker, Publisher)>,
    ) -> Result<Duration, PollError> {
        let now = crate::clock::now_utc();
        let now_ms = crate::contact::unix_ms(now);
        let Some(cursor) = self.store.cursor(account).await? else {
            let (start, polled_ms) = match self.backfill_from {
                // A backfill is due at once.
                Some(t) => (t, 0),
                None => (now - FIRST_LOOK_BACK, now_ms),
            };
            let first = FeedCursor {
                at: start.format(&Rfc3339).expect("formats"),
                ties: Vec::new(),
                polled_ms,
            };
            if !self.store.advance(lease, account, &first).await? {
                return Err(PollError::LeaseLost);
            }
            tracing::info!(account, from = %first.at, "opt-out feed: starting this account's feed");
            return Ok(self.due_in(polled_ms, now_ms));
        };
        if now_ms < cursor.polled_ms + self.poll.as_millis() as i64 {
            return Ok(self.due_in(cursor.polled_ms, now_ms));
        }
        metrics().know_account(account);
        let Some(mut pos) = Position::new(&cursor) else {
            // Only ccsync writes the cursor; an unreadable one means someone edited Redis.
            tracing::error!(account, at = %cursor.at, "opt-out feed: the cursor is not an RFC 3339 time; delete the key <prefix>:optouts:{{feed}}:cursor:<account> (and set CCSYNC_OPTOUTS__BACKFILL_FROM) to restart this account's feed");
            return Ok(self.poll);
        };
        let deadline = tokio::time::Instant::now() + self.poll.max(Duration::from_secs(120));
        let mut next: Option<String> = None;
        let mut published = 0u64;
        loop {
            let (api, since, href) = (&self.ctx.api, cursor.at.as_str(), next.as_deref());
            let page = call(
                &self.ctx,
                account,
                CallKind::Feed,
                deadline,
                |token| async move { api.optouts(&token, since, href).await },
            )
            .await
            .map_err(PollError::Cc)?;
            let fresh = pos.fresh(account, page.contacts);
            if !fresh.is_empty() {
                for (o, at) in &fresh {
                    self.ctx
                        .ledger
                        .record_optout(
                            account,
                            &o.email.to_lowercase(),
                            crate::contact::unix_ms(*at),
                        )
                        .await?;
                }
                let events: Vec<(String, Vec<u8>)> =
                    fresh.iter().map(|(o, at)| event(account, o, *at)).collect();
                self.publisher(publisher)
                    .await?
                    .publish_events(&self.exchange, ROUTING_KEY, &events)
                    .await?;
                metrics().optouts_published(account, events.len() as u64);
                published += events.len() as u64;
                for (o, at) in &fresh {
                    pos.note(account, o, *at);
                }
            }
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }
        let done = crate::clock::now_utc();
        if !self
            .store
            .advance(lease, account, &pos.cursor(now_ms))
            .await?
        {
            return Err(PollError::LeaseLost);
        }
        let m = metrics();
        m.optouts_polled(account, done.unix_timestamp());
        if published > 0 {
            m.set_optouts_lag(account, (done - pos.newest).as_seconds_f64().max(0.0));
            tracing::info!(account, published, "opt-out feed: published CC's opt-outs");
        }
        Ok(self.due_in(now_ms, crate::contact::unix_ms(crate::clock::now_utc())))
    }

    /// From `now_ms` until a poll interval after `polled_ms`.
    fn due_in(&self, polled_ms: i64, now_ms: i64) -> Duration {
        let due = polled_ms + self.poll.as_millis() as i64;
        Duration::from_millis((due - now_ms).max(0) as u64)
    }

    /// The confirm-mode channel, (re)connected and the exchange declared when needed.
    async fn publisher<'a>(
        &self,
        slot: &'a mut Option<(Broker, Publisher)>,
    ) -> Result<&'a Publisher, PollError> {
        if slot
            .as_ref()
            .is_some_and(|(b, p)| !b.is_connected() || !p.is_open())
        {
            *slot = None;
        }
        if slot.is_none() {
            let broker = Broker::connect(&self.amqp).await?;
            broker.declare_events(&self.exchange).await?;
            let p = broker.publisher().await?;
            *slot = Some((broker, p));
        }
        Ok(&slot.as_ref().expect("set above").1)
    }
}

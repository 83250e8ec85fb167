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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use super::call::{Stop, call};
use super::ctx::Ctx;
use crate::cc::api::OptOut;
use crate::config::Settings;
use crate::ledger::{FeedCursor, FeedLease, FeedStore};
use crate::queue::{Broker, Publisher};
use crate::ratelimit::CallKind;
use crate::telemetry::metrics;

/// The routing key (and AMQP `type`) of the feed's events.
pub const ROUTING_KEY: &str = "contact.unsubscribed";

/// The feed lease: a killed holder is replaced within this long.
pub const LEASE: Duration = Duration::from_secs(15);

/// How far before its first run an account's feed starts when `optouts.backfill_from` is empty.
pub const FIRST_LOOK_BACK: Duration = Duration::from_secs(300);

/// The least the holder waits between two looks (a clock step must not make it spin).
const MIN_LOOK: Duration = Duration::from_millis(50);

/// How long a poll under way may still run after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The holder looks at which accounts are due at least this often (new accounts, a shorter
/// `poll_secs` than this is honoured as is).
const LOOK_EVERY: Duration = Duration::from_secs(10);

/// Which accounts to poll: those with a live token set (an account without one has nothing CC
/// would answer; its feed resumes from its cursor after the next login).
pub type Accounts = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// The opt-out feed of one worker.
pub struct Feed {
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
    pub fn new(settings: &Settings, ctx: Arc<Ctx>, accounts: Accounts) -> Result<Feed, String> {
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
    pub async fn run(self, shutdown: CancellationToken) {
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
        metrics().optouts_leader.set(1);
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
        metrics().optouts_leader.set(0);
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
                if let Some(ledger) = &self.ctx.ledger {
                    for (o, at) in &fresh {
                        ledger
                            .record_optout(
                                account,
                                &o.email.to_lowercase(),
                                crate::contact::unix_ms(*at),
                            )
                            .await?;
                    }
                }
                let events: Vec<(String, Vec<u8>)> =
                    fresh.iter().map(|(o, at)| event(account, o, *at)).collect();
                self.publisher(publisher)
                    .await?
                    .publish_events(&self.exchange, ROUTING_KEY, &events)
                    .await?;
                metrics()
                    .optouts_published
                    .with_label_values(&[account])
                    .inc_by(events.len() as u64);
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
        m.optouts_last_poll
            .with_label_values(&[account])
            .set(done.unix_timestamp() as f64);
        if published > 0 {
            m.optouts_lag
                .with_label_values(&[account])
                .set((done - pos.newest).as_seconds_f64().max(0.0));
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

/// The `contact.unsubscribed` event for one opt-out: its id and JSON body (DESIGN §5.1b). The id
/// is derived from account, address (lower-cased) and opt-out time, so the same opt-out always
/// carries the same id, however often it is published.
pub fn event(account: &str, o: &OptOut, at: OffsetDateTime) -> (String, Vec<u8>) {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!(
            "contact.unsubscribed\n{account}\n{}\n{}",
            o.email.to_lowercase(),
            at.unix_timestamp_nanos()
        )
        .as_bytes(),
    );
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    let id = uuid::Builder::from_custom_bytes(b).into_uuid().to_string();
    let body = json!({
        "type": ROUTING_KEY,
        "version": 1,
        "id": id,
        "occurred_at": o.opt_out_date,
        "account": account,
        "contact": {"email": o.email},
        "source": "constant_contact",
        "opt_out_source": o.source,
        "reason": o.reason,
    });
    (id, serde_json::to_vec(&body).expect("serializes"))
}

/// Where one poll stands: the newest opt-out date published so far (starting at the cursor) and
/// the addresses published with exactly that date; pure, so the tie rules are unit-tested.
#[derive(Debug, Clone)]
pub struct Position {
    /// The newest opt-out time published (or the cursor's).
    pub newest: OffsetDateTime,
    /// That time as CC wrote it (sent back as `optout_after`).
    raw: String,
    /// [`FeedStore::tie`] of the addresses published with exactly `newest`.
    ties: HashSet<String>,
    /// The cursor's time and ties, which this poll must not publish again.
    start: (OffsetDateTime, HashSet<String>),
    /// (tie, time) of everything this poll published: pages may repeat a contact.
    seen: HashSet<(String, i128)>,
}

impl Position {
    /// `None` when the cursor's time is not RFC 3339.
    pub fn new(c: &FeedCursor) -> Option<Position> {
        let at = OffsetDateTime::parse(&c.at, &Rfc3339).ok()?;
        let ties: HashSet<String> = c.ties.iter().cloned().collect();
        Some(Position {
            newest: at,
            raw: c.at.clone(),
            ties: ties.clone(),
            start: (at, ties),
            seen: HashSet::new(),
        })
    }

    /// The opt-outs of a page to publish, with their parsed times: not published by an earlier
    /// poll (at the cursor's exact date and among its ties) nor earlier in this one. An opt-out
    /// whose date CC wrote unreadably cannot be placed and is skipped with a warning.
    pub fn fresh(&self, account: &str, page: Vec<OptOut>) -> Vec<(OptOut, OffsetDateTime)> {
        let mut out = Vec::new();
        let mut in_page = HashSet::new();
        for o in page {
            let Ok(at) = OffsetDateTime::parse(&o.opt_out_date, &Rfc3339) else {
                tracing::warn!(account, date = %o.opt_out_date, "opt-out feed: CC returned an opt-out date that is not RFC 3339; skipped");
                continue;
            };
            let tie = FeedStore::tie(account, &o.email);
            if at == self.start.0 && self.start.1.contains(&tie) {
                continue;
            }
            let key = (tie, at.unix_timestamp_nanos());
            if self.seen.contains(&key) || !in_page.insert(key) {
                continue;
            }
            out.push((o, at));
        }
        out
    }

    /// `o`, dated `at`, was published (confirmed). The cursor keeps CC's spelling of the newest
    /// date: sent back as `optout_after`, it has exactly the precision CC compares with.
    pub fn note(&mut self, account: &str, o: &OptOut, at: OffsetDateTime) {
        let tie = FeedStore::tie(account, &o.email);
        self.seen.insert((tie.clone(), at.unix_timestamp_nanos()));
        if at > self.newest {
            self.newest = at;
            self.raw = o.opt_out_date.clone();
            self.ties.clear();
        }
        if at == self.newest {
            self.ties.insert(tie);
        }
    }

    /// The cursor after a complete poll that started at `polled_ms`.
    pub fn cursor(&self, polled_ms: i64) -> FeedCursor {
        let mut ties: Vec<String> = self.ties.iter().cloned().collect();
        ties.sort();
        FeedCursor {
            at: self.raw.clone(),
            ties,
            polled_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(email: &str, at: &str) -> OptOut {
        OptOut {
            email: email.into(),
            opt_out_date: at.into(),
            source: Some("Contact".into()),
            reason: None,
        }
    }

    const T0: &str = "2026-11-23T10:00:00Z";
    const T1: &str = "2026-11-23T10:00:01Z";

    /// One poll: publish what [`Position::fresh`] returns, note it, return the next cursor.
    fn poll(c: &FeedCursor, pages: Vec<Vec<OptOut>>) -> (Vec<String>, FeedCursor) {
        let mut pos = Position::new(c).unwrap();
        let mut out = Vec::new();
        for page in pages {
            for (x, at) in pos.fresh("default", page) {
                out.push(x.email.clone());
                pos.note("default", &x, at);
            }
        }
        (out, pos.cursor(1))
    }

    fn start(at: &str) -> FeedCursor {
        FeedCursor {
            at: at.into(),
            ties: vec![],
            polled_ms: 0,
        }
    }

    #[test]
    fn the_cursor_moves_to_the_newest_date_of_the_whole_poll_whatever_the_page_order() {
        // CC lists in no documented order: the newest date may come on the first page.
        let (out, c) = poll(
            &start(T0),
            vec![
                vec![o("z@x.co", T1)],
                vec![o("a@x.co", "2026-11-23T10:00:00.500Z")],
            ],
        );
        assert_eq!(out, ["z@x.co", "a@x.co"]);
        assert_eq!(c.at, T1, "CC's spelling of the newest date");
        assert_eq!(c.ties, vec![FeedStore::tie("default", "z@x.co")]);
    }

    #[test]
    fn equal_dates_at_the_cursor_are_neither_lost_nor_published_again() {
        let (out, c) = poll(&start(T0), vec![vec![o("a@x.co", T1), o("b@x.co", T1)]]);
        assert_eq!(out.len(), 2);
        assert_eq!(c.ties.len(), 2);
        // CC compares coarser than it prints (or returns equal dates again): the two come back
        // with a third address at the same date, which was not visible before.
        let (out, c2) = poll(
            &c,
            vec![vec![o("a@x.co", T1), o("B@x.co", T1), o("c@x.co", T1)]],
        );
        assert_eq!(out, ["c@x.co"], "only the new one, case-insensitively");
        assert_eq!(c2.at, T1);
        assert_eq!(c2.ties.len(), 3);
        // Nothing new: nothing published, the cursor stays (no endless repeat).
        let (out, c3) = poll(&c2, vec![vec![o("a@x.co", T1), o("c@x.co", T1)]]);
        assert!(out.is_empty());
        assert_eq!((c3.at.as_str(), c3.ties.len()), (T1, 3));
    }

    #[test]
    fn an_address_that_opts_out_again_later_is_published_again() {
        let (_, c) = poll(&start(T0), vec![vec![o("a@x.co", T1)]]);
        let later = "2026-11-24T08:00:00Z";
        let (out, c2) = poll(&c, vec![vec![o("a@x.co", later)]]);
        assert_eq!(out, ["a@x.co"]);
        assert_eq!(c2.at, later);
    }

    #[test]
    fn pages_that_repeat_a_contact_publish_it_once() {
        let (out, _) = poll(
            &start(T0),
            vec![
                vec![o("a@x.co", T1), o("a@x.co", T1)],
                vec![o("a@x.co", T1)],
            ],
        );
        assert_eq!(out, ["a@x.co"]);
    }

    #[test]
    fn an_unreadable_date_is_skipped_and_does_not_move_the_cursor() {
        let (out, c) = poll(&start(T0), vec![vec![o("a@x.co", "yesterday")]]);
        assert!(out.is_empty());
        assert_eq!(c, start(T0).clone_with_polled(1));
    }

    #[test]
    fn the_event_id_is_the_same_for_the_same_opt_out_and_differs_otherwise() {
        let at = OffsetDateTime::parse(T1, &Rfc3339).unwrap();
        let (id, body) = event("default", &o("Ada@x.co", T1), at);
        assert_eq!(id, event("default", &o("ada@x.co", T1), at).0);
        assert_ne!(id, event("acme", &o("ada@x.co", T1), at).0);
        let later = at + Duration::from_secs(1);
        assert_ne!(id, event("default", &o("ada@x.co", T1), later).0);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "contact.unsubscribed");
        assert_eq!(v["version"], 1);
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["occurred_at"], T1);
        assert_eq!(v["account"], "default");
        assert_eq!(v["contact"]["email"], "Ada@x.co");
        assert_eq!(v["source"], "constant_contact");
        assert_eq!(v["opt_out_source"], "Contact");
        assert!(v["reason"].is_null());
        assert!(uuid::Uuid::parse_str(&id).is_ok());
    }

    impl FeedCursor {
        fn clone_with_polled(&self, polled_ms: i64) -> FeedCursor {
            FeedCursor {
                polled_ms,
                ..self.clone()
            }
        }
    }
}

//! The newest-event ledger shared by all replicas (DESIGN §2 "the newest event wins, across
//! batches and replicas"). A Redis room, like `auth` and `ratelimit`.
//!
//! Per (account, email) it keeps a hash, named by a SHA-256 of account and email (Redis never
//! holds an address in clear):
//! * `…:f:<h>`: field name → the newest `occurred_at` (ms) that set this field, applied or in
//!   flight, with a TTL (`LEDGER_TTL`, longer than any redelivery cycle). Fields are tracked one
//!   by one, so the outcome equals applying every event in `occurred_at` order whatever order the
//!   events arrive, batch or replica they travel in — the same field-by-field rule the batcher's
//!   coalescing uses inside one batch;
//! * in the same hash, `!fly`: the owner (one claim round of one batch) whose call currently
//!   carries this email. It holds only while the owner's liveness key `…:live:<owner>` exists
//!   (on a cluster one per hash tag, beside the hashes), a short lease
//!   (`worker.claim_lease_secs`) that the sender renews every third of the lease for as long as
//!   its import is in flight ([`Ledger::renew`]), even past the worker's hold bound (the
//!   deliveries go back to the queue, the claim stays until CC settles the import), and that
//!   expires on its own if the replica dies, so a restarted or other replica takes the email over
//!   within seconds. (After such a death CC may still be processing the dead replica's import; the
//!   next import of those emails can then overlap it once — the price of not waiting a whole hold
//!   bound after every crash.) Ending a claim is one `DEL` of the liveness key, whatever the
//!   import's size ([`Ledger::release`]); a `!fly` naming an owner without one is free.
//!
//! Releases before 2026-12-08 kept the lease in a key of its own (`…:fly:<h>`). During a rolling
//! upgrade from one of them, an old and a new replica do not see each other's leases: each email
//! can then have two imports in flight once (the fields each sends were still checked against
//! the newest event). Scale to zero and back to rule that out (messages wait in the queue).
//!
//! Before an import, a sender *claims* its contacts in one atomic Lua call. Each contact gets:
//! * `Go { stale }`: send it, without the fields in `stale` (a newer event already set them; ties
//!   go to the later delivery). List memberships always go (imports never remove a list).
//! * `Busy`: another import carrying this email is in flight → not sent now; the sender retries the
//!   claim after its current import settles, so no two imports with the same email are ever in
//!   flight at once, and no replica waits while holding claims (no deadlock).
//!
//! The alternative, partitioning the queue by email with a consistent-hash exchange, would change
//! the publishing contract (default exchange, routing key = queue), so ccsync does not use it.
//!
//! # Consent (issue 15, DESIGN §5.1b)
//! The same claim carries the consent actions ([`Kind`]), so unsubscribes, list removals and
//! deletes are ordered against upserts by `occurred_at` exactly like fields are. Besides the
//! per-field times, the field hash keeps per list `+<list>` (the newest upsert that added it) and
//! `-<list>` (the newest removal), `!up` (the newest upsert) and `!in` (the newest explicit
//! consent sent through `sign_up_form`), all with the field hash's [`LEDGER_TTL`]. A second key,
//! `…:c:<h>`, written only by consent events, keeps two facts for [`CONSENT_TTL`] (much longer:
//! a dead letter replayed months later must still meet the opt-out it predates):
//! * `out`: the newest known opt-out (a `contact.unsubscribe`, or CC's own from the opt-out feed,
//!   [`Ledger::record_optout`]);
//! * `del`: the newest delete (or an unsubscribe of a contact CC did not have,
//!   [`Ledger::record_floor`]): nothing older may bring the contact back.
//!
//! The rules, each "newest `occurred_at` wins":
//! * an upsert older than `del` is superseded whole (not sent: it would revive the contact); its
//!   fields older than `del` are stale; a list removed (`-l`) after it is not re-added; an
//!   explicit one older than `out` must not go through `sign_up_form` (it would re-subscribe:
//!   reference §5.1) — its fields may still be imported;
//! * an unsubscribe older than `in` (the person opted in again later) or than `del` is
//!   superseded;
//! * a list removal older than `del` is superseded; a list re-added (`+l`) after it stays;
//! * a delete older than `up` (a newer upsert exists) is superseded.
//!
//! # The opt-out feed's state
//! [`FeedStore`] (`ledger/feed.rs`) keeps the feed's lease and per-account cursors; the feed
//! ([`crate::pipeline::optouts`]) raises `out` through [`Ledger::record_optout`].

mod feed;

pub(crate) use feed::{FeedCursor, FeedLease, FeedStore};

mod claims;
mod keys;
mod rules;
#[cfg(test)]
mod tests;

pub use claims::{Claim, Event, Go, Kind, Outcome, Verdict};

use std::time::Duration;

use crate::config::Settings;

/// How long the ledger remembers an email's newest event.
pub(crate) const LEDGER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long the consent facts (`out`, `del`) are kept after their last change: 400 days, beyond
/// a year of dead-letter retention and replays. One small hash per email that ever had a consent
/// event (upserts alone never create it).
pub(crate) const CONSENT_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// Redis unavailable: the caller retries later (it never sends unclaimed contacts).
#[derive(Debug, thiserror::Error)]
#[error("ordering ledger unavailable (Redis): {0}")]
pub struct LedgerError(String);

pub struct Ledger {
    pool: crate::redis::Redis,
    prefix: String,
    lease: Duration,
    /// On Redis Cluster the keys carry a hash tag (see [`Ledger::key`]) and each script call
    /// takes the events of one tag only, so its keys share a slot.
    cluster: bool,
}

impl Ledger {
    pub fn connect(settings: &Settings) -> Result<Ledger, LedgerError> {
        let pool =
            crate::redis::Redis::from_settings(settings).map_err(|e| LedgerError(e.to_string()))?;
        Ok(Ledger {
            cluster: pool.is_cluster(),
            pool,
            prefix: format!("{}:ledger", settings.redis.key_prefix),
            lease: settings.worker.claim_lease,
        })
    }

    /// How long a claim survives without renewal (`worker.claim_lease_secs`).
    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    /// Forget every email this prefix's ledger remembers (a benchmark's or a test's own prefix
    /// when it is done: a 200,000-contact run leaves 200,000 keys for `LEDGER_TTL` otherwise).
    /// Incremental `SCAN` + `UNLINK`, so Redis keeps answering other clients meanwhile (one
    /// `KEYS` over millions of keys blocks it for seconds). Returns how many keys went.
    pub async fn forget_all(&self) -> Result<u64, LedgerError> {
        self.pool
            .unlink_matching(&format!("{}:*", self.prefix))
            .await
            .map_err(|e| LedgerError(e.to_string()))
    }
}

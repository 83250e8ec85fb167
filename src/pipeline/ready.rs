//! Batches ready to send, handed to sender slots fairly between CC accounts (issue 13).
//!
//! Every account may keep `worker.max_activities_in_flight` imports in flight (CC's limit of
//! queued activities is per account, reference §4), and when a slot is free the next batch comes
//! from the account furthest behind its weighted share ([`Shares`]), charged with what the batch
//! costs in requests. So a 50,000-contact backlog of one account fills its own slots and its
//! own queue of ready batches, and another account's sign-up batch goes to a free slot of its own
//! at once, ahead of the backlog's next batch; at the gate the two then take turns
//! ([`crate::ratelimit::FairTurns`]).
//!
//! Also when a due partial batch becomes ready while the prefetch window is full ([`release_at`]).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::batch::{Coalesce, Pace};
use crate::contact::Contact;
use crate::ratelimit::Shares;

use super::ContactBatch;

pub(super) struct Ready {
    queues: HashMap<String, VecDeque<(Instant, ContactBatch)>>,
    /// Accounts with ready batches, in the order they got them (ties of the shares go first come).
    order: Vec<String>,
    in_flight: HashMap<String, usize>,
    shares: Shares<String>,
    len: usize,
}

impl Ready {
    pub(super) fn new(weights: HashMap<String, f64>) -> Ready {
        Ready {
            queues: HashMap::new(),
            order: Vec::new(),
            in_flight: HashMap::new(),
            shares: Shares::with_weights(weights),
            len: 0,
        }
    }

    pub(super) fn push(&mut self, b: ContactBatch, now: Instant) {
        let account = b.group.0.clone();
        let q = self.queues.entry(account.clone()).or_default();
        if q.is_empty() && !self.order.contains(&account) {
            self.order.push(account);
        }
        q.push_back((now, b));
        self.len += 1;
    }

    pub(super) fn extend(&mut self, batches: impl IntoIterator<Item = ContactBatch>) {
        let now = Instant::now();
        for b in batches {
            self.push(b, now);
        }
    }

    /// The next batch for a free sender slot: from the account furthest behind its share among
    /// those with fewer than `per_account` batches in flight. The batch counts as in flight
    /// until [`Ready::done`].
    pub(super) fn next(&mut self, per_account: usize, pace: &Pace) -> Option<ContactBatch> {
        let account = {
            let eligible = self
                .order
                .iter()
                .filter(|a| self.in_flight.get(*a).copied().unwrap_or(0) < per_account);
            self.shares.next(eligible)?.clone()
        };
        let q = self
            .queues
            .get_mut(&account)
            .expect("ordered accounts have batches");
        let (_, b) = q.pop_front().expect("ordered accounts have batches");
        if q.is_empty() {
            self.queues.remove(&account);
            self.order.retain(|a| a != &account);
        }
        self.len -= 1;
        let cost = pace.requests(Contact::cost(&b.group), b.entries.len());
        self.shares.charge(&account, cost);
        *self.in_flight.entry(account).or_default() += 1;
        Some(b)
    }

    /// A batch of `account` handed out by [`Ready::next`] is settled.
    pub(super) fn done(&mut self, account: &str) {
        if let Some(n) = self.in_flight.get_mut(account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(account);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// How long the oldest ready batch has waited for a slot.
    pub(super) fn oldest_wait(&self, now: Instant) -> Duration {
        self.queues
            .values()
            .filter_map(|q| q.front())
            .map(|(at, _)| now.saturating_duration_since(*at))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Every batch not yet handed out (shutdown, pause).
    pub(super) fn drain(&mut self) -> Vec<ContactBatch> {
        self.order.clear();
        self.len = 0;
        self.queues
            .drain()
            .flat_map(|(_, q)| q.into_iter().map(|(_, b)| b))
            .collect()
    }
}

/// After an import of this worker settles while its deliveries filled the prefetch window, how
/// long a partial batch that is due waits for the broker to refill the window (the acks go out,
/// the broker pushes the next deliveries) before it leaves as it is. See [`release_at`].
pub(super) const REFILL_GRACE: Duration = Duration::from_secs(2);

/// When the batcher's next due batch (`due`) should leave.
///
/// A partial batch leaves on its linger. But while this worker's held deliveries fill the
/// prefetch window (or its byte budget) and one of its imports is in flight, the deliveries that
/// would fill that batch are waiting at the broker, held back only by our own unacked window:
/// a batch sent now leaves half full and costs a request the backlog did not need (issue 18: 9
/// imports where 7 carry the payload). So it waits until that import settles, plus
/// [`REFILL_GRACE`] for the refill, and leaves full if the refill fills it. The wait is capped
/// past its due time at `worker.linger_max_ms` (the longest an operator lets a batch wait) and at
/// a quarter of `worker.max_hold_secs` (its deliveries keep most of the hold bound for their own
/// import). A trickle never fills the window: nothing changes for it.
pub(super) fn release_at(
    due: Instant,
    window_full_and_busy: bool,
    refill_until: Option<Instant>,
    cap: Duration,
) -> Instant {
    let wanted = if window_full_and_busy {
        due + cap
    } else {
        refill_until.map_or(due, |r| due.max(r))
    };
    wanted.min(due + cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::contact::{Action, Consent};

    fn batch(account: &str, consent: Consent) -> ContactBatch {
        Batch {
            group: (account.to_string(), Vec::new(), consent, Action::Upsert),
            entries: Vec::new(),
        }
    }

    fn pace() -> Pace {
        Pace {
            calls_per_batch: 3.0,
            ..Pace::fixed(Duration::ZERO)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_fills_its_own_slots_and_a_trickle_goes_next() {
        let mut r = Ready::new(HashMap::new());
        let now = Instant::now();
        for _ in 0..20 {
            r.push(batch("backlog", Consent::Implicit), now);
        }
        // The backlog takes its 4 slots, no more.
        let mut sent = Vec::new();
        while let Some(b) = r.next(4, &pace()) {
            sent.push(b.group.0);
        }
        assert_eq!(sent, vec!["backlog"; 4]);
        // A trickle batch arrives: it gets a slot of its own at once.
        r.push(batch("trickle", Consent::Implicit), now);
        assert_eq!(r.next(4, &pace()).unwrap().group.0, "trickle");
        // One backlog batch settles: the slot goes to the backlog again (the trickle has none).
        r.done("backlog");
        assert_eq!(r.next(4, &pace()).unwrap().group.0, "backlog");
        assert!(r.next(4, &pace()).is_none());
        assert_eq!(r.len(), 15);
    }

    #[tokio::test(start_paused = true)]
    async fn with_slots_free_two_accounts_alternate_by_cost_and_weight() {
        let mut r = Ready::new([("a".to_string(), 2.0)].into_iter().collect());
        let now = Instant::now();
        for _ in 0..6 {
            r.push(batch("a", Consent::Implicit), now);
            r.push(batch("b", Consent::Implicit), now);
        }
        let order: Vec<String> = (0..6)
            .map(|_| {
                let b = r.next(100, &pace()).unwrap();
                b.group.0
            })
            .collect();
        let a = order.iter().filter(|x| *x == "a").count();
        assert_eq!(
            a, 4,
            "weight 2 sends two batches for each of weight 1: {order:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn oldest_wait_and_drain() {
        let mut r = Ready::new(HashMap::new());
        r.push(batch("a", Consent::Implicit), Instant::now());
        tokio::time::advance(Duration::from_secs(7)).await;
        r.push(batch("b", Consent::Explicit), Instant::now());
        assert_eq!(r.oldest_wait(Instant::now()), Duration::from_secs(7));
        assert_eq!(r.drain().len(), 2);
        assert_eq!(r.len(), 0);
        assert!(r.next(4, &pace()).is_none());
    }

    const CAP: Duration = Duration::from_secs(375);

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_leaves_on_its_linger_unless_the_window_is_full_and_an_import_in_flight()
     {
        let due = Instant::now() + Duration::from_secs(5);
        // A trickle (window not full) or nothing in flight: the linger decides.
        assert_eq!(release_at(due, false, None, CAP), due);
        // Full window and an import in flight: it waits for that import, at most the cap.
        assert_eq!(release_at(due, true, None, CAP), due + CAP);
        // The import settled: a refill grace past the linger, never past the cap.
        let r = due + REFILL_GRACE;
        assert_eq!(release_at(due, false, Some(r), CAP), r);
        let early = due - Duration::from_secs(1);
        assert_eq!(release_at(due, false, Some(early), CAP), due);
        let late = due + CAP + Duration::from_secs(60);
        assert_eq!(release_at(due, false, Some(late), CAP), due + CAP);
    }
}

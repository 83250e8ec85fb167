//! Fair shares of one API key between CC accounts (issue 13).
//!
//! CC's limits are per API key, across every account an integrator serves (reference
//! `constant-contact-v3.md` §4): one account's backlog could otherwise take the whole 4 requests/s
//! while another account's sign-up waits behind it. Two places take turns between accounts, both
//! with the same rule ([`Shares`]):
//!
//! * **requests** ([`FairTurns`]): callers of this process wait for the shared gate one at a time,
//!   and when several accounts are waiting the next turn goes to the account furthest behind its
//!   share;
//! * **batches** (the worker's ready batches and sender slots, `pipeline`): the next batch to send
//!   comes from the account furthest behind, charged with what the batch costs in requests.
//!
//! # The rule: weighted virtual time (start-time fair queuing)
//!
//! Each account has a virtual clock that advances by `cost / weight` for every turn it takes
//! (`weight` from `[accounts.<name>] weight`, default 1). The next turn goes to the waiting
//! account with the earliest clock. An account that was idle does not bank credit: when it comes
//! back its clock is moved up to the clock of the last turn given ([`Shares::pick`]), so an idle
//! account's share goes to the others while it is idle and it gets its own share, no more, when it
//! returns. With accounts A (weight 2) and B (weight 1) both busy, A takes two turns for each of
//! B's; with only A busy, A takes every turn.
//!
//! Across replicas each process is fair on its own; the broker spreads every account's messages
//! over the replicas, so the shares add up to a fair share of the key (the shared GCRA in Redis
//! still bounds the sum).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{CallKind, Gate, RateLimitError};

/// Weighted virtual clocks, one per account (see the module docs). Pure: no IO, no time.
#[derive(Debug, Clone)]
pub struct Shares<K: Eq + Hash + Clone> {
    clocks: HashMap<K, f64>,
    weights: HashMap<K, f64>,
    /// The clock of the last turn given: where an account coming back from idle starts.
    now: f64,
}

impl<K: Eq + Hash + Clone> Default for Shares<K> {
    fn default() -> Self {
        Shares {
            clocks: HashMap::new(),
            weights: HashMap::new(),
            now: 0.0,
        }
    }
}

impl<K: Eq + Hash + Clone> Shares<K> {
    /// Shares with these weights; accounts not named weigh 1.
    pub(crate) fn with_weights(weights: HashMap<K, f64>) -> Self {
        Shares {
            weights: weights
                .into_iter()
                .filter(|(_, w)| w.is_finite() && *w > 0.0)
                .collect(),
            ..Shares::default()
        }
    }

    pub(crate) fn weight(&self, k: &K) -> f64 {
        self.weights.get(k).copied().unwrap_or(1.0)
    }

    /// An account's clock as a waiting account sees it: never behind the last turn given.
    fn start(&self, k: &K) -> f64 {
        self.clocks.get(k).copied().unwrap_or(0.0).max(self.now)
    }

    /// Which of the `waiting` accounts has the next turn (the earliest clock; ties go to the
    /// first named, so callers pass them in arrival order). `None` when nobody waits.
    pub fn next<'a>(&self, waiting: impl IntoIterator<Item = &'a K>) -> Option<&'a K>
    where
        K: 'a,
    {
        let mut best: Option<(&'a K, f64)> = None;
        for k in waiting {
            let s = self.start(k);
            if best.is_none_or(|(_, b)| s < b) {
                best = Some((k, s));
            }
        }
        best.map(|(k, _)| k)
    }

    /// Give `k` a turn worth `cost` (requests): its clock moves on by `cost / weight`.
    pub(crate) fn charge(&mut self, k: &K, cost: f64) {
        let start = self.start(k);
        let cost = if cost.is_finite() && cost > 0.0 {
            cost
        } else {
            0.0
        };
        self.now = start;
        self.clocks.insert(k.clone(), start + cost / self.weight(k));
    }

    /// [`Shares::next`] and [`Shares::charge`] in one step.
    #[cfg(test)]
    pub(crate) fn pick<'a>(
        &mut self,
        waiting: impl IntoIterator<Item = &'a K>,
        cost: f64,
    ) -> Option<K>
    where
        K: 'a,
    {
        let k = self.next(waiting)?.clone();
        self.charge(&k, cost);
        Some(k)
    }
}

/// Waiters of one process for the shared gate, served one at a time by [`Shares`] (see the
/// module docs). Cancellation-safe: a caller dropped while waiting, or while holding the turn,
/// hands the turn on.
pub struct FairTurns {
    state: Arc<Mutex<TurnState>>,
}

#[derive(Default)]
struct TurnState {
    busy: bool,
    shares: Shares<String>,
    /// Waiting callers per account, oldest first; accounts in the order they started waiting.
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    order: Vec<String>,
}

impl TurnState {
    /// Hand the turn to the next waiter, or mark it free.
    fn pass(&mut self) {
        loop {
            let Some(account) = self.shares.next(self.order.iter()).cloned() else {
                self.busy = false;
                return;
            };
            let queue = self
                .waiting
                .get_mut(&account)
                .expect("waiting accounts have a queue");
            let tx = queue.pop_front().expect("waiting accounts have a waiter");
            if queue.is_empty() {
                self.waiting.remove(&account);
                self.order.retain(|a| a != &account);
            }
            if tx.send(()).is_ok() {
                self.shares.charge(&account, 1.0);
                return;
            }
            // That waiter was cancelled: try the next one.
        }
    }
}

/// Holding the turn; dropping it hands the turn on.
struct Turn(Arc<Mutex<TurnState>>);

impl Drop for Turn {
    fn drop(&mut self) {
        self.0.lock().expect("not poisoned").pass();
    }
}

/// Waiting for the turn; if dropped after the turn was handed to it, hands it on.
struct Waiting(Option<oneshot::Receiver<()>>, Arc<Mutex<TurnState>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.0.take()
            && rx.try_recv().is_ok()
        {
            self.1.lock().expect("not poisoned").pass();
        }
    }
}

impl FairTurns {
    /// Turns with these per-account weights (accounts not named weigh 1).
    pub(crate) fn new(weights: HashMap<String, f64>) -> FairTurns {
        FairTurns {
            state: Arc::new(Mutex::new(TurnState {
                shares: Shares::with_weights(weights),
                ..TurnState::default()
            })),
        }
    }

    /// Wait for `account`'s turn, then for the gate. Errs as the gate does.
    pub(crate) async fn acquire(
        &self,
        gate: &dyn Gate,
        account: &str,
        kind: CallKind,
    ) -> Result<(), RateLimitError> {
        let _turn = self.turn(account).await;
        let r = gate.acquire(kind).await;
        if r.is_ok() {
            crate::telemetry::metrics().request_granted(account);
        }
        r
    }

    async fn turn(&self, account: &str) -> Turn {
        let rx = {
            let mut s = self.state.lock().expect("not poisoned");
            if !s.busy {
                s.busy = true;
                s.shares.charge(&account.to_string(), 1.0);
                return Turn(self.state.clone());
            }
            let (tx, rx) = oneshot::channel();
            if !s.waiting.contains_key(account) {
                s.order.push(account.to_string());
            }
            s.waiting
                .entry(account.to_string())
                .or_default()
                .push_back(tx);
            rx
        };
        let mut w = Waiting(Some(rx), self.state.clone());
        let rx = w.0.as_mut().expect("set above");
        // The sender is only dropped after a successful send or when the state is dropped, and
        // the state lives as long as `self`.
        let _ = rx.await;
        w.0 = None;
        Turn(self.state.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn two_busy_accounts_alternate_and_weights_scale_the_turns() {
        let mut s: Shares<&str> = Shares::default();
        let waiting = ["a", "b"];
        let turns: Vec<&str> = (0..6)
            .map(|_| s.pick(waiting.iter(), 1.0).unwrap())
            .collect();
        assert_eq!(turns, ["a", "b", "a", "b", "a", "b"]);

        let mut s = Shares::with_weights([("a", 2.0)].into_iter().collect());
        let turns: Vec<&str> = (0..9)
            .map(|_| s.pick(waiting.iter(), 1.0).unwrap())
            .collect();
        let a = turns.iter().filter(|t| **t == "a").count();
        assert_eq!(
            a, 6,
            "weight 2 takes two turns for each of weight 1: {turns:?}"
        );
    }

    #[test]
    fn an_idle_account_banks_no_credit_and_gets_its_share_when_back() {
        let mut s: Shares<&str> = Shares::default();
        // A alone for 100 turns: every turn is A's.
        for _ in 0..100 {
            assert_eq!(s.pick(["a"].iter(), 1.0), Some("a"));
        }
        // B comes back: it alternates with A, it does not take 100 turns in a row.
        let turns: Vec<&str> = (0..10)
            .map(|_| s.pick(["a", "b"].iter(), 1.0).unwrap())
            .collect();
        let b = turns.iter().filter(|t| **t == "b").count();
        assert_eq!(b, 5, "{turns:?}");
    }

    #[test]
    fn costs_count_a_big_batch_as_many_turns() {
        let mut s: Shares<&str> = Shares::default();
        // A's batch costs 4 requests, B's 1: after A's one batch B goes four times.
        assert_eq!(s.pick(["a", "b"].iter(), 4.0), Some("a"));
        let turns: Vec<&str> = (0..4)
            .map(|_| {
                let k = *s.next(["a", "b"].iter()).unwrap();
                s.charge(&k, if k == "a" { 4.0 } else { 1.0 });
                k
            })
            .collect();
        assert_eq!(turns, ["b", "b", "b", "b"]);
    }

    /// A gate that grants one call per `interval` of (paused) time, FIFO.
    struct Slow(tokio::sync::Mutex<()>, Duration);

    #[async_trait::async_trait]
    impl Gate for Slow {
        async fn acquire(&self, _: CallKind) -> Result<(), RateLimitError> {
            let _g = self.0.lock().await;
            tokio::time::sleep(self.1).await;
            Ok(())
        }
        async fn report_429(&self, _: CallKind, _: &str) {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_cannot_hold_the_gate_against_a_trickle() {
        let gate = Arc::new(Slow(
            tokio::sync::Mutex::new(()),
            Duration::from_millis(250),
        ));
        let turns = Arc::new(FairTurns::new(HashMap::new()));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // 40 callers of the backlog account queue up first...
        for _ in 0..40 {
            let (g, t, o) = (gate.clone(), turns.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                t.acquire(&*g, "backlog", CallKind::Import).await.unwrap();
                o.lock().unwrap().push("backlog");
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        // ... then the trickle's one call: it goes next, not after the 40.
        let (g, t, o) = (gate.clone(), turns.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            t.acquire(&*g, "trickle", CallKind::Import).await.unwrap();
            o.lock().unwrap().push("trickle");
        }));
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        let at = order.iter().position(|a| *a == "trickle").unwrap();
        assert!(at <= 4, "the trickle waited behind {at} backlog calls");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_or_holder_hands_the_turn_on() {
        let gate = Arc::new(Slow(tokio::sync::Mutex::new(()), Duration::from_secs(1)));
        let turns = Arc::new(FairTurns::new(HashMap::new()));
        // A holder cancelled mid-acquire, and a waiter cancelled while waiting.
        let holder = {
            let (g, t) = (gate.clone(), turns.clone());
            tokio::spawn(async move { t.acquire(&*g, "a", CallKind::Import).await })
        };
        tokio::task::yield_now().await;
        let waiter = {
            let (g, t) = (gate.clone(), turns.clone());
            tokio::spawn(async move { t.acquire(&*g, "b", CallKind::Import).await })
        };
        tokio::task::yield_now().await;
        holder.abort();
        waiter.abort();
        let _ = holder.await;
        let _ = waiter.await;
        // The turn is free again: a new caller gets through.
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            turns.acquire(&*gate, "c", CallKind::Import),
        )
        .await;
        assert_eq!(r, Ok(Ok(())));
    }
}

//! The ack window: which deliveries of a consumer channel are still unacked, and what acks to
//! send for them. A pure value ([`Window`]); [`Window::flush`] only sends what it decided.

use futures_util::StreamExt as _;
use lapin::Channel;
use lapin::options::BasicAckOptions;

use super::QueueError;

/// Single acks awaited at once (each is a frame lapin writes; awaiting them all at once only
/// fills lapin's frame queue).
const ACKS_IN_FLIGHT: usize = 256;
/// A settled delivery is acked on its own at once when fewer than this many unacked deliveries
/// are older than it (see [`Unsettled`]: the broker's cost of a single ack).
const CHEAP_SCAN: usize = 1_024;
/// Settled deliveries kept waiting for an older one before they are acked one by one anyway
/// (they hold prefetch slots while they wait), as far as [`SINGLES_WALK_BUDGET`] allows.
const DEFER_MAX: usize = 16_384;
/// The most broker work one flush may cause with single acks past the cheap scan, counted as
/// the deliveries the broker walks past to find each one (the unacked deliveries older than it).
/// Every stall of the overhead figure (4 of 44 runs, BENCHMARKS.md "Intermittent stalls") came
/// right after such a burst, e.g. 27,903 single acks behind 20,643 held deliveries, after which
/// the broker delivered almost nothing for 114 s; with the budget none stalled. A few stuck
/// deliveries at the front still free the slots behind them at once (each single costs about
/// one step), while settled deliveries behind a whole batch in flight wait for its one
/// `multiple` ack.
const SINGLES_WALK_BUDGET: usize = 1_000_000;

/// The deliveries of one consumer channel the broker still counts as unacked, in tag order, and
/// the channel to settle them on.
///
/// Why not ack each delivery when it is settled: RabbitMQ looks a single ack up by walking the
/// channel's unacked deliveries from the oldest, so with a 65,535 prefetch window an import that
/// completes before an older one costs the broker up to 65,535 steps per row. While it walks, the
/// channel neither reads nor delivers: the pipeline moved 100,000 messages in 16–124 s where a
/// loop that acks each delivery at once took 8 s (BENCHMARKS.md, figure 1). Instead the oldest
/// run of settled deliveries goes in one `basic.ack` with `multiple` set, which the broker takes
/// from the front; a settled delivery behind an older unsettled one waits for it, unless it is
/// near the front anyway ([`CHEAP_SCAN`]) or too many wait ([`DEFER_MAX`]).
///
/// A `multiple` ack settles every unacked delivery up to its tag, and the broker closes the
/// channel on a tag it no longer counts as unacked; so every settlement updates this window and
/// hands its frames to lapin under the lock, in order.
///
/// Acks go straight to the channel (`Channel::basic_ack`), not through lapin's per-delivery
/// `Acker`: an `Acker` is ~50 bytes plus a shared flag per delivery and each of its acks is a
/// spawned task, where the window keeps one byte per delivery (the whole prefetch window is held
/// while batches wait for CC: BENCHMARKS.md figure 4).
pub(super) struct Unsettled {
    pub(super) channel: Channel,
    pub(super) open: tokio::sync::Mutex<Window>,
}

/// The state of one delivery tag in the [`Window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// The pipeline holds it.
    Held,
    /// Settled; its ack waits for an older delivery (or goes in the next `multiple` ack).
    Settled,
    /// No longer unacked at the broker (acked on its own, or requeued): never the tag of a
    /// `multiple` ack, skipped when the front run is acked.
    Gone,
}

/// Delivery tags `base..base + slots.len()`. The broker numbers a channel's deliveries 1, 2, 3…
/// (AMQP 0-9-1 §1.8.3.13 `delivery-tag`), so a window of one byte per delivery is enough.
#[derive(Default)]
pub(super) struct Window {
    base: u64,
    slots: std::collections::VecDeque<Slot>,
    /// How many slots are `Settled`.
    waiting: usize,
}

impl Window {
    /// A new delivery arrived on the channel.
    pub(super) fn arrived(&mut self, tag: u64) {
        if self.slots.is_empty() && self.base == 0 {
            self.base = tag;
        }
        let next = self.base + self.slots.len() as u64;
        if tag < next {
            // Not a tag this channel can send again; never ack it through the window.
            tracing::warn!(
                tag,
                next,
                "delivery tag out of order; ignored by the ack window"
            );
            return;
        }
        // A gap would be tags the broker never delivered here: nothing to ack for them.
        for _ in next..tag {
            self.slots.push_back(Slot::Gone);
        }
        self.slots.push_back(Slot::Held);
    }

    pub(super) fn slot(&mut self, tag: u64) -> Option<&mut Slot> {
        let i = tag.checked_sub(self.base)?;
        self.slots.get_mut(usize::try_from(i).ok()?)
    }

    /// Mark a held delivery settled (false when it was settled before).
    pub(super) fn settle(&mut self, tag: u64) -> bool {
        match self.slot(tag) {
            Some(s @ Slot::Held) => {
                *s = Slot::Settled;
                self.waiting += 1;
                true
            }
            _ => false,
        }
    }

    /// The oldest run of settled (or gone) deliveries: its length, and the tag of the one
    /// `multiple` ack that settles it (its newest settled delivery; `None` when the run holds
    /// only gone ones, which need no ack).
    fn front(&self) -> (usize, Option<u64>) {
        let run = self.slots.iter().take_while(|s| **s != Slot::Held).count();
        let newest_settled = self
            .slots
            .iter()
            .take(run)
            .rposition(|s| *s == Slot::Settled);
        (run, newest_settled.map(|i| self.base + i as u64))
    }

    /// The front run of `run` slots was acked: forget it.
    fn drop_front(&mut self, run: usize) {
        let settled = self
            .slots
            .drain(..run)
            .filter(|s| *s == Slot::Settled)
            .count();
        self.base += run as u64;
        self.waiting -= settled;
    }

    /// Settled deliveries behind a held one that are acked one by one now: those near the front
    /// (`CHEAP_SCAN`), every one when the channel closes (`everything`), and, when too many wait
    /// (`DEFER_MAX`), as many as the broker can look up within [`SINGLES_WALK_BUDGET`] (acked
    /// front to back, each costs the deliveries still unacked before it: the held ones). They
    /// count as gone from here on.
    fn take_singles(&mut self, everything: bool) -> Vec<u64> {
        let crowded = self.waiting > DEFER_MAX;
        let mut singles = Vec::new();
        let (mut held_before, mut walk) = (0usize, 0usize);
        for (i, s) in self.slots.iter_mut().enumerate() {
            if !everything && !crowded && i >= CHEAP_SCAN {
                break;
            }
            match *s {
                Slot::Held => held_before += 1,
                Slot::Gone => {}
                Slot::Settled => {
                    let cheap = i < CHEAP_SCAN;
                    let affordable = crowded && walk + held_before <= SINGLES_WALK_BUDGET;
                    if everything || cheap || affordable {
                        walk += held_before;
                        *s = Slot::Gone;
                        singles.push(self.base + i as u64);
                    } else if crowded {
                        // Past the budget: the rest wait for the front to move.
                        break;
                    }
                }
            }
        }
        self.waiting -= singles.len();
        singles
    }

    /// Send every ack that may go now (`everything`: every settled one, as on close); returns
    /// the failures. What to send is decided by the pure methods above.
    pub(super) async fn flush(&mut self, channel: &Channel, everything: bool) -> Vec<QueueError> {
        let mut errors = Vec::new();
        let (run, multiple) = self.front();
        let acked = match multiple {
            None => Ok(()),
            Some(tag) => {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
            }
        };
        match acked {
            Ok(()) => self.drop_front(run),
            Err(e) => errors.push(e.into()),
        }
        let singles = self.take_singles(everything);
        let failed = futures_util::stream::iter(
            singles
                .into_iter()
                .map(|t| channel.basic_ack(t, BasicAckOptions::default())),
        )
        .buffer_unordered(ACKS_IN_FLIGHT)
        .filter_map(|r| std::future::ready(r.err()))
        .collect::<Vec<_>>()
        .await;
        errors.extend(failed.into_iter().map(QueueError::from));
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::{Slot, Window};

    #[test]
    fn the_window_follows_the_channels_tags_and_settles_each_once() {
        let mut w = Window::default();
        for t in 1..=3 {
            w.arrived(t);
        }
        // A gap (never delivered here) is never acked; an old tag is ignored.
        w.arrived(6);
        w.arrived(2);
        assert_eq!(w.base, 1);
        assert_eq!(
            w.slots.iter().copied().collect::<Vec<_>>(),
            [
                Slot::Held,
                Slot::Held,
                Slot::Held,
                Slot::Gone,
                Slot::Gone,
                Slot::Held
            ]
        );
        assert!(w.settle(2));
        assert!(!w.settle(2), "a second settle of one delivery is ignored");
        assert!(!w.settle(4), "a gap cannot be settled");
        assert!(!w.settle(0) && !w.settle(99));
        assert_eq!(w.waiting, 1);
    }

    /// What `flush` sends, decided without a channel: one `multiple` ack for the oldest settled
    /// run (through gaps), single acks for settled ones behind a held one, and nothing twice.
    #[test]
    fn the_window_acks_the_front_run_at_once_and_the_rest_one_by_one() {
        let mut w = Window::default();
        for t in 1..=5 {
            w.arrived(t);
        }
        w.arrived(8); // 6 and 7 never came to this channel
        // Nothing settled: nothing to send.
        assert_eq!(w.front(), (0, None));
        assert!(w.take_singles(false).is_empty());
        // 1 and 2 settled: one multiple ack to 2; 4 behind the held 3 goes on its own.
        for t in [1, 2, 4] {
            assert!(w.settle(t));
        }
        assert_eq!(w.front(), (2, Some(2)));
        w.drop_front(2);
        assert_eq!((w.base, w.waiting), (3, 1));
        assert_eq!(w.take_singles(false), vec![4]);
        assert_eq!(w.waiting, 0);
        assert!(
            w.take_singles(true).is_empty(),
            "an ack is never sent twice"
        );
        // 3 and 5 settle: the run 3..=7 (4 acked alone, 6 and 7 gaps) ends at the held 8, and
        // its one multiple ack goes to 5, the newest settled, never to a gap.
        assert!(w.settle(3) && w.settle(5));
        assert_eq!(w.front(), (5, Some(5)));
        w.drop_front(5);
        assert_eq!((w.base, w.slots.len(), w.waiting), (8, 1, 0));
        // A run of gaps alone needs no ack.
        let mut g = Window::default();
        g.arrived(1);
        g.arrived(3);
        assert!(g.settle(1));
        assert_eq!(g.front(), (2, Some(1)));
        g.drop_front(2);
        assert_eq!(g.front(), (0, None));
    }

    /// Settled deliveries far behind a held one wait for the front to move (a cheap scan), until
    /// too many wait or the channel closes (`everything`).
    #[test]
    fn far_settled_deliveries_wait_until_too_many_or_closing() {
        let mut w = Window::default();
        let far = (super::CHEAP_SCAN + 10) as u64;
        for t in 1..=far {
            w.arrived(t);
        }
        assert!(w.settle(far));
        assert!(w.take_singles(false).is_empty(), "beyond the cheap scan");
        assert_eq!(w.take_singles(true), vec![far], "closing acks everything");
        // More than DEFER_MAX waiting: all of them go, however far.
        let mut w = Window::default();
        let n = (super::DEFER_MAX + super::CHEAP_SCAN + 2) as u64;
        for t in 1..=n {
            w.arrived(t);
        }
        for t in 2..=n {
            assert!(w.settle(t));
        }
        let singles = w.take_singles(false);
        assert_eq!(singles.len() as u64, n - 1);
        assert_eq!(w.waiting, 0);
        assert_eq!(w.front(), (0, None), "1 is still held");
    }

    /// Behind a whole batch still held (the stall of BENCHMARKS.md: 27,900 single acks behind
    /// 20,643 held deliveries), only what the walk budget allows goes one by one; the rest wait
    /// for the batch and then go in one `multiple` ack.
    #[test]
    fn settled_deliveries_behind_a_held_batch_wait_for_its_multiple_ack() {
        let (held, behind) = (20_643u64, 27_900u64);
        let mut w = Window::default();
        for t in 1..=held + behind {
            w.arrived(t);
        }
        for t in held + 1..=held + behind {
            assert!(w.settle(t));
        }
        let singles = w.take_singles(false);
        assert_eq!(
            singles.len(),
            super::SINGLES_WALK_BUDGET / held as usize,
            "each single costs the {held} held before it"
        );
        assert_eq!(singles[0], held + 1, "front to back");
        let waiting = behind as usize - singles.len();
        assert_eq!(w.waiting, waiting);
        assert!(w.take_singles(false).len() < 50, "the budget is per flush");
        // The batch settles: one multiple ack to the newest settled takes everything.
        for t in 1..=held {
            assert!(w.settle(t));
        }
        assert_eq!(w.front(), ((held + behind) as usize, Some(held + behind)));
    }
}

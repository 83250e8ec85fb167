//! The prefetch window sized to the byte budget for held deliveries.

use super::HELD_OVERHEAD;

/// The prefetch window sized to `worker.max_held_bytes`: the broker pushes a whole window of
/// deliveries at once, so its count, not the reading, bounds the bytes held.
pub(super) struct PrefetchWindow {
    /// `worker.prefetch`: the most it may be.
    max: u16,
    budget: usize,
    pub(super) current: u16,
    /// Running mean of the bytes one held delivery costs (body twice: raw and decoded).
    mean: f64,
    seen: u64,
}

impl PrefetchWindow {
    /// The smallest window it shrinks to (batches of fewer would waste requests).
    const MIN: u16 = 256;
    /// Until messages are seen, assume 4 KB ones.
    const ASSUMED: usize = 2 * 4096 + HELD_OVERHEAD;

    pub(super) fn new(max: u16, budget: usize) -> PrefetchWindow {
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

    pub(super) fn seen(&mut self, body: usize) {
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
    pub(super) fn for_new_consumer(&mut self, held: usize) -> u16 {
        self.current = self.fits(self.budget.saturating_sub(held));
        self.current
    }

    /// Whether to start a new consumer with a re-sized window: the messages got bigger (the
    /// window no longer fits the budget by more than a quarter), or the budget now leaves room
    /// for a window a quarter larger.
    pub(super) fn resize(&mut self, held: usize) -> Option<u16> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

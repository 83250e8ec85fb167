//! The coalescing batcher: generic, no IO, no clock of its own (callers pass `now`, so tests run
//! on paused or fake time).
//!
//! Items fall into *groups* (for contacts: account, list set and consent path — one import carries
//! one `list_ids`, DESIGN §2) and, inside a group, repeats of one *key* (the email) merge into one
//! entry that remembers every delivery tag it absorbed, so every delivery is settled when the
//! merged entry is. A group is flushed when it reaches the contact or byte limit, or when its oldest
//! entry has waited `linger` (which the caller takes from the rate limiter's pacing).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// What the batcher needs to know about an item.
pub trait Coalesce {
    type Group: Eq + Hash + Clone;
    type Key: Eq + Hash + Clone;
    fn group(&self) -> Self::Group;
    fn key(&self) -> Self::Key;
    /// Upper bound of the item's size in the request payload.
    fn bytes(&self) -> usize;
    /// Fold a repeat of the same key into this item.
    fn merge(&mut self, other: Self);
}

/// Size limits of one batch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_items: usize,
    pub max_bytes: usize,
}

/// One coalesced item and the deliveries it stands for.
///
/// The item is boxed: a group's `Vec<Entry>` grows by doubling, and with items of ~450 bytes
/// (a contact) a 65,000-delivery prefetch window cost ~30 MB of spare capacity plus a ~45 MB
/// moment while the old and the new buffer both lived (heaptrack, BENCHMARKS.md figure 4).
#[derive(Debug)]
pub struct Entry<T, Tag> {
    pub item: Box<T>,
    pub tags: Vec<Tag>,
}

/// A batch ready to send: one group, at most `max_items` entries, at most `max_bytes`.
#[derive(Debug)]
pub struct Batch<T: Coalesce, Tag> {
    pub group: T::Group,
    pub entries: Vec<Entry<T, Tag>>,
    pub bytes: usize,
}

impl<T: Coalesce, Tag> Batch<T, Tag> {
    pub fn deliveries(&self) -> usize {
        self.entries.iter().map(|e| e.tags.len()).sum()
    }
}

struct Group<T: Coalesce, Tag> {
    entries: Vec<Entry<T, Tag>>,
    index: HashMap<T::Key, usize>,
    bytes: usize,
    oldest: Instant,
}

/// The batcher. See the module docs.
pub struct Batcher<T: Coalesce, Tag> {
    limits: Limits,
    groups: HashMap<T::Group, Group<T, Tag>>,
    pending_tags: usize,
}

impl<T: Coalesce, Tag> Batcher<T, Tag> {
    pub fn new(limits: Limits) -> Self {
        assert!(limits.max_items > 0 && limits.max_bytes > 0);
        Batcher {
            limits,
            groups: HashMap::new(),
            pending_tags: 0,
        }
    }

    /// Deliveries held (not yet handed out in a batch).
    pub fn pending_deliveries(&self) -> usize {
        self.pending_tags
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Add an item. Returns the batches this push completed (a full group, or the group flushed to
    /// make room when the item would push it past a limit).
    pub fn push(&mut self, item: T, tag: Tag, now: Instant) -> Vec<Batch<T, Tag>> {
        let mut out = Vec::new();
        let gk = item.group();
        let key = item.key();
        self.pending_tags += 1;
        if let Some(g) = self.groups.get_mut(&gk) {
            if let Some(&i) = g.index.get(&key) {
                let e = &mut g.entries[i];
                g.bytes -= e.item.bytes();
                e.item.merge(item);
                e.tags.push(tag);
                g.bytes += e.item.bytes();
                if g.bytes > self.limits.max_bytes {
                    // The merged entry grew past the limit: send the group without it.
                    out.extend(self.split_off_last(&gk, i, now));
                }
                return out;
            }
            if g.entries.len() + 1 > self.limits.max_items
                || g.bytes + item.bytes() > self.limits.max_bytes
            {
                out.extend(self.take(&gk));
            }
        }
        let limits = self.limits;
        let g = self.groups.entry(gk.clone()).or_insert_with(|| Group {
            entries: Vec::new(),
            index: HashMap::new(),
            bytes: 0,
            oldest: now,
        });
        g.index.insert(key, g.entries.len());
        g.bytes += item.bytes();
        g.entries.push(Entry {
            item: Box::new(item),
            tags: vec![tag],
        });
        if g.entries.len() >= limits.max_items || g.bytes >= limits.max_bytes {
            out.extend(self.take(&gk));
        }
        out
    }

    /// Groups whose oldest entry has waited at least `linger`.
    pub fn due(&mut self, now: Instant, linger: Duration) -> Vec<Batch<T, Tag>> {
        let due: Vec<T::Group> = self
            .groups
            .iter()
            .filter(|(_, g)| now.saturating_duration_since(g.oldest) >= linger)
            .map(|(k, _)| k.clone())
            .collect();
        due.iter().filter_map(|k| self.take(k)).collect()
    }

    /// When the next group becomes due with this linger (None when empty).
    pub fn next_due(&self, linger: Duration) -> Option<Instant> {
        self.groups.values().map(|g| g.oldest + linger).min()
    }

    /// Everything held, e.g. on shutdown (to settle) or when pausing.
    pub fn drain(&mut self) -> Vec<Batch<T, Tag>> {
        let keys: Vec<T::Group> = self.groups.keys().cloned().collect();
        keys.iter().filter_map(|k| self.take(k)).collect()
    }

    fn take(&mut self, gk: &T::Group) -> Option<Batch<T, Tag>> {
        let g = self.groups.remove(gk)?;
        let n: usize = g.entries.iter().map(|e| e.tags.len()).sum();
        self.pending_tags -= n;
        Some(Batch {
            group: gk.clone(),
            entries: g.entries,
            bytes: g.bytes,
        })
    }

    fn split_off_last(&mut self, gk: &T::Group, i: usize, now: Instant) -> Option<Batch<T, Tag>> {
        let g = self.groups.get_mut(gk)?;
        let entry = g.entries.swap_remove(i);
        g.index.clear();
        for (j, e) in g.entries.iter().enumerate() {
            g.index.insert(e.item.key(), j);
        }
        g.bytes -= entry.item.bytes();
        let batch = if g.entries.is_empty() {
            self.groups.remove(gk);
            None
        } else {
            self.take(gk)
        };
        // Start the group afresh with the grown entry (its tags were never subtracted from
        // `pending_tags`: they are still held).
        let g = self.groups.entry(gk.clone()).or_insert_with(|| Group {
            entries: Vec::new(),
            index: HashMap::new(),
            bytes: 0,
            oldest: now,
        });
        g.index.insert(entry.item.key(), g.entries.len());
        g.bytes += entry.item.bytes();
        g.entries.push(entry);
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone)]
    struct It {
        g: u8,
        k: u32,
        v: u32,
        size: usize,
    }

    impl Coalesce for It {
        type Group = u8;
        type Key = u32;
        fn group(&self) -> u8 {
            self.g
        }
        fn key(&self) -> u32 {
            self.k
        }
        fn bytes(&self) -> usize {
            self.size
        }
        fn merge(&mut self, other: Self) {
            self.v = other.v;
            self.size = self.size.max(other.size);
        }
    }

    fn it(g: u8, k: u32, v: u32) -> It {
        It { g, k, v, size: 10 }
    }

    #[test]
    fn flushes_at_item_limit_and_coalesces_repeats() {
        let now = Instant::now();
        let mut b = Batcher::new(Limits {
            max_items: 3,
            max_bytes: 1000,
        });
        assert!(b.push(it(1, 1, 1), 'a', now).is_empty());
        assert!(b.push(it(1, 1, 2), 'b', now).is_empty());
        assert!(b.push(it(1, 2, 1), 'c', now).is_empty());
        assert_eq!(b.pending_deliveries(), 3);
        let out = b.push(it(1, 3, 1), 'd', now);
        assert_eq!(out.len(), 1);
        let batch = &out[0];
        assert_eq!(batch.entries.len(), 3);
        assert_eq!(batch.deliveries(), 4);
        assert_eq!(batch.entries[0].item.v, 2);
        assert_eq!(batch.entries[0].tags, vec!['a', 'b']);
        assert_eq!(b.pending_deliveries(), 0);
        assert!(b.is_empty());
    }

    #[test]
    fn groups_never_mix() {
        let now = Instant::now();
        let mut b = Batcher::new(Limits {
            max_items: 10,
            max_bytes: 1000,
        });
        b.push(it(1, 1, 1), 1, now);
        b.push(it(2, 1, 1), 2, now);
        let all = b.drain();
        assert_eq!(all.len(), 2);
        for batch in all {
            assert!(batch.entries.iter().all(|e| e.item.g == batch.group));
        }
    }

    #[test]
    fn byte_limit_flushes_before_overflow() {
        let now = Instant::now();
        let mut b = Batcher::new(Limits {
            max_items: 100,
            max_bytes: 25,
        });
        assert!(b.push(it(1, 1, 1), 1, now).is_empty());
        assert!(b.push(it(1, 2, 1), 2, now).is_empty());
        let out = b.push(it(1, 3, 1), 3, now);
        assert_eq!(out.len(), 1);
        assert!(out[0].bytes <= 25);
        assert_eq!(out[0].entries.len(), 2);
        assert_eq!(b.pending_deliveries(), 1);
    }

    #[test]
    fn merged_entry_growing_past_limit_is_split_off() {
        let now = Instant::now();
        let mut b = Batcher::new(Limits {
            max_items: 100,
            max_bytes: 30,
        });
        b.push(it(1, 1, 1), 1, now);
        b.push(it(1, 2, 1), 2, now);
        let mut big = it(1, 1, 9);
        big.size = 25;
        let out = b.push(big, 3, now);
        assert_eq!(out.len(), 1);
        assert!(out[0].bytes <= 30);
        assert_eq!(
            b.pending_deliveries(),
            2,
            "entry 1 with both its tags stays"
        );
        let rest = b.drain();
        assert_eq!(rest[0].entries[0].tags, vec![1, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn linger_releases_old_groups_only() {
        let t0 = Instant::now();
        let mut b = Batcher::new(Limits {
            max_items: 100,
            max_bytes: 1000,
        });
        b.push(it(1, 1, 1), 1, t0);
        tokio::time::advance(Duration::from_secs(3)).await;
        b.push(it(2, 1, 1), 2, Instant::now());
        let linger = Duration::from_secs(5);
        assert_eq!(b.next_due(linger), Some(t0 + linger));
        assert!(b.due(Instant::now(), linger).is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        let due = b.due(Instant::now(), linger);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].group, 1);
        assert_eq!(b.pending_deliveries(), 1);
    }
}

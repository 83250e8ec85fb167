//! The coalescing batcher: generic, no IO, no clock of its own (callers pass `now`, so tests run
//! on paused or fake time).
//!
//! Items fall into *groups* (for contacts: account, list set and consent path — one import carries
//! one `list_ids`, DESIGN §2) and, inside a group, repeats of one *key* (the email) merge into one
//! entry that remembers every delivery tag it absorbed, so every delivery is settled when the
//! merged entry is. A group is flushed when it reaches the contact or byte limit, or when the
//! shared schedule below releases it ([`Batcher::due`] with one fixed `linger` remains for callers
//! without a budget).
//!
//! # One schedule for every group ([`Pace`], [`Batcher::release`])
//!
//! Lingering groups are not released each on its own clock: they share one schedule, so that G
//! list sets cost what one does (issue 11). The rate limiter's plan says what one API request is
//! worth in time (`spacing`, this process's share of the day's budget spread until 00:00 UTC) and
//! what a batch costs ([`Coalesce::cost`]: an import and its typical polls, or one `sign_up_form`
//! per contact). The batcher keeps `next_slot`:
//!
//! * a group is never released before its oldest entry has waited `pace.min`;
//! * due groups go oldest first, one whenever `now >= next_slot`, and each release moves
//!   `next_slot` to `max(next_slot, now) + cost × spacing`;
//! * a group that has waited `pace.max` goes even though its slot has not come, as long as the
//!   schedule is at most `pace.ahead` ahead of `now`: `max` bounds the wait while the budget
//!   affords it. The rate limiter sets `ahead` to a twentieth of the time left until 00:00 UTC, so
//!   running ahead can never use more than a twentieth of what is left, and the spacing (which
//!   follows the shared count) absorbs it: the day's budget still lasts until the reset. Beyond
//!   that (e.g. 50 list sets) the budget wins and old groups go first, at the pace;
//! * a batch filled to the size limits goes at once (a backlog is never slowed), and its cost is
//!   charged too, but never pushes the schedule more than `ahead + its own cost` ahead: the rate
//!   limiter already spreads what is left over the rest of the day, charging a backlog twice
//!   would starve the trickle after it;
//! * with no budget left (`spacing = None`) every group goes at `max`: the rate limiter then
//!   pauses the worker until 00:00 UTC.
//!
//! A fresh schedule starts one import's cost ahead (capped at `max`), so a restarting replica does
//! not begin with a free slot.
//!
//! # One schedule per tenant: fair shares of the daily plan (issue 13)
//!
//! Groups belong to a *tenant* ([`Coalesce::tenant`]: for contacts, the CC account). Each tenant
//! has its own `next_slot`, and a release charges its tenant's slot with the batch's worth times
//! `W / w`: `w` the tenant's weight ([`Batcher::set_weights`], default 1), `W` the weights of
//! every tenant with groups held at that moment. With one busy tenant that is the whole plan;
//! with two equal ones each slot moves twice as far per batch, so each gets half the plan and the
//! sum stays the process's share; an idle tenant's share goes to the others. One tenant's
//! backlog of full batches moves its own slot only: another tenant's lingering group still goes
//! after `min` on its own slot.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

mod schedule;

pub(crate) use schedule::Pace;

/// What the batcher needs to know about an item.
pub(crate) trait Coalesce {
    type Group: Eq + Hash + Clone;
    type Key: Eq + Hash + Clone;
    fn group(&self) -> Self::Group;
    fn key(&self) -> Self::Key;
    /// Upper bound of the item's size in the request payload.
    fn bytes(&self) -> usize;
    /// Fold a repeat of the same key into this item.
    fn merge(&mut self, other: Self);
    /// What sending a batch of this group costs in requests (default: one batch's worth).
    fn cost(_group: &Self::Group) -> Cost {
        Cost::PerBatch
    }
    /// Whose share of the plan the group's batches use (see the module docs).
    type Tenant: Eq + Hash + Clone;
    fn tenant(group: &Self::Group) -> Self::Tenant;
}

/// What a batch costs against the daily request budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cost {
    /// One request plus its follow-ups, whatever the size: [`Pace::calls_per_batch`].
    PerBatch,
    /// One request per entry (e.g. one `sign_up_form` per contact).
    PerItem,
}

/// Size limits of one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_items: usize,
    pub max_bytes: usize,
}

/// One coalesced item and the deliveries it stands for.
///
/// The item is boxed: a group's `Vec<Entry>` grows by doubling, and with items of ~450 bytes
/// (a contact) a 65,000-delivery prefetch window cost ~30 MB of spare capacity plus a ~45 MB
/// moment while the old and the new buffer both lived (heaptrack, BENCHMARKS.md figure 4).
#[derive(Debug)]
pub(crate) struct Entry<T, Tag> {
    pub item: Box<T>,
    pub tags: Vec<Tag>,
}

/// A batch ready to send: one group, at most `max_items` entries, at most `max_bytes`.
#[derive(Debug)]
pub(crate) struct Batch<T: Coalesce, Tag> {
    pub group: T::Group,
    pub entries: Vec<Entry<T, Tag>>,
}

impl<T: Coalesce, Tag> Batch<T, Tag> {
    pub(crate) fn deliveries(&self) -> usize {
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
pub(crate) struct Batcher<T: Coalesce, Tag> {
    limits: Limits,
    groups: HashMap<T::Group, Group<T, Tag>>,
    pending_tags: usize,
    pace: Pace,
    /// Where a tenant's schedule starts (`None` until the first pace).
    next_slot: Option<Instant>,
    /// When each tenant's schedule lets its next lingering group go (from `next_slot`).
    slots: HashMap<T::Tenant, Instant>,
    weights: HashMap<T::Tenant, f64>,
    /// Requests charged to the schedule so far (every batch handed out while paced).
    charged: f64,
}

impl<T: Coalesce, Tag> Batcher<T, Tag> {
    pub(crate) fn new(limits: Limits) -> Self {
        assert!(limits.max_items > 0 && limits.max_bytes > 0);
        Batcher {
            limits,
            groups: HashMap::new(),
            pending_tags: 0,
            pace: Pace::fixed(Duration::ZERO),
            next_slot: None,
            slots: HashMap::new(),
            weights: HashMap::new(),
            charged: 0.0,
        }
    }

    /// Deliveries held (not yet handed out in a batch).
    #[cfg(test)]
    pub(crate) fn pending_deliveries(&self) -> usize {
        self.pending_tags
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Add an item. Returns the batches this push completed (a full group, or the group flushed to
    /// make room when the item would push it past a limit).
    pub(crate) fn push(&mut self, item: T, tag: Tag, now: Instant) -> Vec<Batch<T, Tag>> {
        let out = self.push_unpaced(item, tag, now);
        for b in &out {
            self.charge(b, now);
        }
        out
    }

    fn push_unpaced(&mut self, item: T, tag: Tag, now: Instant) -> Vec<Batch<T, Tag>> {
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
    #[cfg(test)]
    pub(crate) fn due(&mut self, now: Instant, linger: Duration) -> Vec<Batch<T, Tag>> {
        let due: Vec<T::Group> = self
            .groups
            .iter()
            .filter(|(_, g)| now.saturating_duration_since(g.oldest) >= linger)
            .map(|(k, _)| k.clone())
            .collect();
        due.iter().filter_map(|k| self.take(k)).collect()
    }

    /// When the next group becomes due with this linger (None when empty).
    #[cfg(test)]
    pub(crate) fn next_due(&self, linger: Duration) -> Option<Instant> {
        self.groups.values().map(|g| g.oldest + linger).min()
    }

    /// Everything held, e.g. on shutdown (to settle) or when pausing.
    pub(crate) fn drain(&mut self) -> Vec<Batch<T, Tag>> {
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
mod schedule_tests;
#[cfg(test)]
mod tests;

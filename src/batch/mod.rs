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
pub enum Cost {
    /// One request plus its follow-ups, whatever the size: [`Pace::calls_per_batch`].
    PerBatch,
    /// One request per entry (e.g. one `sign_up_form` per contact).
    PerItem,
}

/// The pacing plan the batcher releases lingering groups against (see the module docs). Pure
/// numbers: the caller asks the rate limiter and hands them in with [`Batcher::set_pace`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// A group waits at least this long (`worker.linger_min_ms`).
    pub min: Duration,
    /// ... and at most this long while the budget affords it (`worker.linger_max_ms`).
    pub max: Duration,
    /// How far ahead of now the schedule may run for groups that waited `max` (the rate limiter:
    /// a twentieth of the time until 00:00 UTC).
    pub ahead: Duration,
    /// Time one request is worth in this process's share of the day's budget; `None` when the
    /// day's budget is spent (groups then go at `max`, and the rate limiter pauses the worker).
    pub spacing: Option<Duration>,
    /// Requests one [`Cost::PerBatch`] batch costs (an import plus its typical polls).
    pub calls_per_batch: f64,
}

impl Pace {
    /// No budget pacing: every group goes after `linger`.
    pub fn fixed(linger: Duration) -> Pace {
        Pace {
            min: linger,
            max: linger,
            ahead: linger,
            spacing: Some(Duration::ZERO),
            calls_per_batch: 1.0,
        }
    }

    /// Requests a batch of `entries` costs.
    pub fn requests(&self, cost: Cost, entries: usize) -> f64 {
        match cost {
            Cost::PerBatch if self.calls_per_batch.is_finite() && self.calls_per_batch > 0.0 => {
                self.calls_per_batch
            }
            Cost::PerBatch => 1.0,
            Cost::PerItem => entries as f64,
        }
    }

    /// The time `requests` are worth on the schedule.
    fn worth(&self, requests: f64) -> Duration {
        // Capped far beyond any day, so that instant arithmetic cannot overflow.
        const CAP: f64 = 7.0 * 86_400.0;
        let s = self.spacing.unwrap_or(Duration::ZERO).as_secs_f64() * requests;
        if s.is_finite() && s > 0.0 {
            Duration::from_secs_f64(s.min(CAP))
        } else {
            Duration::ZERO
        }
    }
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
    pub fn new(limits: Limits) -> Self {
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

    /// Tenants' weights in the plan's shares (tenants not named weigh 1).
    pub fn set_weights(&mut self, weights: HashMap<T::Tenant, f64>) {
        self.weights = weights
            .into_iter()
            .filter(|(_, w)| w.is_finite() && *w > 0.0)
            .collect();
    }

    fn weight(&self, t: &T::Tenant) -> f64 {
        self.weights.get(t).copied().unwrap_or(1.0)
    }

    /// The slot of the group `gk`'s tenant.
    fn slot_of(&self, gk: &T::Group) -> Option<Instant> {
        let t = T::tenant(gk);
        self.slots.get(&t).copied().or(self.next_slot)
    }

    /// Follow a new plan (the rate limiter's, re-read every few seconds). The first call starts
    /// the schedule one import's cost ahead of `now`, capped at `pace.max`.
    pub fn set_pace(&mut self, mut pace: Pace, now: Instant) {
        // Sane bounds whatever the caller passes: `min <= max`, nothing beyond a month (so that
        // instant arithmetic cannot overflow).
        const MONTH: Duration = Duration::from_secs(30 * 86_400);
        pace.min = pace.min.min(MONTH);
        pace.max = pace.max.clamp(pace.min, MONTH);
        pace.ahead = pace.ahead.min(MONTH);
        self.pace = pace;
        if self.next_slot.is_none() {
            let first = pace.worth(pace.requests(Cost::PerBatch, 1)).min(pace.max);
            self.next_slot = Some(now + first);
        }
    }

    /// The plan in force.
    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// Requests charged to the schedule so far (the batches' estimated cost).
    pub fn charged_requests(&self) -> f64 {
        self.charged
    }

    /// Groups the shared schedule releases now, oldest first (see the module docs).
    pub fn release(&mut self, now: Instant) -> Vec<Batch<T, Tag>> {
        let pace = self.pace;
        let mut waiting: Vec<(Instant, T::Group)> = self
            .groups
            .iter()
            .filter(|(_, g)| now.saturating_duration_since(g.oldest) >= pace.min)
            .map(|(k, g)| (g.oldest, k.clone()))
            .collect();
        waiting.sort_by_key(|(oldest, _)| *oldest);
        let mut out = Vec::new();
        for (oldest, gk) in waiting {
            let slot = self.slot_of(&gk).unwrap_or(now);
            let overdue = now.saturating_duration_since(oldest) >= pace.max;
            let go = match pace.spacing {
                None => overdue,
                Some(_) => now >= slot || (overdue && slot <= now + pace.ahead),
            };
            if go && let Some(b) = self.take(&gk) {
                self.charge(&b, now);
                out.push(b);
            }
        }
        out
    }

    /// When [`Batcher::release`] next has something to release (None when empty).
    pub fn next_release(&self) -> Option<Instant> {
        let pace = self.pace;
        self.groups
            .iter()
            .map(|(gk, g)| {
                let slot = self.slot_of(gk);
                let at_min = g.oldest + pace.min;
                let at_max = g.oldest + pace.max;
                match (pace.spacing, slot) {
                    (None, _) => at_max,
                    (Some(_), None) => at_min,
                    (Some(_), Some(slot)) => at_min
                        .max(slot)
                        .min(at_max.max(slot.checked_sub(pace.ahead).unwrap_or(at_max))),
                }
            })
            .min()
    }

    /// Charge a batch handed out now (released, or full) to the schedule.
    fn charge(&mut self, b: &Batch<T, Tag>, now: Instant) {
        let pace = self.pace;
        let requests = pace.requests(T::cost(&b.group), b.entries.len());
        self.charged += requests;
        let Some(slot) = self.slot_of(&b.group) else {
            return;
        };
        let tenant = T::tenant(&b.group);
        // The share: every tenant with groups held now, and this one.
        let mut busy: Vec<T::Tenant> = vec![tenant.clone()];
        for gk in self.groups.keys() {
            let t = T::tenant(gk);
            if !busy.contains(&t) {
                busy.push(t);
            }
        }
        let all: f64 = busy.iter().map(|t| self.weight(t)).sum();
        let worth = pace.worth(requests * all / self.weight(&tenant));
        let next = slot.max(now) + worth;
        self.slots
            .insert(tenant, next.min(now + pace.ahead + worth));
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
        /// Groups from 200 up stand for explicit-consent sign-ups: one request per entry.
        fn cost(g: &u8) -> Cost {
            if *g >= 200 {
                Cost::PerItem
            } else {
                Cost::PerBatch
            }
        }
        /// Groups 100 to 199 belong to a second tenant; all others to the first.
        type Tenant = bool;
        fn tenant(g: &u8) -> bool {
            (100..200).contains(g)
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

    // ---- The shared schedule (issue 11) ----

    const DAY: f64 = 86_400.0;
    /// The standard key's import budget (10,000 − 300 reserve) over a whole day, one replica:
    /// one request every 8.907 s, 404 an hour.
    const SHARE: f64 = 9_700.0;

    fn pace() -> Pace {
        Pace {
            min: Duration::from_secs(2),
            max: Duration::from_secs(600),
            ahead: Duration::from_secs(600),
            spacing: Some(Duration::from_secs_f64(DAY / SHARE)),
            calls_per_batch: 4.0,
        }
    }

    /// One release: (seconds since start, group, entries, requests charged).
    type Released = Vec<(f64, u8, usize, f64)>;

    /// `hours` of arrivals, no sleeping: `streams` are (group, one new contact every `period` s),
    /// staggered; the batcher is driven exactly like `pipeline::session` drives it (push on
    /// arrival, `release` at `next_release`).
    fn simulate(streams: &[(u8, f64)], hours: f64, limits: Limits, pace: Pace) -> Released {
        let base = Instant::now();
        let at = |s: f64| base + Duration::from_secs_f64(s);
        let mut b: Batcher<It, u32> = Batcher::new(limits);
        b.set_pace(pace, base);
        let n = streams.len() as f64;
        let mut next: Vec<f64> = streams
            .iter()
            .enumerate()
            .map(|(i, (_, p))| p * i as f64 / n)
            .collect();
        let mut out = Released::new();
        let mut key = 0u32;
        let mut last = 0.0f64;
        let end = hours * 3_600.0;
        let mut record = |now: f64, batches: Vec<Batch<It, u32>>| {
            for x in batches {
                let req = pace.requests(It::cost(&x.group), x.entries.len());
                out.push((now, x.group, x.entries.len(), req));
            }
        };
        loop {
            let (i, arrival) = next
                .iter()
                .copied()
                .enumerate()
                .min_by(|a, c| a.1.total_cmp(&c.1))
                .unwrap();
            let release = b
                .next_release()
                .map(|t| t.saturating_duration_since(base).as_secs_f64().max(last));
            let now = release.map_or(arrival, |r| r.min(arrival));
            last = now;
            if now >= end {
                break;
            }
            if release.is_some_and(|r| r <= arrival) {
                let got = b.release(at(now));
                assert!(!got.is_empty(), "next_release promised a batch at {now}");
                record(now, got);
            } else {
                key += 1;
                let full = b.push(it(streams[i].0, key, 0), key, at(now));
                record(now, full);
                next[i] += streams[i].1;
            }
        }
        out
    }

    fn per_hour(r: &Released, hours: usize, pick: impl Fn(u8) -> bool) -> Vec<f64> {
        let mut h = vec![0.0; hours];
        for &(t, g, _, req) in r {
            if pick(g) {
                h[(t / 3_600.0) as usize] += req;
            }
        }
        h
    }

    const ROOMY: Limits = Limits {
        max_items: 40_000,
        max_bytes: 4_000_000,
    };

    #[test]
    fn fifty_list_sets_share_one_budget() {
        // 50 list sets, one contact each every minute (3,000 an hour). Lingering each on its own
        // (35.6 s, the per-batch linger of this budget) sent every contact alone: 3,000 imports,
        // 12,000 requests an hour, 30× the plan. On one schedule the requests released per hour
        // stay within the day's share.
        let streams: Vec<(u8, f64)> = (0..50).map(|g| (g, 60.0)).collect();
        let r = simulate(&streams, 6.0, ROOMY, pace());
        let plan = SHARE / 24.0; // 404 requests an hour
        let hours = per_hour(&r, 6, |_| true);
        // The first hour may run ahead by up to `ahead` (here 600 s) worth of requests (the
        // schedule lets an overdue group go while it is at most `ahead` ahead), never more.
        let burst = 600.0 / (DAY / SHARE) + 4.0;
        assert!(hours[0] <= plan + burst, "{hours:?}");
        for h in &hours[1..] {
            assert!(*h <= plan + 4.0, "{hours:?}");
            assert!(
                *h >= plan - 8.0,
                "the budget is used, not hoarded: {hours:?}"
            );
        }
        assert!(hours.iter().sum::<f64>() <= 6.0 * plan + burst);
        // Oldest first: every list set still gets its turn, every hour after the first.
        for hour in 1..6 {
            let groups: std::collections::HashSet<u8> = r
                .iter()
                .filter(|x| (x.0 / 3_600.0) as usize == hour)
                .map(|x| x.1)
                .collect();
            assert_eq!(groups.len(), 50, "hour {hour}");
        }
    }

    #[test]
    fn sign_ups_are_paced_by_their_per_contact_cost() {
        // A release of 10 sign-ups costs 10 requests: the next group waits 10 spacings.
        let base = Instant::now();
        let p = pace();
        let sp = p.spacing.unwrap();
        let mut b: Batcher<It, u32> = Batcher::new(ROOMY);
        b.set_pace(p, base);
        let first = base + sp * 4; // a fresh schedule starts one import ahead
        for k in 0..10 {
            b.push(it(200, k, 0), k, base);
        }
        assert_eq!(b.next_release(), Some(first));
        assert_eq!(b.release(first).len(), 1);
        assert_eq!(b.charged_requests(), 10.0);
        b.push(it(1, 1, 0), 99, first);
        assert_eq!(b.next_release(), Some(first + sp * 10));
        assert!(
            b.release(first + sp * 10 - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(b.release(first + sp * 10).len(), 1);

        // A steady stream of sign-ups (one every 20 s, 180 an hour) beside 10 list sets of
        // imports: the sign-ups take their per-contact share of the schedule, the imports get
        // what is left, and together they stay within the day's share.
        let mut streams: Vec<(u8, f64)> = (0..10).map(|g| (g, 30.0)).collect();
        streams.push((200, 20.0));
        let r = simulate(&streams, 6.0, ROOMY, pace());
        let plan = SHARE / 24.0;
        let burst = 600.0 / (DAY / SHARE) + 4.0;
        let all = per_hour(&r, 6, |_| true);
        let signups = per_hour(&r, 6, |g| g >= 200);
        let imports = per_hour(&r, 6, |g| g < 200);
        // Every sign-up goes (the stream fits the budget; the last few may still wait) ...
        assert!(
            signups.iter().sum::<f64>() >= 6.0 * 180.0 - 40.0,
            "{signups:?}"
        );
        // Over any stretch the schedule spends at most its share plus one `ahead` of run-ahead.
        assert!(all.iter().sum::<f64>() <= 6.0 * plan + burst, "{all:?}");
        for h in 1..6 {
            assert!(all[h] <= plan + burst, "{all:?}");
            // Sign-ups keep going every hour ...
            assert!(signups[h] >= 120.0, "{signups:?}");
            // ... and the imports are left the rest, not the whole plan.
            assert!(imports[h] <= plan - 150.0, "{imports:?}");
        }
    }

    #[test]
    fn one_tenants_backlog_does_not_delay_anothers_trickle() {
        let base = Instant::now();
        let p = pace();
        let mut b: Batcher<It, u32> = Batcher::new(Limits {
            max_items: 3,
            max_bytes: 1_000,
        });
        b.set_pace(p, base);
        // Tenant `false` (group 1) sends 100 full batches: its own slot runs far ahead.
        for k in 0..300 {
            b.push(it(1, k, 0), k, base);
        }
        // Tenant `true` (group 101): one contact; it goes after `min` on the fresh schedule's
        // start, not after the backlog's slot (nor after `max`).
        let t = base + Duration::from_secs(1);
        b.push(it(101, 1, 0), 1, t);
        let start = base + p.spacing.unwrap() * 4;
        assert_eq!(b.next_release(), Some(start.max(t + p.min)));
        let at = b.next_release().unwrap();
        let out = b.release(at);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].group, 101);
    }

    #[test]
    fn two_busy_tenants_share_the_plan_by_weight() {
        let base = Instant::now();
        let p = pace();
        let sp = p.spacing.unwrap();
        let mut b: Batcher<It, u32> = Batcher::new(Limits {
            max_items: 1_000,
            max_bytes: 100_000,
        });
        b.set_weights([(false, 3.0)].into_iter().collect());
        b.set_pace(p, base);
        // Both tenants always have a lingering group; drive releases for a simulated while.
        let mut now = base;
        let mut sent = [0u32; 2];
        let mut k = 0;
        for _ in 0..200 {
            for g in [1u8, 101] {
                k += 1;
                b.push(it(g, k, 0), k, now);
            }
            for batch in b.release(now) {
                sent[usize::from(batch.group == 101)] += 1;
            }
            now += sp;
        }
        // Weight 3 against 1: three quarters of the plan's batches, the plan's pace in total
        // (200 spacings = 50 imports of 4 requests).
        let total = sent[0] + sent[1];
        assert!((45..=55).contains(&total), "{sent:?}");
        let share = f64::from(sent[0]) / f64::from(total);
        assert!((0.7..=0.8).contains(&share), "{sent:?}");
    }

    #[test]
    fn a_full_batch_goes_at_once_and_is_charged() {
        let base = Instant::now();
        let p = pace();
        let sp = p.spacing.unwrap();
        let mut b: Batcher<It, u32> = Batcher::new(Limits {
            max_items: 3,
            max_bytes: 1_000,
        });
        b.set_pace(p, base);
        // The schedule is far ahead (a fresh one starts one import ahead) ...
        assert!(b.push(it(1, 1, 0), 1, base).is_empty());
        assert!(b.push(it(1, 2, 0), 2, base).is_empty());
        // ... yet the third contact fills the group, and it goes at once.
        let full = b.push(it(1, 3, 0), 3, base);
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].entries.len(), 3);
        assert_eq!(b.charged_requests(), 4.0);
        // Its cost moved the schedule: a lingering group now waits for the next slot.
        b.push(it(2, 1, 0), 4, base);
        assert_eq!(b.next_release(), Some(base + sp * 8));
        // A backlog of full batches never pushes the schedule more than `ahead` + one cost ahead.
        for k in 0..300 {
            b.push(it(3, 10 + k, 0), k, base);
        }
        let limit = base + p.ahead + sp * 4;
        assert!(b.slots[&false] <= limit);
        // The lingering group goes once it has waited `max` (the schedule is within `max`).
        assert_eq!(b.next_release(), Some(base + p.max));
    }

    #[test]
    fn bounds_and_a_spent_budget() {
        let base = Instant::now();
        let mut b: Batcher<It, u32> = Batcher::new(ROOMY);
        // Plentiful budget: every group goes at `min`, never earlier.
        let mut p = pace();
        p.spacing = Some(Duration::ZERO);
        b.set_pace(p, base);
        b.push(it(1, 1, 0), 1, base);
        b.push(it(2, 1, 0), 2, base);
        assert_eq!(b.next_release(), Some(base + p.min));
        assert!(
            b.release(base + p.min - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(b.release(base + p.min).len(), 2);
        // Budget spent: groups go at `max` (the rate limiter then pauses the worker).
        p.spacing = None;
        b.set_pace(p, base);
        b.push(it(1, 2, 0), 3, base);
        assert_eq!(b.next_release(), Some(base + p.max));
        assert_eq!(b.release(base + p.max).len(), 1);
        // A `max` below `min` counts as `min`: nothing is promised before a group may go.
        let mut odd = pace();
        odd.max = Duration::from_millis(1);
        b.set_pace(odd, base);
        b.push(it(1, 3, 0), 4, base);
        assert_eq!(b.pace().max, odd.min);
        assert_eq!(b.next_release(), Some(base + odd.min));
        // A tight budget (300 s a request, 1,200 s an import): the first slot is capped at `max`
        // (a fresh schedule starts one import ahead, at most `max`) ...
        let mut b: Batcher<It, u32> = Batcher::new(ROOMY);
        let mut p = pace();
        p.spacing = Some(Duration::from_secs(300));
        b.set_pace(p, base);
        b.push(it(1, 1, 0), 1, base);
        assert_eq!(b.next_release(), Some(base + p.max));
        assert_eq!(b.release(base + p.max).len(), 1);
        // ... the next group still goes after `max`, borrowing up to `ahead` (600 s) ...
        let t = base + p.max;
        b.push(it(1, 2, 0), 2, t);
        assert_eq!(b.next_release(), Some(t + p.max));
        assert_eq!(b.release(t + p.max).len(), 1);
        // ... and then the budget wins: the schedule is 1,800 s ahead, so the next group waits
        // until it is only `ahead` ahead (1,200 s) instead of `max` (600 s).
        let t2 = t + p.max;
        b.push(it(1, 3, 0), 3, t2);
        assert_eq!(b.next_release(), Some(t2 + Duration::from_secs(1_200)));
    }
}

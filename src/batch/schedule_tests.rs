use std::time::Duration;

use tokio::time::Instant;

use super::tests::{It, it};
use super::*;

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

use super::*;

#[derive(Debug, Clone)]
pub(super) struct It {
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

pub(super) fn it(g: u8, k: u32, v: u32) -> It {
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
    assert!(out[0].entries.iter().map(|e| e.item.bytes()).sum::<usize>() <= 25);
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
    assert!(out[0].entries.iter().map(|e| e.item.bytes()).sum::<usize>() <= 30);
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

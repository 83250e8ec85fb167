use super::*;
use std::time::Duration;

#[test]
fn the_bucket_allows_a_second_of_burst_then_the_rate() {
    let t0 = Instant::now();
    let mut b = Bucket::new(2, t0);
    assert!(b.take(t0) && b.take(t0));
    assert!(!b.take(t0), "burst spent");
    assert!(!b.take(t0 + Duration::from_millis(400)));
    assert!(
        b.take(t0 + Duration::from_millis(600)),
        "one token back after 0.5 s"
    );
    assert!(!b.take(t0 + Duration::from_millis(600)));
    // Idle for long: no more than one second's worth.
    let later = t0 + Duration::from_secs(60);
    assert!(b.take(later) && b.take(later) && !b.take(later));
}

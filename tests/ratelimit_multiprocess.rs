//! Three OS processes (`examples/ratelimit_hammer.rs`), each a replica with four tasks calling
//! `acquire(Import)` and then a real `GET /v3/contact_lists` on the simulator as fast as they can,
//! share one API key's budget through the real Redis. Asserted on the simulator's request log
//! (arrival times, as CC would count them): in no sliding 1-second window more than 4 requests,
//! fewer than 1% `throttled` 429s (in practice none), and the replicas together still use most of
//! the rate. The grant timestamps the processes write out are checked the same way. The same run
//! on Redis Cluster is in `tests/infra_cluster.rs` (`ratelimit_common::shared_limit`).
//!
//! `CCSYNC_TEST_HAMMER_SECS` sets the run length (default 12 s, 3..=30 s).

mod ratelimit_common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_four_per_second_as_the_simulator_counts() {
    ratelimit_common::shared_limit(&[]).await;
}

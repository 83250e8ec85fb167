//! Three replicas as separate OS processes (`examples/auth_hammer.rs`), 50 concurrent callers
//! each, short token lifetimes, rotating refresh tokens without a grace window: not a single
//! wasted, racing or failed refresh. Alone in its test binary so its timing is not shared with
//! other tests (the run length is `CCSYNC_TEST_HAMMER_SECS`, default 20). The same race on Redis
//! Cluster runs in `tests/infra_cluster.rs` (`auth_support::refresh_race`).

mod auth_support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_of_fifty_callers_refresh_exactly_once_per_expiry() {
    auth_support::refresh_race(&[]).await;
}

//! The worker as separate processes on the real broker and Redis, with the simulator answering as
//! CC does: every CC answer, claims that outlive their lease, the hold bound, newest-wins ordering,
//! outages and pauses. (The SIGKILL run, `pipeline_crashes`, the end-to-end demo figures,
//! `pipeline_e2e`, and pacing, `pipeline_pacing`, are binaries of their own.)
//!
//! One test binary per room (fewer binaries link faster); each module was its own binary before.

#[path = "../common/mod.rs"]
mod common;

mod answers;
mod claims;
mod hold;
mod ordering;
mod outage;
mod pauses;

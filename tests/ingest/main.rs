//! `ccsync ingest` against the real broker: the HTTP contract, and end to end through a worker into
//! the simulated CC.
//!
//! One test binary per room (fewer binaries link faster); each module was its own binary before.

#[path = "../common/mod.rs"]
mod common;

mod e2e;
mod http;

//! ccsync's test kit, one copy shared by the integration tests (`tests/`) and the bench
//! (`bench/`): the world per test ([`World`]: a simulator on a random port, a random queue and
//! Redis key prefix, worker processes started from the real binary), waiting on a condition
//! ([`wait_for`], [`wait_until`]), message builders ([`message`], [`action`]), the worker's
//! `/metrics` ([`metrics_text`], [`metric_value`]) and the pieces a world is made of
//! ([`sim_env`], [`seed_tokens`], [`ccsync_command`], [`terminate`], [`free_port`]).
//!
//! Assertions read the worker's own `/metrics` (or a registry the test injects), never a
//! process-global one.
//!
//! The kit depends on the product (`ccsync`), so the product cannot depend on it: the demo
//! (`src/demo.rs`) keeps its own copies.

mod env;
mod messages;
mod metrics;
mod process;
mod wait;
mod world;

pub use env::{seed_tokens, service_env, settings_of, short_id, sim_env, store, store_of};
pub use messages::{action, message};
pub use metrics::{http_get, metric_value, metrics_text, settled_in};
pub use process::{ccsync_bin, ccsync_command, example_bin, free_port, terminate};
pub use wait::{wait_for, wait_until};
pub use world::{CLIENT_ID, World};

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
//! Waiting and the message builders live in `kit-base/` (ccsync-kit-base), which needs nothing of
//! the product: the kit depends on the product, so the product's demo (`src/demo.rs`) uses them
//! from there.

mod env;
mod metrics;
mod process;
mod world;

pub use ccsync_kit_base::{action, message, upsert, wait_for, wait_until};
pub use env::{seed_tokens, service_env, settings_of, short_id, sim_env, store, store_of};
pub use metrics::{http_get, metric_value, metrics_text, settled_in};
pub use process::{ccsync_bin, ccsync_command, example_bin, free_port, terminate};
pub use world::{CLIENT_ID, World};

//! The half of ccsync's test kit that needs nothing of the product: waiting on a condition
//! ([`wait_for`], [`wait_until`]) and message bodies as producers publish them ([`message`],
//! [`upsert`], [`action`]).
//!
//! It is its own crate so the product's demo (`ccsync demo`, behind the `sim` feature) can use
//! the same helpers as the tests and the bench: the rest of the kit (`kit/`, the world per test)
//! depends on the product, which therefore cannot depend on it.

mod messages;
mod wait;

pub use messages::{action, message, upsert};
pub use wait::{wait_for, wait_until};

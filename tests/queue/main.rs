//! The queue room against a real RabbitMQ: folded acks, settling by publishing, the declared
//! topology.
//!
//! One test binary per room (fewer binaries link faster); each module was its own binary before.

#[path = "../queue_support/mod.rs"]
mod queue_support;

mod acks;
mod settle;
mod topology;

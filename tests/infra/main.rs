//! The infrastructure operators run: TLS listeners for RabbitMQ and Redis, Redis behind Sentinel.
//! (Redis Cluster, with its multi-process refresh race and shared limit, is its own binary:
//! `infra_cluster`.)
//!
//! One test binary per room (fewer binaries link faster); each module was its own binary before.

#[path = "../auth_support/mod.rs"]
mod auth_support;
#[path = "../common/mod.rs"]
mod common;

mod sentinel;
mod tls;

//! The token set against the simulator and real Redis: the login commands, the refresh protocol,
//! the store and its lease lock. (Tests that install the process-wide tracing subscriber,
//! `auth_dead` and `auth_secrets`, and the multi-process races, `auth_multiprocess` and
//! `auth_replicas`, are binaries of their own.)
//!
//! One test binary per room (fewer binaries link faster); each module was its own binary before.

#[path = "../auth_support/mod.rs"]
mod auth_support;

mod login;
mod refresh;
mod store;

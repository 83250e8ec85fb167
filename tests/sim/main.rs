//! The local Constant Contact simulator against CC's contract (reference/constant-contact-v3.md,
//! CC's Swagger): accounts, the API and its schema, the CLI, faults on demand, bulk imports, OAuth
//! and refresh-token rotation.
//!
//! One test binary per room (fewer binaries link faster); each module was its own binary before.

#[path = "../sim_common/mod.rs"]
mod sim_common;

mod accounts;
mod api;
mod cli;
mod faults;
mod import;
mod oauth;
mod refresh;
mod schema;

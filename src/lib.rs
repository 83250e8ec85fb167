//! # ccsync
//!
//! Keeps Constant Contact (CC) in sync with the contact events upstream systems publish to
//! RabbitMQ: replicas share one token set and one request budget through Redis, coalesce events
//! into bulk imports, and acknowledge a message only once CC has really taken it.
//!
//! # Layout
//!
//! Data flows one way: delivery → contact → batch → authenticated, rate-limited request → outcome
//! → ack. Each room owns one concern and the external crates that serve it:
//!
//! | room | concern | external crates |
//! |---|---|---|
//! | [`config`] | typed settings, layered load, validation, redaction | figment, secrecy |
//! | [`clock`] | UTC wall clock (quota day, token ages) with a test-only offset | time |
//! | [`telemetry`] | tracing setup, the metrics registry, `/metrics` `/healthz` `/readyz` | tracing-subscriber, prometheus, axum |
//! | [`contact`] | message DTO → validated `Contact` (pure), merge rules | serde_json, email_address |
//! | [`queue`] | topology, consume, settle (ack / requeue / dead-letter with reason), publish | lapin |
//! | [`publish`] | `ccsync publish`: NDJSON/CSV → queue, streaming, with confirms | csv |
//! | [`batch`] | coalescing batcher (size, bytes, linger), no IO | — |
//! | [`redis`] | the Redis connector: one server, Redis Cluster or Sentinel, TLS; the pools every Redis user draws from | deadpool, redis |
//! | [`ratelimit`] | governor + shared Redis GCRA + daily quota + 429 handling; fair shares of the key between accounts | governor, redis |
//! | [`auth`] | token set, Redis store, refresh lock, device/code/PKCE logins, connect-link exchange, `TokenProvider` | redis, jsonwebtoken, aws-lc-rs |
//! | [`cc`] | the only code that knows CC's URLs and JSON; classifies every outcome | reqwest |
//! | [`ledger`] | newest-event ledger per (account, email) shared by replicas; the opt-out feed's lease and cursors | redis |
//! | [`poison`] | crash marks: which message a worker was reading when it died | redis |
//! | [`parking`] | per-account parking queues while an account's connection is dead | redis |
//! | [`ingest`] | `ccsync ingest`: signed webhooks (generic, Shopify) → confirmed, mandatory publishes; signed connect links (`/connect`, `/oauth/callback`) | axum, aws-lc-rs |
//! | [`pipeline`] | joins the rooms: deliveries → batches → ready batches per account → CC → settlement; shutdown order; the opt-out feed (CC → `contact.unsubscribed` events) | — |
//! | [`sim`] | the local CC simulator (feature `sim`): the workspace crate `ccsync-sim` (`sim/`), re-exported here; it uses nothing of the product | axum, jsonwebtoken, jsonschema, serde_yaml |
//! | [`bench`] | `ccsync bench` (feature `sim`): runs the `ccsync-bench` binary of the workspace crate `bench/`, which measures the figures of BENCHMARKS.md with the product's rooms and starts `ccsync worker` processes | bench: lapin, reqwest |
//! | [`cli`] | clap commands, each a few lines calling into a room | clap, indicatif |
//! | [`app`] | assembles a worker or an ingest process from the rooms; signals → orderly shutdown | tokio |
//! | [`demo`] | `ccsync demo` (feature `sim`): simulator, device login, publish and a worker in one process, then checks CC holds the merged contacts | ccsync-kit-base (waiting, message builders) |
//!
//! Outside the product crate, in the workspace: `sim/` (above), `bench/` (above), `kit/`
//! (`ccsync-kit`, a dev-dependency only): the test kit the integration tests and the bench share
//! (a world per test, reading a worker's `/metrics`), and `kit-base/` (`ccsync-kit-base`): the
//! kit's product-free half (waiting on a condition, message builders), which the demo uses too
//! (feature `sim`).

pub mod app;
pub mod auth;
pub mod batch;
#[cfg(feature = "sim")]
pub mod bench;
pub mod cc;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contact;
#[cfg(feature = "sim")]
pub mod demo;
pub mod ingest;
pub mod ledger;
pub mod parking;
pub mod pipeline;
pub mod poison;
pub mod publish;
pub mod queue;
pub mod ratelimit;
pub mod redis;
/// The simulator crate (`sim/`), so `ccsync::sim::...` paths keep working.
#[cfg(feature = "sim")]
pub use ccsync_sim as sim;
pub mod telemetry;

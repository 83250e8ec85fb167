//! The markdown `BENCHMARKS.md` is made of: the machine, the command, the date and scale, one
//! table row per figure (key, figure, measured, target, measured ÷ target, met?) and the
//! configuration each phase ran with. Row keys are stable so the smoke test can check them.

use std::fmt::Write;
use std::time::Duration;

use super::Scale;
use super::figures::{Backlog, BigMessages, Ingest, Latency, Outage, Overhead, Replicas, Tokens};

mod notes;
mod part_rows;
mod render;
mod rows;
mod splice;
#[cfg(test)]
mod tests;

use notes::*;
use part_rows::*;
pub use render::render;
use rows::*;
pub use splice::{Partial, splice};

pub struct Results {
    pub scale: Scale,
    pub overhead: Overhead,
    pub backlog: Backlog,
    /// The backlog again with email-only messages: imports at CC's 40,000-contact cap.
    pub contact_cap: Backlog,
    /// A backlog of ~4 KB messages (15 custom fields of 255 characters): memory under the byte
    /// budget for held deliveries.
    pub big: BigMessages,
    pub latency: Vec<Latency>,
    /// Figure 3 at the default configuration (budget-aware linger), 1 msg/s.
    pub latency_paced: Latency,
    pub tokens: Tokens,
    /// Requests per hour while CC fails every call, and the drain after it.
    pub outage: Outage,
    /// `ccsync ingest` against `ccsync publish` and a bare confirmed publisher.
    pub ingest: Ingest,
    /// The backlog of figure 2 drained by three replicas sharing one key.
    pub replicas: Replicas,
    pub runtime: Duration,
}

/// Every row key `render` writes (the smoke test checks them all).
pub const ROW_KEYS: &[&str] = &[
    "overhead.baseline",
    "overhead.baseline_single_ack",
    "overhead.pipeline",
    "overhead.ratio",
    "overhead.ratio_single_ack",
    "api.per_10k",
    "api.floor_per_10k",
    "api.vs_floor",
    "api.one_call_per_contact",
    "api.contacts_per_day",
    "latency.1.p50",
    "latency.1.p99",
    "latency.50.p50",
    "latency.50.p99",
    "latency.paced.p50",
    "latency.paced.p99",
    "memory.peak_rss",
    "memory.peak_rss_contact_cap",
    "memory.peak_rss_4kb",
    "token.cached",
    "token.fan_in",
    "cpu.per_message",
    "cpu.per_message_unthrottled",
    "outage.requests_per_hour",
    "outage.recovery",
    "publish.bare",
    "publish.ccsync",
    "publish.ratio",
    "ingest.single",
    "ingest.ndjson",
    "ingest.single_vs_publish",
    "ingest.ndjson_vs_publish",
    "replicas.contacts_per_day",
    "replicas.vs_one",
    "replicas.vs_one_marginal",
    "replicas.cpu_per_message",
];

/// Which way a target points.
enum Target {
    None,
    AtLeast(f64),
    AtMost(f64),
}

struct Row {
    key: &'static str,
    figure: String,
    measured: f64,
    unit: &'static str,
    target: Target,
}

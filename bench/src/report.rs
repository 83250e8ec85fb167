//! The markdown `BENCHMARKS.md` is made of: the machine, the command, the date and scale, one
//! table row per figure (key, figure, measured, target, measured ÷ target, met?) and the
//! configuration each phase ran with. Row keys are stable so the smoke test can check them.

use std::fmt::Write;
use std::time::Duration;

use super::Scale;
use super::figures::{Backlog, BigMessages, Ingest, Latency, Outage, Overhead, Replicas, Tokens};

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

fn rows(r: &Results) -> Vec<Row> {
    let o = &r.overhead;
    let b = &r.backlog;
    let mut v = overhead_rows(o);
    v.extend([
        Row {
            key: "api.per_10k",
            figure: format!(
                "2. API efficiency: CC requests per 10,000 contacts, {} contacts at 4/s ({} imports, {} polls, {} look-ups, {} token calls = {})",
                b.contacts, b.imports, b.polls, b.lookups, b.tokens, b.total
            ),
            measured: b.per_10k(),
            unit: "req",
            target: Target::AtMost(1.5 * b.floor_per_10k()),
        },
        Row {
            key: "api.floor_per_10k",
            figure: format!(
                "Floor: {} imports (40,000 contacts or 4 MB each; payload {:.1} MB) + 1 poll each",
                b.floor_imports(),
                b.payload_bytes as f64 / 1e6
            ),
            measured: b.floor_per_10k(),
            unit: "req",
            target: Target::None,
        },
        Row {
            key: "api.vs_floor",
            figure: "Requests ÷ floor".into(),
            measured: b.total as f64 / b.floor_requests() as f64,
            unit: "×",
            target: Target::AtMost(1.5),
        },
        Row {
            key: "api.one_call_per_contact",
            figure: format!(
                "One call per contact for the same backlog: {} requests = {:.1} days of one key's 10,000/day",
                b.contacts,
                b.contacts as f64 / 10_000.0
            ),
            measured: b.contacts as f64 * 10_000.0 / b.contacts as f64,
            unit: "req/10k",
            target: Target::None,
        },
        Row {
            key: "api.contacts_per_day",
            figure: "Contacts per day one API key (10,000 requests) carries at this efficiency"
                .into(),
            measured: b.contacts_per_day(),
            unit: "contacts",
            target: Target::None,
        },
    ]);
    for l in &r.latency {
        let (k50, k99) = if l.rate == 1 {
            ("latency.1.p50", "latency.1.p99")
        } else {
            ("latency.50.p50", "latency.50.p99")
        };
        for (key, q, ack, vis) in [
            (k50, "p50", l.p50_ack, l.p50_visible),
            (k99, "p99", l.p99_ack, l.p99_visible),
        ] {
            v.push(Row {
                key,
                figure: format!(
                    "3. Latency publish → ack, {q}, {} msg/s × {} msgs (→ visible in CC: {vis:.2} s)",
                    l.rate, l.messages
                ),
                measured: ack,
                unit: "s",
                target: Target::None,
            });
        }
    }
    let l = &r.latency_paced;
    for (key, q, ack, vis) in [
        ("latency.paced.p50", "p50", l.p50_ack, l.p50_visible),
        ("latency.paced.p99", "p99", l.p99_ack, l.p99_visible),
    ] {
        v.push(Row {
            key,
            figure: format!(
                "3. Latency publish → ack, {q}, {} msg/s × {} msgs, default budget-aware pacing \
                 ({} req/day projected; → visible in CC: {vis:.2} s)",
                l.rate,
                l.messages,
                fmt_num(l.per_day)
            ),
            measured: ack,
            unit: "s",
            target: Target::None,
        });
    }
    let t = &r.tokens;
    v.extend([
        Row {
            key: "memory.peak_rss",
            figure: format!(
                "4. Memory: worker peak RSS (VmHWM), largest batch in flight {} contacts",
                b.largest_batch
            ),
            // Decimal megabytes, the issue's unit (the other RSS figures are MiB).
            measured: b.peak_rss as f64 / 1e6,
            unit: "MB",
            target: Target::AtMost(150.0),
        },
        Row {
            key: "memory.peak_rss_contact_cap",
            figure: format!(
                "4. Memory, email-only messages so imports reach CC's 40,000-contact cap: peak \
                 RSS, {} contacts, largest batch in flight {} contacts",
                r.contact_cap.contacts, r.contact_cap.largest_batch
            ),
            measured: r.contact_cap.peak_rss as f64 / 1e6,
            unit: "MB",
            target: Target::AtMost(150.0),
        },
        big_row(&r.big),
        Row {
            key: "token.cached",
            figure: format!(
                "5. `TokenProvider::access_token()` from the cache, {} calls in process",
                t.iterations
            ),
            measured: t.cached_ns_per_op,
            unit: "ns/op",
            target: Target::None,
        },
        Row {
            key: "token.fan_in",
            figure: format!(
                "5. Refresh calls per expiry, 3 worker processes, token TTL {} s: {} refresh calls, {} successful, over {:.0} s (≈ {:.1} expiries by time)",
                t.token_ttl.as_secs(),
                t.refresh_calls,
                t.refresh_ok,
                t.window_secs,
                t.expiries_by_time
            ),
            measured: t.per_expiry(),
            unit: "calls",
            target: Target::AtMost(1.0),
        },
        Row {
            key: "cpu.per_message",
            figure: format!(
                "6. Worker CPU (user+system, whole process) per message, backlog at real limits: {:.2} s for {} msgs",
                b.cpu_secs, b.contacts
            ),
            measured: b.cpu_secs * 1e6 / b.contacts as f64,
            unit: "µs",
            target: Target::None,
        },
        cpu_unthrottled_row(o),
    ]);
    v.extend(outage_rows(&r.outage));
    v.extend(ingest_rows(&r.ingest));
    v.extend(replicas_rows(&r.replicas));
    v
}

/// Figure 1: the worker against the best plain consumer (folded acks) and the single-ack loop.
fn overhead_rows(o: &Overhead) -> Vec<Row> {
    let (fold, _) = o.best_fold();
    vec![
        Row {
            key: "overhead.baseline",
            figure: format!(
                "Best plain lapin consumer: receive and ack only, acks folded into one `multiple` \
                 ack per {fold} deliveries (fastest of {}), prefetch {}, {} messages",
                o.folded
                    .iter()
                    .map(|(k, secs)| format!(
                        "{k}: {} msg/s",
                        fmt_num(o.messages as f64 / secs)
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                o.prefetch,
                o.messages
            ),
            measured: o.baseline_rate(),
            unit: "msg/s",
            target: Target::None,
        },
        Row {
            key: "overhead.baseline_single_ack",
            figure: format!(
                "Plain lapin consumer acking each delivery on its own (issue 7's baseline, the \
                 slowest way to consume), prefetch {}, {} messages",
                o.prefetch, o.messages
            ),
            measured: o.single_ack_rate(),
            unit: "msg/s",
            target: Target::None,
        },
        Row {
            key: "overhead.pipeline",
            figure: format!(
                "Worker: decode, validate, coalesce, batch, import ({} imports), poll, ack; unthrottled simulator",
                o.imports
            ),
            measured: o.pipeline_rate(),
            unit: "msg/s",
            target: Target::None,
        },
        Row {
            key: "overhead.ratio",
            figure: "1. Pipeline overhead: worker ÷ best plain consumer (folded acks; same broker, same run)"
                .into(),
            measured: o.ratio(),
            unit: "×",
            target: Target::AtLeast(0.8),
        },
        Row {
            key: "overhead.ratio_single_ack",
            figure: "1. Worker ÷ the single-ack loop (same broker, same run)".into(),
            measured: o.ratio_single_ack(),
            unit: "×",
            target: Target::None,
        },
    ]
}

fn cpu_unthrottled_row(o: &Overhead) -> Row {
    Row {
        key: "cpu.per_message_unthrottled",
        figure: format!(
            "6. Worker CPU per message, overhead run: {:.2} s for {} msgs (peak RSS {:.0} MiB)",
            o.cpu_secs,
            o.messages,
            o.peak_rss as f64 / (1024.0 * 1024.0)
        ),
        measured: o.cpu_secs * 1e6 / o.messages as f64,
        unit: "µs",
        target: Target::None,
    }
}

/// Figure 8: ingest against `ccsync publish`, and `ccsync publish` against a bare publisher.
fn ingest_rows(g: &Ingest) -> Vec<Row> {
    vec![
        Row {
            key: "publish.bare",
            figure: format!(
                "Bare confirmed lapin publisher: {} messages, persistent, one channel, at most {} \
                 confirms pending",
                g.publish_messages, g.window
            ),
            measured: g.bare_rate(),
            unit: "msg/s",
            target: Target::None,
        },
        Row {
            key: "publish.ccsync",
            figure:
                "`ccsync publish`: the same number of NDJSON lines read, each validated by the \
                     worker's decoder, published and confirmed (same window)"
                    .into(),
            measured: g.publish_rate(),
            unit: "msg/s",
            target: Target::None,
        },
        Row {
            key: "publish.ratio",
            figure: "`ccsync publish` ÷ bare confirmed publisher (same broker, same run)".into(),
            measured: g.publish_rate() / g.bare_rate(),
            unit: "×",
            target: Target::AtLeast(0.8),
        },
        Row {
            key: "ingest.single",
            figure: format!(
                "8. Ingest: signed single-message requests (`application/json`) answered 202 after \
                 the broker's confirm, {} requests over {} keep-alive connections; ingest CPU {:.0} \
                 µs per request",
                g.single_requests,
                g.single_conns,
                g.single_cpu_secs * 1e6 / g.single_requests as f64
            ),
            measured: g.single_rate(),
            unit: "req/s",
            target: Target::None,
        },
        Row {
            key: "ingest.ndjson",
            figure: format!(
                "8. Ingest: messages in signed NDJSON requests of {} lines, {} messages over {} \
                 connections, each request 202 after every confirm; ingest CPU {:.1} µs per message",
                g.ndjson_lines,
                g.ndjson_messages,
                g.ndjson_conns,
                g.ndjson_cpu_secs * 1e6 / g.ndjson_messages as f64
            ),
            measured: g.ndjson_rate(),
            unit: "msg/s",
            target: Target::None,
        },
        Row {
            key: "ingest.single_vs_publish",
            figure: "8. Single-message requests per second ÷ `ccsync publish` messages per second"
                .into(),
            measured: g.single_rate() / g.publish_rate(),
            unit: "×",
            target: Target::None,
        },
        Row {
            key: "ingest.ndjson_vs_publish",
            figure: "8. NDJSON messages per second through ingest ÷ `ccsync publish`".into(),
            measured: g.ndjson_rate() / g.publish_rate(),
            unit: "×",
            target: Target::None,
        },
    ]
}

/// Figure 9: three replicas sharing one key.
fn replicas_rows(r: &Replicas) -> Vec<Row> {
    let (one, three) = (&r.one, &r.three);
    vec![
        Row {
            key: "replicas.contacts_per_day",
            figure: format!(
                "9. Three replicas sharing one key drain figure 2's backlog ({} contacts at 4/s: \
                 {} imports, {} polls, {} look-ups, {} token calls = {}; drained in {:.0} s): \
                 contacts per day one key carries",
                three.contacts,
                three.imports,
                three.polls,
                three.lookups,
                three.tokens,
                three.total,
                three.drain_secs
            ),
            measured: three.contacts_per_day(),
            unit: "contacts",
            target: Target::None,
        },
        Row {
            key: "replicas.vs_one",
            figure: format!(
                "9. Three replicas ÷ one (one: {} requests, {} contacts per day{})",
                one.total,
                fmt_num(one.contacts_per_day()),
                if r.one_measured_here {
                    ", measured in the same phase"
                } else {
                    ", figure 2"
                }
            ),
            measured: three.contacts_per_day() / one.contacts_per_day(),
            unit: "×",
            target: Target::AtLeast(0.9),
        },
        Row {
            key: "replicas.cpu_per_message",
            figure: format!(
                "9. CPU per message, three replicas summed: {:.2} s for {} msgs (one replica: \
                 {:.1} µs; peak RSS of the largest {:.0} MB)",
                three.cpu_secs,
                three.contacts,
                one.cpu_secs * 1e6 / one.contacts as f64,
                three.peak_rss as f64 / 1e6
            ),
            measured: three.cpu_secs * 1e6 / three.contacts as f64,
            unit: "µs",
            target: Target::None,
        },
    ]
}

/// Figure 4 with ~4 KB messages.
fn big_row(b: &BigMessages) -> Row {
    Row {
        key: "memory.peak_rss_4kb",
        figure: format!(
            "4. Memory, ~4 KB messages ({} custom fields of {} characters, names; {:.0} bytes \
             on average): peak RSS, {} contacts, largest batch in flight {} contacts, most \
             deliveries held {} (prefetch window; `worker.prefetch` {}), peak held bytes \
             {:.1} MB of the {:.0} MB budget",
            super::figures::BIG_FIELDS,
            super::figures::BIG_FIELD_CHARS,
            b.mean_body,
            b.contacts,
            b.largest_batch,
            b.peak_held_deliveries,
            b.prefetch,
            b.peak_held_bytes as f64 / 1e6,
            b.max_held_bytes as f64 / 1e6
        ),
        measured: b.peak_rss as f64 / 1e6,
        unit: "MB",
        target: Target::AtMost(150.0),
    }
}

/// Figure 7: requests per hour of outage, and the drain after it.
fn outage_rows(g: &Outage) -> Vec<Row> {
    vec![
        Row {
            key: "outage.requests_per_hour",
            figure: format!(
                "7. Requests per hour of outage (CC answers 503 to every call, {} messages \
                 waiting): {} requests in {:.0} s ({} before the outage pause, seen after {:.0} \
                 s; {} probes), extrapolated; {:.1}% of the day's 10,000 per hour, which last \
                 {:.0} h of outage",
                g.backlog,
                g.requests,
                g.span_secs,
                g.before_pause,
                g.paused_after_secs,
                g.probes,
                g.per_hour() * 100.0 / super::figures::CC_DAILY_QUOTA as f64,
                super::figures::CC_DAILY_QUOTA as f64 / g.per_hour().max(f64::MIN_POSITIVE)
            ),
            measured: g.per_hour(),
            unit: "req/h",
            // A whole day of outage within one day's 10,000.
            target: Target::AtMost(super::figures::CC_DAILY_QUOTA as f64 / 24.0),
        },
        Row {
            key: "outage.recovery",
            figure: format!(
                "7. After the outage: messages of the {} backlog synced, in {:.0} s from CC \
                 answering again; {} dead letters ({} during the outage)",
                g.backlog, g.drain_secs, g.dead_letters, g.dead_during
            ),
            measured: g.synced as f64,
            unit: "msgs",
            target: Target::AtLeast(g.backlog as f64),
        },
    ]
}

/// One table line.
fn row_line(row: &Row) -> String {
    let (target, ratio, met) = match row.target {
        Target::None => ("—".to_string(), "—".to_string(), "—"),
        Target::AtLeast(t) => (
            format!("≥ {} {}", fmt_num(t), row.unit),
            fmt_num(row.measured / t),
            if row.measured >= t { "yes" } else { "no" },
        ),
        Target::AtMost(t) => (
            format!("≤ {} {}", fmt_num(t), row.unit),
            fmt_num(row.measured / t),
            if row.measured <= t { "yes" } else { "no" },
        ),
    };
    format!(
        "| `{}` | {} | {} {} | {target} | {ratio} | {met} |",
        row.key,
        row.figure,
        fmt_num(row.measured),
        row.unit
    )
}

/// How figure 4 with ~4 KB messages was measured.
fn big_bullet(big: &BigMessages) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- **4. Memory, ~4 KB messages**: {} messages, each a distinct email, names, a company and \
         {} custom fields of {} characters ({:.0} bytes on average; the bed's simulator knows the \
         fields, as CC must with `worker.create_custom_fields` off), published first, then one \
         worker at CC's real limits with the backlog's config ({}; `worker.max_held_bytes` = {:.0} \
         MB, `worker.prefetch` = {}). VmHWM as above; drained in {:.0} s ({} imports). While it \
         drained, `ccsync_held_bytes` and the deliveries held (published − ready − synced) were \
         sampled every 100 ms: the most held is the prefetch window the byte budget settled on, \
         as far as the broker filled it. Before the byte budget, issue 11 measured 281 MB for \
         50,000 such messages.",
        big.contacts,
        super::figures::BIG_FIELDS,
        super::figures::BIG_FIELD_CHARS,
        big.mean_body,
        big.config,
        big.max_held_bytes as f64 / 1e6,
        big.prefetch,
        big.drain_secs,
        big.imports
    );
    s
}

/// How figure 1 was measured.
fn overhead_bullet(o: &Overhead) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- **1. Overhead**: {n} messages published to a fresh quorum queue for each consumer (each \
         queue deleted after it). Plain consumers: `Plain::consume_and_ack` in the bench \
         process, lapin with the worker's prefetch ({}), receiving and acking only, first \
         delivery to last ack; once with acks folded into one `multiple` ack per k deliveries as \
         the worker folds its settled runs, for k in {} (the fastest is the baseline, the \
         broker's ceiling for one consumer), and once acking every delivery on its own. Worker: \
         one `ccsync worker` process, from the first drop of the queue's ready count (polled \
         every 5 ms) to its synced counter reaching {n} (polled every 20 ms). Simulator \
         unthrottled (1,000,000 req/s), imports complete in 20 ms. Worker config: {}.",
        o.prefetch,
        o.folded
            .iter()
            .map(|(k, _)| k.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        o.config,
        n = o.messages
    );
    s
}

/// How figure 8 was measured.
fn ingest_bullet(g: &Ingest) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- **8. Ingest**: one `ccsync ingest` process (defaults: 4 publish channels; \
         `INGEST__RATE_PER_SECOND=0`), its own fresh queue. Requests are built and signed \
         (`X-Ccsync-Signature`) before the clock starts and sent over HTTP/1.1 keep-alive \
         connections, one request at a time per connection, by the bench process; every answer \
         must be 202 (given after the broker's confirm of every message of the request), and the \
         queue must hold every message afterwards. Single requests: {} over {} connections; \
         NDJSON: {} messages in requests of {} lines over {} connections. Ingest CPU is utime + \
         stime of its process over each phase. Against it, on the same broker in the same run, \
         each into its own fresh queue: the bare confirmed publisher (`Plain::publish_confirmed`, \
         lapin only) and `ccsync publish` (`publish::publish`, the command's code, reading the \
         NDJSON from memory), {} messages each, persistent, one channel, at most {} confirms \
         pending. The bench, ingest, RabbitMQ and Redis share the machine's CPUs.",
        g.single_requests,
        g.single_conns,
        g.ndjson_messages,
        g.ndjson_lines,
        g.ndjson_conns,
        g.publish_messages,
        g.window
    );
    s
}

/// How figure 9 was measured.
fn replicas_bullet(r: &Replicas) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- **9. Three replicas**: figure 2's backlog ({} messages) published first, then three \
         `ccsync worker` processes started one after the other on the same queue, sharing one API \
         key (one token set, one Redis key prefix: one request limiter, one daily quota, one \
         ordering ledger) at CC's real limits, with the backlog's config ({}) and the default \
         `ratelimit.expected_replicas` = 3. Every request the simulator logged counts, as in \
         figure 2; CPU is the three processes' utime + stime summed. The single replica it is \
         compared with is {}.",
        r.three.contacts,
        r.three.config,
        if r.one_measured_here {
            "one worker draining the same backlog in the same phase, just before"
        } else {
            "figure 2's worker, in the same run"
        }
    );
    s
}

/// How figure 7 was measured.
fn outage_bullet(g: &Outage) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- **7. Outage**: one worker at CC's limits and defaults ({}) syncs a first message (lists \
         and token cached), then the simulator answers 503 to every non-admin request \
         (`Faults {{ error_rate: 1.0 }}`) and {} messages are published. Every request the \
         simulator logged over {:.0} s from then counts (API and token endpoint, the failing \
         imports and their retries included); requests per hour are that count scaled linearly \
         to an hour. The pause probes CC every 5 s doubling to 20 s, so a longer outage adds \
         3 requests a minute; the failures before the pause (five transient failures in a row) \
         are a one-off that the linear extrapolation spreads over the hour as if it recurred every \
         span, so the figure errs high. \
         Then the faults are cleared: the backlog must drain by itself (the worker's synced \
         counter) with nothing in `<queue>.dead`.",
        g.config, g.backlog, g.span_secs
    );
    s
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x.abs() >= 1000.0 {
        let s = format!("{:.0}", x);
        // Thousands separators for readability.
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

fn machine() -> (String, String, String) {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    (nproc, mem, cpu)
}

/// The whole `BENCHMARKS.md`.
pub fn render(r: &Results) -> String {
    let (nproc, mem, cpu) = machine();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut s = String::new();
    let _ = writeln!(s, "# ccsync benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `ccsync bench` (bench/); every figure below comes from one run. Targets are\n\
         printed, not asserted. Regenerate with (`cargo build` builds `ccsync` and the\n\
         `ccsync-bench` binary it runs):\n\n\
         ```sh\ncargo build --release && target/release/ccsync bench --scale full\n```\n"
    );
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| Command | `ccsync bench --scale {}` ({build} build) |",
        r.scale.name()
    );
    let _ = writeln!(s, "| Date | {date} |");
    let _ = writeln!(s, "| Scale | {} |", r.scale.name());
    let _ = writeln!(
        s,
        "| Machine | {nproc} CPUs ({cpu}), {mem} RAM; RabbitMQ, Redis, the simulator and the bench share it |"
    );
    let _ = writeln!(s, "| Runtime | {:.0} s |\n", r.runtime.as_secs_f64());
    let _ = writeln!(
        s,
        "| Key | Figure | Measured | Target | Measured ÷ target | Met |\n|---|---|---|---|---|---|"
    );
    for row in rows(r) {
        s.push_str(&row_line(&row));
        s.push('\n');
    }
    let b = &r.backlog;
    let o = &r.overhead;
    let _ = writeln!(s, "\n## How each figure was measured\n");
    s.push_str(&overhead_bullet(o));
    let _ = writeln!(
        s,
        "- **2. API efficiency**: a {} message backlog (distinct emails) published first, then one \
         worker at CC's real limits (simulator: 4 req/s sliding window, 10,000/day, imports take \
         1 s). Every request the simulator logged counts (imports, polls, look-ups, token calls, \
         429s included). Drained in {:.0} s. Worker config: defaults plus {}. With CC's real \
         processing times (minutes for 40,000 rows) the poll back-off (2 s doubling to 30 s) \
         adds a few polls per import.",
        b.contacts, b.drain_secs, b.config
    );
    if let Some(l) = r.latency.first() {
        let _ = writeln!(
            s,
            "- **3. Latency** (scaled configuration): simulator at CC's limits, imports take 1 s; \
             worker config: defaults plus {}. Ack time is read from the worker's synced counter \
             (scraped every 10 ms), the k-th ack matched with the k-th publish; publish time is \
             just before the broker-confirmed publish. At the scaled linger the trickle phases \
             cost {}: projected over a day that is {}, more than one key's 10,000, so the scaled \
             rows show the pipeline's own latency, not a configuration to run. The `paced` rows \
             are the default configuration{}: the budget-aware pacing let a trickle batch linger \
             about {:.0} s at the time of the run (full daily budget, 3 expected replicas; it \
             depends on the time left until 00:00 UTC), and {} API requests in {} messages \
             project to {} req/day, within the daily budget. That linger is the price of never \
             exhausting 10,000 requests/day; at 50 msg/s it is the same (a trickle batch is far \
             from full).",
            l.config,
            r.latency
                .iter()
                .map(|l| format!("{} API requests at {} msg/s", l.api_requests, l.rate))
                .collect::<Vec<_>>()
                .join(", "),
            r.latency
                .iter()
                .map(|l| format!("{} req/day at {} msg/s", fmt_num(l.per_day), l.rate))
                .collect::<Vec<_>>()
                .join(", "),
            if r.latency_paced.config.is_empty() {
                String::new()
            } else {
                format!(" plus {}", r.latency_paced.config)
            },
            r.latency_paced.unscaled_linger_secs,
            r.latency_paced.api_requests,
            r.latency_paced.messages,
            fmt_num(r.latency_paced.per_day),
        );
    }
    let _ = writeln!(
        s,
        "- **4. Memory**: VmHWM from `/proc/<pid>/status` of the backlog worker (prefetch 65,535, \
         batches up to 40,000 contacts / 3.5 MB), read before it stops. The backlog's messages \
         (names and a company) fill 3.5 MB before 40,000 contacts, so a second worker drains {} \
         email-only messages at the same limits, whose imports carry 40,000 contacts ({} imports, \
         {} requests).",
        r.contact_cap.contacts, r.contact_cap.imports, r.contact_cap.total
    );
    s.push_str(&big_bullet(&r.big));
    let _ = writeln!(
        s,
        "- **5. Token path**: the cached figure is an in-process loop over \
         `TokenProvider::access_token()` after one warm call. Fan-in: 3 worker processes share \
         one token set (rotating refresh tokens), the simulator's tokens live {} s, a trickle of \
         5 msg/s keeps all three using them; refresh calls are the token-endpoint requests with \
         `grant_type=refresh_token` in the simulator's log, divided by the successful ones (3.0 \
         would mean every process refreshed every expiry).",
        r.tokens.token_ttl.as_secs()
    );
    let _ = writeln!(
        s,
        "- **6. CPU**: utime + stime of the whole worker process from `/proc/<pid>/stat` \
         (start-up included), divided by the messages it synced."
    );
    s.push_str(&outage_bullet(&r.outage));
    s.push_str(&ingest_bullet(&r.ingest));
    s.push_str(&replicas_bullet(&r.replicas));
    s.push_str(&findings(r));
    s
}

/// What profiling found, what was fixed, and what is proposed; paragraphs about a missed target
/// only appear when this run missed it.
fn findings(r: &Results) -> String {
    let mut s = String::from("\n## Profiling notes\n\n");
    let o = &r.overhead;
    let b = &r.backlog;
    let peak_mb = b.peak_rss as f64 / 1e6;
    s.push_str(
        "Fixed while building this runner (separate commits in `src/pipeline/`, `src/queue.rs`, `src/contact/`):\n\n\
         - **Batches stopped at ~45% of the byte limit.** The batcher sized contacts with \
         `Contact::approx_json_bytes` (2x margin): 12,749-contact imports of 1.5 MB instead of \
         3.5 MB, twice the floor's requests (8 for a 50,000 backlog where 4 suffice). Batches now \
         use the exact serialized row length (`pipeline::import_row_bytes`, unit-tested against \
         `Api::import_body`); the sender still halves any body over the limit.\n\
         - **Out-of-order single acks stalled the broker.** RabbitMQ looks a single ack up by \
         walking the channel's unacked deliveries from the oldest; with 65,535 in flight an \
         import completing before an older one cost up to 65,535 steps per row, during which the \
         channel neither read nor delivered (100,000 messages took 16-124 s, bare loop 8 s). The \
         queue room now acks the oldest settled run in one `multiple` ack and lets later ones wait \
         for it (`queue::Unsettled`).\n\
         - **Memory.** heaptrack: lapin's task per pending ack (acks now 256 at a time), the \
         batcher's doubling `Vec` of ~450-byte contacts (entries now boxed), lapin's buffer of \
         full deliveries (a pump now keeps only body, count and tag) and import bodies grown by \
         doubling (now sized up front): 318-356 MB became 139-157 MB. Then, per held delivery \
         (the whole 65,535 prefetch window is held while batches wait for CC): the ack window \
         keeps one byte per delivery and acks on the channel instead of a `BTreeMap` of lapin \
         `Acker`s (~90 bytes, plus ~50 in each tag; 133-137 MB), and a decoded `Contact` is 256 \
         bytes instead of 416 (address boxed and only when sent, text as `Box<str>`; 128 MB \
         twice).\n\
         - **Not adopted.** mimalloc instead of glibc malloc: 152 MiB against 132.5 MiB. A fixed \
         glibc mmap threshold (`MALLOC_MMAP_THRESHOLD_=262144`, so freed 3.5 MB import bodies go \
         back to the system): 116-132 MB against 128 MB, within the run-to-run spread; \
         `MALLOC_ARENA_MAX=2`: no change.\n\
\n",
    );
    if peak_mb > 150.0 {
        let _ = writeln!(
            s,
            "- **Memory ({peak_mb:.0} MB > 150 MB) — what dominates.** The held prefetch \
             window: per delivery the original body (kept for dead letters), the decoded \
             contact with its strings, the batcher's entry and index, plus lapin's buffer of \
             full deliveries when the broker pushes the window faster than the pump reads it and \
             the 3.5 MB bodies of the imports in flight. Re-profile with \
             `CCSYNC_BENCH_WORKER_WRAP=heaptrack CCSYNC_BENCH_ONLY=backlog`; a smaller \
             `worker.prefetch` trades memory for fewer full batches."
        );
    }
    if o.ratio() < 0.8 {
        let _ = writeln!(
            s,
            "- **Overhead ratio {:.2} < 0.8.** The worker spent {:.1} s of CPU on {} messages \
             over {:.1} s of wall time, so it is mostly waiting, not computing: on a \
             2-core machine shared with RabbitMQ, Redis and the simulator, each batch is a \
             sequence of waits (claim in the Redis ledger, upload, the simulator's Swagger \
             validation of the body, the 20 ms processing, poll, acks) while the broker can only \
             refill the 65,535 prefetch window after a batch's acks.",
            o.ratio(),
            o.cpu_secs,
            o.messages,
            o.pipeline_secs
        );
    }
    if b.total as f64 > 1.0 * b.floor_requests() as f64 {
        let _ = writeln!(
            s,
            "- **API efficiency {:.2}x the floor.** The floor assumes 4 MB imports; the worker \
             keeps a margin (`worker.batch_max_bytes` = 3.5 MB), and a batch that leaves on its \
             linger while the one before it is still in flight is not full; `worker.prefetch` = \
             65,535 (RabbitMQ's maximum) holds just over two full batches (2 x ~28,600 \
             contacts at 3.5 MB).",
            b.total as f64 / b.floor_requests() as f64
        );
    }
    s.push_str(
        "- **Latency.** At the scaled linger, latency is linger + CC's processing + the first \
         poll (`worker.poll_initial_ms` = 2 s): a contact is visible in CC about 1 s before the \
         worker's first poll sees the activity complete. At the default pacing the linger \
         dominates: a trickle batch leaves one linger after its first message, so p50 is about \
         half the linger plus those ~3 s and p99 about the whole linger plus them (the `paced` \
         rows). A lower `worker.linger_max_ms` buys latency with requests.\n\
         - **Token path.** A cached `access_token()` costs a lock on the account map, a `String` \
         for its key and a clone of the token set: sub-microsecond, against milliseconds for \
         the CC call it authorizes; no change needed. Fan-in: the Redis lock and the generation \
         check keep it at one refresh per expiry across processes.\n",
    );
    s
}

/// The figures one `ccsync bench --only …` run measured.
#[derive(Default)]
pub struct Partial<'a> {
    pub overhead: Option<&'a Overhead>,
    pub big: Option<&'a BigMessages>,
    pub outage: Option<&'a Outage>,
    pub ingest: Option<&'a Ingest>,
    pub replicas: Option<&'a Replicas>,
}

/// One measured part of a partial run: its `--only` name, its rows (in table order), the row a
/// new first row goes after, and its notes with the note each goes after.
struct Part {
    name: &'static str,
    rows: Vec<Row>,
    after_row: Option<&'static str>,
    notes: Vec<(String, Option<&'static str>)>,
}

impl Partial<'_> {
    fn parts(&self) -> Vec<Part> {
        let mut v = Vec::new();
        if let Some(o) = self.overhead {
            let mut rows = overhead_rows(o);
            rows.push(cpu_unthrottled_row(o));
            v.push(Part {
                name: "overhead",
                rows,
                after_row: None,
                notes: vec![(overhead_bullet(o), None)],
            });
        }
        if let Some(b) = self.big {
            v.push(Part {
                name: "big",
                rows: vec![big_row(b)],
                after_row: Some("memory.peak_rss_contact_cap"),
                notes: vec![(big_bullet(b), Some("- **4. Memory**"))],
            });
        }
        if let Some(g) = self.outage {
            v.push(Part {
                name: "outage",
                rows: outage_rows(g),
                after_row: None,
                notes: vec![(outage_bullet(g), None)],
            });
        }
        if let Some(g) = self.ingest {
            v.push(Part {
                name: "ingest",
                rows: ingest_rows(g),
                after_row: None,
                notes: vec![(ingest_bullet(g), None)],
            });
        }
        if let Some(r) = self.replicas {
            v.push(Part {
                name: "replicas",
                rows: replicas_rows(r),
                after_row: None,
                notes: vec![(replicas_bullet(r), None)],
            });
        }
        v
    }
}

/// Write the rows and notes of the figures measured by `ccsync bench --only …` into an existing
/// table `md`: a row or note with the same key (or bold head) is replaced, a new one goes after
/// the row before it in its figure (or its figure's neighbour, else the end of the table), and a
/// `Partial run` line under `Runtime` says which rows came from this run, when and how. Earlier
/// `Partial run` lines of the same or fewer parts are dropped: this run replaced their rows.
pub fn splice(md: &str, scale: Scale, partial: &Partial, runtime: Duration) -> String {
    let mut lines: Vec<String> = md.lines().map(str::to_string).collect();
    let row_at = |lines: &[String], key: &str| {
        let cell = format!("| `{key}` |");
        lines.iter().position(|l| l.starts_with(&cell))
    };
    let last_row = |lines: &[String]| lines.iter().rposition(|l| l.starts_with("| `"));
    // Replace the line at `at` when it is there, else insert after `after`.
    let put =
        |lines: &mut Vec<String>, at: Option<usize>, after: Option<usize>, line: String| match (
            at, after,
        ) {
            (Some(i), _) => lines[i] = line,
            (None, Some(i)) => lines.insert(i + 1, line),
            (None, None) => lines.push(line),
        };
    let bullet_at = |lines: &[String], head: &str| lines.iter().position(|l| l.starts_with(head));
    let last_bullet = |lines: &[String]| {
        let end = lines
            .iter()
            .position(|l| l.starts_with("## Profiling notes"))
            .unwrap_or(lines.len());
        lines[..end].iter().rposition(|l| l.starts_with("- **"))
    };
    let parts = partial.parts();
    let mut keys = Vec::new();
    for part in &parts {
        let mut prev: Option<&str> = part.after_row;
        for row in &part.rows {
            let after = prev
                .and_then(|k| row_at(&lines, k))
                .or_else(|| last_row(&lines));
            let at = row_at(&lines, row.key);
            put(&mut lines, at, after, row_line(row));
            keys.push(format!("`{}`", row.key));
            prev = Some(row.key);
        }
        for (note, after_head) in &part.notes {
            let note = note.trim_end().to_string();
            // The note's head: "- **<title>**".
            let head = note
                .find("**")
                .and_then(|i| note[i + 2..].find("**").map(|j| &note[..i + 2 + j + 2]))
                .unwrap_or(&note)
                .to_string();
            let after = after_head
                .and_then(|h| bullet_at(&lines, h))
                .or_else(|| last_bullet(&lines));
            let at = bullet_at(&lines, &head);
            put(&mut lines, at, after, note);
        }
    }
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let names: Vec<&str> = parts.iter().map(|p| p.name).collect();
    let partial_line = format!(
        "| Partial run | {} and their notes: `ccsync bench --scale {} --only {}` ({build} build), \
         {date}, {:.0} s; the other rows are from the runs above |",
        keys.join(", "),
        scale.name(),
        names.join(","),
        runtime.as_secs_f64()
    );
    // Older partial runs whose every part this run measured again.
    lines.retain(|l| {
        let Some(only) = l
            .strip_prefix("| Partial run |")
            .and_then(|r| r.split("--only ").nth(1))
            .and_then(|r| r.split('`').next())
        else {
            return true;
        };
        !only.split(',').all(|p| names.contains(&p.trim()))
    });
    let after = lines
        .iter()
        .rposition(|l| l.starts_with("| Partial run |"))
        .or_else(|| lines.iter().position(|l| l.starts_with("| Runtime |")));
    put(&mut lines, None, after, partial_line);
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big() -> BigMessages {
        BigMessages {
            contacts: 50_000,
            mean_body: 4_200.0,
            imports: 60,
            largest_batch: 830,
            drain_secs: 90.0,
            peak_rss: 120_000_000,
            cpu_secs: 10.0,
            peak_held_bytes: 40_000_000,
            peak_held_deliveries: 5_000,
            max_held_bytes: 48_000_000,
            prefetch: 65_535,
            config: String::new(),
        }
    }

    fn outage() -> Outage {
        Outage {
            backlog: 2_000,
            span_secs: 180.0,
            requests: 18,
            before_pause: 8,
            paused_after_secs: 15.0,
            probes: 10,
            dead_during: 0,
            synced: 2_000,
            dead_letters: 0,
            drain_secs: 30.0,
            config: String::new(),
        }
    }

    fn overhead() -> Overhead {
        Overhead {
            messages: 100_000,
            folded: vec![(256, 2.0), (2_048, 1.6), (16_384, 1.8)],
            single_ack_secs: 8.0,
            pipeline_secs: 4.0,
            imports: 9,
            cpu_secs: 1.8,
            peak_rss: 110 << 20,
            prefetch: 65_535,
            config: String::new(),
        }
    }

    fn ingest() -> Ingest {
        Ingest {
            single_requests: 20_000,
            single_secs: 10.0,
            single_conns: 16,
            ndjson_messages: 200_000,
            ndjson_lines: 1_000,
            ndjson_secs: 8.0,
            ndjson_conns: 4,
            single_cpu_secs: 3.0,
            ndjson_cpu_secs: 2.0,
            publish_messages: 200_000,
            publish_secs: 5.0,
            bare_secs: 4.0,
            window: 1_000,
        }
    }

    fn backlog(total: u64) -> Backlog {
        Backlog {
            contacts: 200_000,
            payload_bytes: 24_800_000,
            imports: total / 2,
            polls: total / 2,
            lookups: 0,
            tokens: 0,
            total,
            drain_secs: 22.0,
            largest_batch: 28_602,
            peak_rss: 124_000_000,
            cpu_secs: 4.8,
            config: String::new(),
        }
    }

    fn replicas() -> Replicas {
        Replicas {
            one: backlog(16),
            three: backlog(20),
            one_measured_here: true,
        }
    }

    const TABLE: &str = "# t\n\n| | |\n|---|---|\n| Runtime | 411 s |\n\
        | Partial run | `memory.peak_rss_4kb` and its note: `ccsync bench --scale full --only big` (release build) |\n\
        | Partial run | x: `ccsync bench --scale full --only big,outage` (release build) |\n\n\
        | Key | Figure | Measured | Target | Measured ÷ target | Met |\n|---|---|---|---|---|---|\n\
        | `overhead.baseline` | a | 1 msg/s | — | — | — |\n\
        | `overhead.pipeline` | a | 1 msg/s | — | — | — |\n\
        | `overhead.ratio` | a | 1 × | — | — | — |\n\
        | `memory.peak_rss` | a | 1 MB | — | — | — |\n\
        | `memory.peak_rss_contact_cap` | b | 1 MB | — | — | — |\n\
        | `token.cached` | c | 1 ns/op | — | — | — |\n\
        | `cpu.per_message_unthrottled` | c | 1 µs | — | — | — |\n\n\
        ## How each figure was measured\n\n- **1. Overhead**: o\n- **4. Memory**: m\n- **5. Token path**: t\n\n\
        ## Profiling notes\n\n- **Memory.** p\n";

    fn keys(md: &str) -> Vec<&str> {
        md.lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .collect()
    }

    fn notes(md: &str) -> Vec<&str> {
        md.lines()
            .filter(|l| l.starts_with("- **"))
            .map(|l| l.split("**").nth(1).unwrap_or(""))
            .collect()
    }

    /// New rows land next to their neighbours, and a second splice replaces instead of adding.
    #[test]
    fn splice_places_the_new_rows_once() {
        let d = Duration::from_secs(400);
        let (b, g) = (big(), outage());
        let p = Partial {
            big: Some(&b),
            outage: Some(&g),
            ..Partial::default()
        };
        let once = splice(TABLE, Scale::Full, &p, d);
        let twice = splice(&once, Scale::Full, &p, d);
        for md in [&once, &twice] {
            assert_eq!(
                keys(md),
                [
                    "overhead.baseline",
                    "overhead.pipeline",
                    "overhead.ratio",
                    "memory.peak_rss",
                    "memory.peak_rss_contact_cap",
                    "memory.peak_rss_4kb",
                    "token.cached",
                    "cpu.per_message_unthrottled",
                    "outage.requests_per_hour",
                    "outage.recovery"
                ]
            );
            assert_eq!(
                notes(md),
                [
                    "1. Overhead",
                    "4. Memory",
                    "4. Memory, ~4 KB messages",
                    "5. Token path",
                    "7. Outage",
                    "Memory."
                ],
                "{md}"
            );
            // The two older partial runs were of the same or fewer parts: replaced by this one.
            assert_eq!(md.matches("| Partial run |").count(), 1, "{md}");
            assert!(md.contains("| Runtime | 411 s |\n| Partial run |"));
            assert!(md.contains("--only big,outage` ("));
            assert!(md.contains("| 360.0 req/h | ≤ 416.7 req/h |"), "{md}");
        }
    }

    /// Overhead replaces its rows in place and adds the single-ack rows after their partners;
    /// ingest and replicas go at the end; an older partial run of other parts stays.
    #[test]
    fn splice_of_overhead_ingest_and_replicas() {
        let (o, i, r) = (overhead(), ingest(), replicas());
        let p = Partial {
            overhead: Some(&o),
            ingest: Some(&i),
            replicas: Some(&r),
            ..Partial::default()
        };
        let md = splice(TABLE, Scale::Full, &p, Duration::from_secs(300));
        assert_eq!(
            keys(&md),
            [
                "overhead.baseline",
                "overhead.baseline_single_ack",
                "overhead.pipeline",
                "overhead.ratio",
                "overhead.ratio_single_ack",
                "memory.peak_rss",
                "memory.peak_rss_contact_cap",
                "token.cached",
                "cpu.per_message_unthrottled",
                "publish.bare",
                "publish.ccsync",
                "publish.ratio",
                "ingest.single",
                "ingest.ndjson",
                "ingest.single_vs_publish",
                "ingest.ndjson_vs_publish",
                "replicas.contacts_per_day",
                "replicas.vs_one",
                "replicas.cpu_per_message"
            ]
        );
        assert_eq!(
            notes(&md),
            [
                "1. Overhead",
                "4. Memory",
                "5. Token path",
                "8. Ingest",
                "9. Three replicas",
                "Memory."
            ]
        );
        assert_eq!(md.matches("| Partial run |").count(), 3, "{md}");
        assert!(md.contains("--only overhead,ingest,replicas`"), "{md}");
        // Best fold 2,048: 100,000 / 1.6 s; the worker 25,000 msg/s is 0.4 of it.
        assert!(
            md.contains("| `overhead.baseline` | Best plain lapin consumer"),
            "{md}"
        );
        assert!(md.contains("| 62,500 msg/s |"), "{md}");
        assert!(md.contains("| `overhead.ratio` |") && md.contains("| 0.400 × | ≥ 0.800 × |"));
        // 16 against 20 requests for the same contacts: 0.8 of one replica's contacts per day.
        assert!(md.contains("| 0.800 × | ≥ 0.900 × | 0.889 | no |"), "{md}");
        assert!(md.contains("| 100,000,000 contacts |"), "{md}");
    }
}

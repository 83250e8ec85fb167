//! The markdown `BENCHMARKS.md` is made of: the machine, the command, the date and scale, one
//! table row per figure (key, figure, measured, target, measured ÷ target, met?) and the
//! configuration each phase ran with. Row keys are stable so the smoke test can check them.

use std::fmt::Write;
use std::time::Duration;

use super::Scale;
use super::figures::{Backlog, BigMessages, Latency, Outage, Overhead, Tokens};

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
    pub runtime: Duration,
}

/// Every row key `render` writes (the smoke test checks them all).
pub const ROW_KEYS: &[&str] = &[
    "overhead.baseline",
    "overhead.pipeline",
    "overhead.ratio",
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
    let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut v = vec![
        Row {
            key: "overhead.baseline",
            figure: format!("Bare lapin consume-and-ack loop, {} messages", o.messages),
            measured: o.baseline_rate(),
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
            figure: "1. Pipeline overhead: worker ÷ bare loop (same broker, same run)".into(),
            measured: o.ratio(),
            unit: "×",
            target: Target::AtLeast(0.8),
        },
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
    ];
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
        Row {
            key: "cpu.per_message_unthrottled",
            figure: format!(
                "6. Worker CPU per message, overhead run: {:.2} s for {} msgs (peak RSS {:.0} MiB)",
                o.cpu_secs,
                o.messages,
                mb(o.peak_rss)
            ),
            measured: o.cpu_secs * 1e6 / o.messages as f64,
            unit: "µs",
            target: Target::None,
        },
    ]);
    v.extend(outage_rows(&r.outage));
    v
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
        "Generated by `ccsync bench` (src/bench/); every figure below comes from one run. Targets are\n\
         printed, not asserted. Regenerate with:\n\n\
         ```sh\ncargo run --release -- bench --scale full\n```\n"
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
    let _ = writeln!(
        s,
        "- **1. Overhead**: {n} messages published to two fresh quorum queues. Baseline: \
         `Broker::consume_and_ack` (prefetch as the worker's, one ack per delivery), first delivery \
         to last ack. Worker: one `ccsync worker` process, from the first drop of the queue's ready \
         count (polled every 5 ms) to its synced counter reaching {n} (polled every 20 ms). \
         Simulator unthrottled (1,000,000 req/s), imports complete in 20 ms. Worker config: {}.",
        o.config,
        n = o.messages
    );
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

/// Write the rows and notes of the figures measured by `ccsync bench --only …` into an existing
/// table `md`: a row or note with the same key is replaced, a new one goes after its neighbour
/// (figure 4's ~4 KB row after the other memory rows, figure 7 at the end), and a `Partial run`
/// line under `Runtime` says which rows came from this run, when and how.
pub fn splice(
    md: &str,
    scale: Scale,
    big: Option<&BigMessages>,
    outage: Option<&Outage>,
    runtime: Duration,
) -> String {
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
    let mut keys = Vec::new();
    if let Some(b) = big {
        let row = row_line(&big_row(b));
        let after = row_at(&lines, "memory.peak_rss_contact_cap").or_else(|| last_row(&lines));
        let at = row_at(&lines, "memory.peak_rss_4kb");
        put(&mut lines, at, after, row);
        let note = big_bullet(b).trim_end().to_string();
        let after = bullet_at(&lines, "- **4. Memory**").or_else(|| last_bullet(&lines));
        let at = bullet_at(&lines, "- **4. Memory, ~4 KB messages**");
        put(&mut lines, at, after, note);
        keys.push("`memory.peak_rss_4kb`");
    }
    if let Some(g) = outage {
        for row in outage_rows(g) {
            let (at, after) = (row_at(&lines, row.key), last_row(&lines));
            put(&mut lines, at, after, row_line(&row));
        }
        let note = outage_bullet(g).trim_end().to_string();
        let (at, after) = (bullet_at(&lines, "- **7. Outage**"), last_bullet(&lines));
        put(&mut lines, at, after, note);
        keys.push("`outage.requests_per_hour`, `outage.recovery`");
    }
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let only: Vec<&str> = [big.map(|_| "big"), outage.map(|_| "outage")]
        .into_iter()
        .flatten()
        .collect();
    let partial = format!(
        "| Partial run | {} and their notes: `ccsync bench --scale {} --only {}` ({build} build), \
         {date}, {:.0} s; the other rows are from the run above |",
        keys.join(", "),
        scale.name(),
        only.join(","),
        runtime.as_secs_f64()
    );
    let at = lines.iter().position(|l| l.starts_with("| Partial run |"));
    let after = lines.iter().position(|l| l.starts_with("| Runtime |"));
    put(&mut lines, at, after, partial);
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

    const TABLE: &str = "# t\n\n| | |\n|---|---|\n| Runtime | 411 s |\n\n\
        | Key | Figure | Measured | Target | Measured ÷ target | Met |\n|---|---|---|---|---|---|\n\
        | `memory.peak_rss` | a | 1 MB | — | — | — |\n\
        | `memory.peak_rss_contact_cap` | b | 1 MB | — | — | — |\n\
        | `token.cached` | c | 1 ns/op | — | — | — |\n\n\
        ## How each figure was measured\n\n- **4. Memory**: m\n- **5. Token path**: t\n\n\
        ## Profiling notes\n\n- **Memory.** p\n";

    /// New rows land next to their neighbours, and a second splice replaces instead of adding.
    #[test]
    fn splice_places_the_new_rows_once() {
        let d = Duration::from_secs(400);
        let once = splice(TABLE, Scale::Full, Some(&big()), Some(&outage()), d);
        let twice = splice(&once, Scale::Full, Some(&big()), Some(&outage()), d);
        for md in [&once, &twice] {
            let keys: Vec<&str> = md
                .lines()
                .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
                .collect();
            assert_eq!(
                keys,
                [
                    "memory.peak_rss",
                    "memory.peak_rss_contact_cap",
                    "memory.peak_rss_4kb",
                    "token.cached",
                    "outage.requests_per_hour",
                    "outage.recovery"
                ]
            );
            let notes: Vec<&str> = md.lines().filter(|l| l.starts_with("- **")).collect();
            assert_eq!(notes.len(), 5, "{md}");
            assert!(notes[1].starts_with("- **4. Memory, ~4 KB messages**"));
            assert!(notes[3].starts_with("- **7. Outage**"));
            assert_eq!(md.matches("| Partial run |").count(), 1);
            assert!(md.contains("| Runtime | 411 s |\n| Partial run |"));
            assert!(md.contains("| 360.0 req/h | ≤ 416.7 req/h |"), "{md}");
        }
    }
}

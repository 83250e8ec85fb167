//! The table's rows: every figure's row in `ROW_KEYS` order, and figure 1's.

use super::*;

pub(super) fn rows(r: &Results) -> Vec<Row> {
    let o = &r.overhead;
    let b = &r.backlog;
    let mut v = overhead_rows(o);
    v.extend(api_rows(b));
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
            // Decimal megabytes, the unit (the other RSS figures are MiB).
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
pub(super) fn overhead_rows(o: &Overhead) -> Vec<Row> {
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

pub(super) fn cpu_unthrottled_row(o: &Overhead) -> Row {
    Row {
        key: "cpu.per_message_unthrottled",
        figure: format!(
            "6. Worker CPU per message, overhead run: {:.2} s for {} msgs (peak RSS {:.0} MiB){}",
            o.cpu_secs,
            o.messages,
            o.peak_rss as f64 / (1024.0 * 1024.0),
            match o.phase_cpu {
                Some(m) => {
                    let sum = o.cpu_secs + m.redis + m.broker + m.bench;
                    format!(
                        ". The same phase on the whole machine ({:.2} s of wall time on {} CPUs): \
                         worker {:.2} s, Redis {:.2} s ({:.1} µs per message in Lua scripts, the \
                         ordering ledger's claims), RabbitMQ {:.2} s, simulator and bench {:.2} s: \
                         {:.2} CPUs busy on average",
                        o.pipeline_secs,
                        cpus(),
                        o.cpu_secs,
                        m.redis,
                        m.redis_scripts * 1e6 / o.messages as f64,
                        m.broker,
                        m.bench,
                        sum / o.pipeline_secs
                    )
                }
                None => String::new(),
            }
        ),
        measured: o.cpu_secs * 1e6 / o.messages as f64,
        unit: "µs",
        target: Target::None,
    }
}

/// Figure 2: requests per 10,000 contacts for a backlog at CC's real limits, against the floor.
pub(super) fn api_rows(b: &Backlog) -> Vec<Row> {
    vec![
        Row {
            key: "api.per_10k",
            figure: format!(
                "2. API efficiency: CC requests per 10,000 contacts, {} contacts at 4/s ({} imports, {} polls, {} look-ups, {} token calls = {})",
                b.contacts, b.imports, b.polls, b.lookups, b.tokens, b.total
            ),
            measured: b.per_10k(),
            unit: "req",
            target: Target::AtMost(1.2 * b.floor_per_10k()),
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
            target: Target::AtMost(1.2),
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
    ]
}

/// The CPUs this machine offers the bench.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

//! The rows of the figures `--only` can measure on their own besides figure 1: ingest, replicas,
//! ~4 KB messages, outage.

use super::*;

/// Figure 8: ingest against `ccsync publish`, and `ccsync publish` against a bare publisher.
pub(super) fn ingest_rows(g: &Ingest) -> Vec<Row> {
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
pub(super) fn replicas_rows(r: &Replicas) -> Vec<Row> {
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
            key: "replicas.vs_one_marginal",
            figure: format!(
                "9. Three replicas ÷ one in steady state: contacts per request of the second \
                 half of a backlog twice the size ({} contacts: one replica {} requests, three \
                 {}): a drain's look-ups and token calls cancel out, each replica's partial last \
                 batch does not (its size depends on how the backlog divides)",
                r.one_double.contacts, r.one_double.total, r.three_double.total
            ),
            measured: r.marginal_vs_one(),
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
pub(super) fn big_row(b: &BigMessages) -> Row {
    Row {
        key: "memory.peak_rss_4kb",
        figure: format!(
            "4. Memory, ~4 KB messages ({} custom fields of {} characters, names; {:.0} bytes \
             on average): peak RSS, {} contacts, largest batch in flight {} contacts, most \
             deliveries held {} (prefetch window; `worker.prefetch` {}), peak held bytes \
             {:.1} MB of the {:.0} MB budget",
            crate::figures::BIG_FIELDS,
            crate::figures::BIG_FIELD_CHARS,
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
pub(super) fn outage_rows(g: &Outage) -> Vec<Row> {
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
                g.per_hour() * 100.0 / crate::figures::CC_DAILY_QUOTA as f64,
                crate::figures::CC_DAILY_QUOTA as f64 / g.per_hour().max(f64::MIN_POSITIVE)
            ),
            measured: g.per_hour(),
            unit: "req/h",
            // A whole day of outage within one day's 10,000.
            target: Target::AtMost(crate::figures::CC_DAILY_QUOTA as f64 / 24.0),
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

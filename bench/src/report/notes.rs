//! One table line, the method bullets under the table, number formatting, the machine line.

use super::*;

/// One table line.
pub(super) fn row_line(row: &Row) -> String {
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
pub(super) fn big_bullet(big: &BigMessages) -> String {
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
        crate::figures::BIG_FIELDS,
        crate::figures::BIG_FIELD_CHARS,
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
pub(super) fn overhead_bullet(o: &Overhead) -> String {
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
pub(super) fn ingest_bullet(g: &Ingest) -> String {
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
pub(super) fn replicas_bullet(r: &Replicas) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- **9. Three replicas**: figure 2's backlog ({} messages) published first, then three \
         `ccsync worker` processes started one after the other on the same queue, sharing one API \
         key (one token set, one Redis key prefix: one request limiter, one daily quota, one \
         ordering ledger) at CC's real limits, with the backlog's config ({}) and the default \
         `ratelimit.expected_replicas` = 3. Every request the simulator logged counts, as in \
         figure 2; CPU is the three processes' utime + stime summed. The single replica it is \
         compared with is {}. Then one worker, and then three, drain a backlog of {} messages \
         the same way: a drain pays some requests once whatever its size (each process's list \
         look-up and token), so the steady-state ratio (`replicas.vs_one_marginal`) divides the \
         contacts of the second half ({}) by the requests it added, for three replicas and for \
         one. Each replica's partial last batch does not cancel out (how many imports a share \
         of the backlog needs depends on how it divides into full batches), so at this size the \
         ratio moves by about 0.07 per import.",
        r.three.contacts,
        r.three.config,
        if r.one_measured_here {
            "one worker draining the same backlog in the same phase, just before"
        } else {
            "figure 2's worker, in the same run"
        },
        r.three_double.contacts,
        r.three_double.contacts.saturating_sub(r.three.contacts)
    );
    s
}

/// How figure 7 was measured.
pub(super) fn outage_bullet(g: &Outage) -> String {
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

pub(super) fn fmt_num(x: f64) -> String {
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

pub(super) fn machine() -> (String, String, String) {
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

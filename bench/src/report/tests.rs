//! The report's unit tests.

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
        phase_cpu: Some(crate::bed::MachineCpu {
            redis: 2.0,
            redis_scripts: 1.6,
            broker: 1.0,
            bench: 0.8,
        }),
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
        one_double: Backlog {
            contacts: 400_000,
            ..backlog(30)
        },
        three_double: Backlog {
            contacts: 400_000,
            ..backlog(34)
        },
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
            "replicas.vs_one_marginal",
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

/// `--only api`: figure 2's rows go after figure 1's, with a 1.2x target on the floor.
#[test]
fn splice_of_api_goes_after_the_overhead_rows() {
    let b = backlog(15);
    let p = Partial {
        api: Some(&b),
        ..Partial::default()
    };
    let md = splice(TABLE, Scale::Full, &p, Duration::from_secs(40));
    assert_eq!(
        keys(&md)[..8],
        [
            "overhead.baseline",
            "overhead.pipeline",
            "overhead.ratio",
            "api.per_10k",
            "api.floor_per_10k",
            "api.vs_floor",
            "api.one_call_per_contact",
            "api.contacts_per_day",
        ]
    );
    // 24.8 MB: 7 imports of 4 MB, 14 requests; 15 measured is 1.071x, within 1.2x.
    assert!(md.contains("| 1.071 × | ≤ 1.200 × |"), "{md}");
    assert!(md.contains("--only api`"), "{md}");
}

#[test]
fn the_steady_state_ratio_leaves_out_what_a_drain_pays_once() {
    let r = replicas();
    // Finite backlog: 16 requests against 20 (the extra ones are paid once per drain).
    assert!((r.three.contacts_per_day() / r.one.contacts_per_day() - 0.8).abs() < 1e-9);
    // The second 200,000 contacts cost 14 requests with one replica and 14 with three.
    assert!((r.marginal_vs_one() - 1.0).abs() < 1e-9);
    let rows = super::part_rows::replicas_rows(&r);
    let m = rows
        .iter()
        .find(|row| row.key == "replicas.vs_one_marginal")
        .expect("the marginal row");
    assert!(
        m.figure
            .contains("400000 contacts: one replica 30 requests, three 34"),
        "{}",
        m.figure
    );
}

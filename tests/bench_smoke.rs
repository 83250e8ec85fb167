//! `ccsync bench` at the tiny scale, end to end (real RabbitMQ, real Redis, in-process simulator,
//! worker processes), so the runner cannot rot: every figure must be in the table with a sane
//! value. Targets are not asserted (machines are noisy); only what must hold on any machine is.

use std::collections::BTreeMap;

use ccsync_bench::report::ROW_KEYS;

/// Row key → measured value (the number at the start of the "Measured" cell).
fn measured(md: &str) -> BTreeMap<String, f64> {
    md.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let value = cells
                .get(3)?
                .split_whitespace()
                .next()?
                .replace(',', "")
                .parse::<f64>()
                .ok()?;
            Some((key.to_string(), value))
        })
        .collect()
}

#[test]
fn tiny_bench_writes_every_figure_with_sane_values() {
    build_ccsync_bench();
    let out = std::env::temp_dir().join(format!("ccsync-bench-{}.md", uuid::Uuid::new_v4()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ccsync"))
        .args(["bench", "--scale", "tiny", "--out"])
        .arg(&out)
        .env("RUST_LOG", "error")
        .status()
        .expect("ccsync bench starts");
    assert!(status.success(), "ccsync bench failed: {status}");
    let md = std::fs::read_to_string(&out).expect("the table was written");
    let _ = std::fs::remove_file(&out);

    for header in ["| Command |", "| Date |", "| Scale | tiny |", "| Machine |"] {
        assert!(md.contains(header), "missing {header} in:\n{md}");
    }
    let m = measured(&md);
    for key in ROW_KEYS {
        let v = m
            .get(*key)
            .unwrap_or_else(|| panic!("figure {key} missing or not a number in:\n{md}"));
        assert!(v.is_finite() && *v > 0.0, "{key} = {v}");
    }
    // What holds on any machine: nobody beats the floor (every import needs a poll), one refresh
    // at least per expiry, p99 ≥ p50, and one call per contact is 10,000 per 10,000 contacts.
    assert!(m["api.vs_floor"] >= 1.0, "{}", m["api.vs_floor"]);
    assert!(m["api.per_10k"] >= m["api.floor_per_10k"]);
    assert!(m["token.fan_in"] >= 1.0);
    assert!(m["latency.1.p99"] >= m["latency.1.p50"]);
    assert!(m["latency.50.p99"] >= m["latency.50.p50"]);
    assert_eq!(m["api.one_call_per_contact"], 10_000.0);
    // A worker process holds at least a few MB and well under a GB at this scale.
    assert!((1.0..1024.0).contains(&m["memory.peak_rss"]));
    assert!((1.0..1024.0).contains(&m["memory.peak_rss_contact_cap"]));
    assert!((1.0..1024.0).contains(&m["memory.peak_rss_4kb"]));
    // The big messages are ~4 KB and every import carried some of them.
    let big = row(&md, "memory.peak_rss_4kb");
    assert!(big.contains("15 custom fields of 255 characters"), "{big}");
    assert!(!big.contains("largest batch in flight 0 contacts"), "{big}");
    // An outage costs requests (the failing calls at least) but not one per message: well under
    // CC's 4 requests a second, whatever the machine. After it the backlog drains, nothing dead.
    let per_hour = m["outage.requests_per_hour"];
    assert!(per_hour > 0.0 && per_hour < 4.0 * 3_600.0, "{per_hour}");
    let recovery = row(&md, "outage.recovery");
    assert!(
        recovery.contains("; 0 dead letters (0 during the outage)"),
        "{recovery}"
    );
    let backlog: f64 = recovery
        .split("messages of the ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no backlog size in {recovery}"));
    assert_eq!(m["outage.recovery"], backlog, "{recovery}");
}

/// `ccsync bench` runs the `ccsync-bench` binary next to `ccsync`. A plain `cargo test` builds it
/// (the workspace's default members), `cargo test --test bench_smoke` alone does not (another
/// package's binary): build it here, into the same target directory and profile as `ccsync` (a
/// no-op when it is up to date).
fn build_ccsync_bench() {
    let ccsync = std::path::Path::new(env!("CARGO_BIN_EXE_ccsync"));
    let profile_dir = ccsync.parent().expect("target/<profile>/ccsync");
    let target_dir = profile_dir.parent().expect("target/<profile>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(p) => p,
    };
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "ccsync-bench",
            "--bin",
            "ccsync-bench",
        ])
        .args(["--profile", profile, "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo starts");
    assert!(status.success(), "cargo build -p ccsync-bench: {status}");
}

/// The whole table line of `key`.
fn row<'a>(md: &'a str, key: &str) -> &'a str {
    let cell = format!("| `{key}` |");
    md.lines()
        .find(|l| l.starts_with(&cell))
        .unwrap_or_else(|| panic!("no row {key} in:\n{md}"))
}

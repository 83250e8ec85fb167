//! Reading the metrics back: the exposition `/metrics` serves, one series' value as it shows
//! there (tests, the demo, the bench), and a child of every family for the alert rules' lint.

use prometheus::{Encoder, TextEncoder};

use super::metrics::Metrics;

impl Metrics {
    /// Create one child of every labelled family (values stay 0): a family with no child is not
    /// exposed at all, and the alert rules' lint wants to see every name.
    pub fn expose_every_family(&self) {
        self.api_requests
            .with_label_values(&["contacts_json_import", "201"]);
        self.api_request_duration
            .with_label_values(&["contacts_json_import"]);
        self.rate_limited.with_label_values(&["throttled"]);
        self.token_refresh.with_label_values(&["ok"]);
        self.auth_failures.with_label_values(&["invalid_grant"]);
        self.dead_letters.with_label_values(&["invalid_json"]);
        self.auth_state.with_label_values(&["default"]);
        self.refresh_token_age.with_label_values(&["default"]);
        self.optouts_last_poll.with_label_values(&["default"]);
        self.ingest_requests.with_label_values(&["contacts", "202"]);
        self.ingest_signature_failures
            .with_label_values(&["contacts", "bad"]);
    }

    /// Activities this process waits on now.
    pub(crate) fn activities_in_flight(&self) -> i64 {
        self.activities_in_flight.get()
    }

    /// The value of one series as `/metrics` shows it (`name` or `name{label="v",...}`, labels
    /// in any order), summed over the series it matches; `None` when none exists.
    pub fn value(&self, series: &str) -> Option<f64> {
        series_value(&self.render(), series)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// A series' value in a Prometheus text exposition (this process's, or a worker's `/metrics`
/// read over HTTP): `series` names a metric and, optionally, some of its labels
/// (`ccsync_paused{reason="auth"}`); the values of every series carrying at least those labels
/// are summed (a metric with an `account` label reads as the sum over accounts). `None` when no
/// series matches.
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    let (name, want) = split_series(series);
    let mut total = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((s, v)) = l.rsplit_once(' ') else {
            continue;
        };
        let (n, labels) = split_series(s);
        if n == name
            && want.iter().all(|w| labels.contains(w))
            && let Ok(v) = v.parse::<f64>()
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// `name{a="1",b="2"}` → (`name`, [`a="1"`, `b="2"`]).
fn split_series(s: &str) -> (&str, Vec<&str>) {
    match s.split_once('{') {
        Some((n, rest)) => (
            n,
            rest.trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
                .collect(),
        ),
        None => (s, Vec::new()),
    }
}

//! The worker's own `/metrics` (Prometheus text), read over HTTP: what tests and the bench assert
//! on, never a process-global registry.

use std::sync::OnceLock;
use std::time::Duration;

/// `GET http://{addr}{path}` with a 10 s limit that must answer 200; the body, or an error
/// naming the request. One connection per request (no pooling), as workers come and go.
pub async fn http_get(addr: &str, path: &str) -> Result<String, String> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .expect("a plain HTTP client builds")
    });
    let fail = |e: reqwest::Error| {
        let why = if e.is_timeout() {
            "timed out".to_string()
        } else {
            e.to_string()
        };
        format!("GET {addr}{path}: {why}")
    };
    let resp = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .map_err(fail)?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("GET {addr}{path}: {}", resp.status()));
    }
    resp.text().await.map_err(fail)
}

/// The `/metrics` text of the worker on `127.0.0.1:{port}` (None while it does not answer).
pub async fn metrics_text(port: u16) -> Option<String> {
    http_get(&format!("127.0.0.1:{port}"), "/metrics")
        .await
        .ok()
}

/// A series' value in a Prometheus text exposition (None when it has no such series). `series`
/// names a metric and, optionally, some of its labels (`ccsync_auth_state`,
/// `ccsync_paused{reason="auth"}`): the values of every series that carries at least those labels
/// are summed (a metric with an `account` label reads as the sum over accounts).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    ccsync::telemetry::series_value(text, series)
}

/// Deliveries settled for good (synced, superseded or dead-lettered) in a worker's `/metrics`.
pub fn settled_in(text: &str) -> u64 {
    let mut n = 0.0;
    for o in ["synced", "superseded", "dead_lettered"] {
        let series = format!("ccsync_messages_total{{outcome=\"{o}\"}}");
        n += metric_value(text, &series).unwrap_or(0.0);
    }
    n as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_series_that_carry_the_labels() {
        let text = "# HELP x\nx{a=\"1\",b=\"2\"} 3\nx{a=\"1\",b=\"3\"} 4\nx{a=\"2\"} 5\ny 1\n";
        assert_eq!(metric_value(text, "x{a=\"1\"}"), Some(7.0));
        assert_eq!(metric_value(text, "x"), Some(12.0));
        assert_eq!(metric_value(text, "z"), None);
    }
}

use super::*;

#[test]
fn labelled_series_exist_at_zero_before_any_call() {
    // A fresh registry, as a worker's first scrape sees it.
    let text = Metrics::new().render();
    for (endpoint, statuses) in API_SERIES {
        for status in statuses.iter().chain(&["429", "500", "error"]) {
            let series = format!(
                "ccsync_api_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} 0"
            );
            assert!(text.contains(&series), "{series} missing");
        }
        let count =
            format!("ccsync_api_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} 0");
        assert!(text.contains(&count), "{count} missing");
    }
    for series in [
        "ccsync_daily_quota_projected 0",
        "ccsync_daily_quota_remaining 0",
        "ccsync_messages_total{account=\"\",outcome=\"synced\"} 0",
        "ccsync_messages_total{account=\"\",outcome=\"dead_lettered\"} 0",
        "ccsync_paused{account=\"\",reason=\"quota\"} 0",
        "ccsync_rate_limited_total{error_key=\"throttled\"} 0",
    ] {
        assert!(text.contains(series), "{series} missing");
    }
    // Every endpoint the contract names is covered.
    for e in [
        "contacts_json_import",
        "activities",
        "sign_up_form",
        "contacts",
        "contact_lists",
        "contact_custom_fields",
        "token",
        "device_authorize",
    ] {
        assert!(API_SERIES.iter().any(|(x, _)| *x == e), "{e}");
    }
}

#[test]
fn exposition_names_the_contract_metrics() {
    let m = metrics();
    m.api_requests
        .with_label_values(&["contacts_json_import", "201"])
        .inc();
    // Per-account series exist once an account is known (a worker discovers every account
    // in Redis at start); this process knows one.
    m.auth_state.with_label_values(&["default"]).set(1);
    let text = m.render();
    for name in [
        "ccsync_messages_total",
        "ccsync_api_requests_total",
        "ccsync_paused",
        "ccsync_build_info",
        "ccsync_auth_state",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

//! The metric families and their fixed label values: a declarative table of names, help texts,
//! buckets and the series exported at zero from the start (DESIGN §5.4).

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use super::Metrics;

/// Outcomes of `ccsync_ingest_connect_total` (issue 14). At `GET /connect/<token>`: `opened` (sent
/// on to CC's authorize page), `tampered` (not a link we signed), `expired`, `used` (already
/// connected an account). At `GET /oauth/callback`: `connected` (the token set is stored),
/// `bad_state` (state missing, altered, or older than an hour), `denied` (`error=access_denied`),
/// `cc_error` (another `error=`, or neither code nor error), `used` (a second callback of one link),
/// `rejected` (CC refused the code), `misconfigured` (client credentials, redirect URI or scope
/// are wrong), `unavailable` (Redis or the token endpoint).
pub const CONNECT_OUTCOMES: &[&str] = &[
    "opened",
    "tampered",
    "expired",
    "used",
    "connected",
    "bad_state",
    "denied",
    "cc_error",
    "rejected",
    "misconfigured",
    "unavailable",
];

/// `ccsync ingest` routes (the `route` label).
pub const INGEST_ROUTES: &[&str] = &["contacts", "shopify"];

/// Reasons of `ccsync_ingest_refused_total`: `invalid_message` (the decoder refused a line; the
/// request is 400), `unauthorized`, `too_large`, `rate_limited`, `broker_unavailable` (503),
/// `unknown_topic` and `no_email` (a Shopify webhook acknowledged and skipped), `unmappable` (a
/// Shopify customer the decoder refuses after mapping; acknowledged and skipped).
pub const INGEST_REFUSALS: &[&str] = &[
    "invalid_message",
    "unauthorized",
    "too_large",
    "rate_limited",
    "broker_unavailable",
    "unknown_topic",
    "no_email",
    "unmappable",
];

/// `ccsync_api_requests_total{endpoint,status}` series exported from the start: each endpoint
/// (DESIGN §5.4) with its success codes; `429`, `500` and `error` are added to every one.
pub const API_SERIES: &[(&str, &[&str])] = &[
    ("contacts_json_import", &["201"]),
    ("activities", &["200"]),
    ("sign_up_form", &["200", "201"]),
    ("contacts", &["200"]),
    ("contacts_put", &["200"]),
    ("contact_delete", &["201"]),
    ("remove_list_memberships", &["201"]),
    ("contact_lists", &["200", "201"]),
    ("contact_custom_fields", &["200", "201"]),
    ("token", &["200"]),
    ("device_authorize", &["200"]),
];

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    /// A fresh registry with every family, apart from the process-wide one ([`super::metrics`]),
    /// and leaked so a component holds it as it holds the global (`&'static`). For tests: one
    /// process runs many tests in parallel, so a test that asserts on metrics gives the components
    /// it drives a registry of its own (`with_metrics`, `connect_with_metrics`) and reads that one,
    /// where no other test's calls can move the numbers. Each call leaks a few kilobytes.
    pub fn isolated() -> &'static Metrics {
        Box::leak(Box::new(Metrics::new()))
    }

    pub(crate) fn new() -> Metrics {
        let r = Registry::new();
        let messages = counter_vec(
            &r,
            "ccsync_messages_total",
            "Messages settled, by outcome and CC account.",
            &["outcome", "account"],
        );
        for o in [
            "synced",
            "dead_lettered",
            "requeued",
            "superseded",
            "parked",
            "unparked",
        ] {
            messages.with_label_values(&[o, ""]);
        }
        let account_requests = counter_vec(
            &r,
            "ccsync_account_requests_total",
            "CC API requests the rate limiter granted, per CC account (fair shares of the key).",
            &["account"],
        );
        let contacts_synced = IntCounter::new(
            "ccsync_contacts_synced_total",
            "Contacts Constant Contact confirmed.",
        )
        .expect("valid");
        r.register(Box::new(contacts_synced.clone()))
            .expect("unique");
        let api_requests = counter_vec(
            &r,
            "ccsync_api_requests_total",
            "Constant Contact calls, by endpoint and HTTP status.",
            &["endpoint", "status"],
        );
        let api_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "ccsync_api_request_duration_seconds",
                "Constant Contact call latency, by endpoint.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["endpoint"],
        )
        .expect("valid");
        r.register(Box::new(api_request_duration.clone()))
            .expect("unique");
        let rate_limited = counter_vec(
            &r,
            "ccsync_rate_limited_total",
            "429 answers from Constant Contact, by error_key.",
            &["error_key"],
        );
        let ratelimit_wait = histogram(
            &r,
            "ccsync_ratelimit_wait_seconds",
            "Time a call waited for the local and shared rate limits.",
            vec![0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0],
        );
        let daily_quota_remaining = IntGauge::new(
            "ccsync_daily_quota_remaining",
            "Requests left in today's (UTC) Constant Contact budget, as counted in Redis.",
        )
        .expect("valid");
        r.register(Box::new(daily_quota_remaining.clone()))
            .expect("unique");
        let daily_quota_projected = IntGauge::new(
            "ccsync_daily_quota_projected",
            "Requests today's (UTC) Constant Contact budget is projected to use by 00:00 UTC: used so far plus the last hour's pace (all replicas, all calls) until the reset.",
        )
        .expect("valid");
        r.register(Box::new(daily_quota_projected.clone()))
            .expect("unique");
        let token_refresh = counter_vec(
            &r,
            "ccsync_token_refresh_total",
            "Token refresh attempts by this replica, by result.",
            &["result"],
        );
        let auth_failures = counter_vec(
            &r,
            "ccsync_auth_failures_total",
            "Authentication failures, by reason.",
            &["reason"],
        );
        let auth_state = IntGaugeVec::new(
            Opts::new(
                "ccsync_auth_state",
                "Per CC account: 1 while a usable token set exists, 0 when re-authorization (ccsync auth login --account A) is needed.",
            ),
            &["account"],
        )
        .expect("valid");
        r.register(Box::new(auth_state.clone())).expect("unique");
        let access_token_expiry = Gauge::new(
            "ccsync_access_token_expiry_timestamp_seconds",
            "Expiry (JWT exp) of the access token this replica holds.",
        )
        .expect("valid");
        r.register(Box::new(access_token_expiry.clone()))
            .expect("unique");
        let refresh_lock_wait = histogram(
            &r,
            "ccsync_refresh_lock_wait_seconds",
            "Time spent waiting for the distributed refresh lock or another replica's refresh.",
            vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 15.0, 30.0],
        );
        let batch_size = histogram(
            &r,
            "ccsync_batch_size",
            "Contacts per import sent to Constant Contact.",
            vec![
                1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 20000.0, 40000.0,
            ],
        );
        let activities_in_flight = IntGauge::new(
            "ccsync_activities_in_flight",
            "Import activities created and not yet terminal.",
        )
        .expect("valid");
        r.register(Box::new(activities_in_flight.clone()))
            .expect("unique");
        let activity_duration = histogram(
            &r,
            "ccsync_activity_duration_seconds",
            "From import created to activity terminal.",
            vec![0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0],
        );
        let paused = IntGaugeVec::new(
            Opts::new(
                "ccsync_paused",
                "1 while consumption is paused, by reason and CC account (empty: the whole key).",
            ),
            &["reason", "account"],
        )
        .expect("valid");
        r.register(Box::new(paused.clone())).expect("unique");
        for reason in ["auth", "quota", "outage", "forbidden", "config"] {
            paused.with_label_values(&[reason, ""]).set(0);
        }
        let probes = IntCounterVec::new(
            Opts::new(
                "ccsync_pause_probes_total",
                "Requests sent to CC to see whether an outage or a 403 is over, by pause reason.",
            ),
            &["reason"],
        )
        .expect("valid");
        r.register(Box::new(probes.clone())).expect("unique");
        for reason in ["outage", "forbidden", "config"] {
            probes.with_label_values(&[reason]).inc_by(0);
        }
        let parked_accounts = IntGauge::new(
            "ccsync_parked_accounts",
            "CC accounts whose messages wait in their parking queue (connection dead).",
        )
        .expect("valid");
        r.register(Box::new(parked_accounts.clone()))
            .expect("unique");
        let held_bytes = IntGauge::new(
            "ccsync_held_bytes",
            "Bytes of the deliveries the worker holds unacked (bodies and decoded contacts).",
        )
        .expect("valid");
        r.register(Box::new(held_bytes.clone())).expect("unique");
        let held_messages = IntGauge::new(
            "ccsync_held_messages",
            "Deliveries the worker has read and holds unacked (batching, in flight).",
        )
        .expect("valid");
        r.register(Box::new(held_messages.clone())).expect("unique");
        let refresh_token_age = GaugeVec::new(
            Opts::new(
                "ccsync_refresh_token_age_seconds",
                "Per CC account: seconds since the stored refresh token was last used; CC kills it after 180 idle days.",
            ),
            &["account"],
        )
        .expect("valid");
        r.register(Box::new(refresh_token_age.clone()))
            .expect("unique");
        let build_info = IntGaugeVec::new(
            Opts::new("ccsync_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("valid");
        r.register(Box::new(build_info.clone())).expect("unique");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let dead_letters = counter_vec(
            &r,
            "ccsync_dead_letters_total",
            "Messages dead-lettered, by reason code.",
            &["reason"],
        );
        // Every reason at 0 from the first scrape (the set is closed: `contact::Reason`).
        for reason in crate::contact::Reason::ALL {
            dead_letters.with_label_values(&[reason.as_str()]);
        }
        // A plain counter: present at 0 from the first scrape, so an alert on its increase works.
        let dead_letters_unroutable = IntCounter::new(
            "ccsync_dead_letters_unroutable_total",
            "Dead letters the broker could not route (no queue bound to <queue>.dlx); the original stays in the queue.",
        )
        .expect("valid");
        r.register(Box::new(dead_letters_unroutable.clone()))
            .expect("unique");
        let ingest_requests = counter_vec(
            &r,
            "ccsync_ingest_requests_total",
            "ccsync ingest requests, by route and HTTP status.",
            &["route", "status"],
        );
        let ingest_messages = counter_vec(
            &r,
            "ccsync_ingest_messages_total",
            "Messages ccsync ingest published and the broker confirmed, by route.",
            &["route"],
        );
        let ingest_refused = counter_vec(
            &r,
            "ccsync_ingest_refused_total",
            "Messages or requests ccsync ingest refused or skipped, by route and reason.",
            &["route", "reason"],
        );
        let ingest_signature_failures = counter_vec(
            &r,
            "ccsync_ingest_signature_failures_total",
            "Failed signature checks at ccsync ingest, by route and reason (missing, bad, stale).",
            &["route", "reason"],
        );
        let ingest_publish_duration = HistogramVec::new(
            HistogramOpts::new(
                "ccsync_ingest_publish_duration_seconds",
                "From a request's first publish to the broker's last confirm, by route.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route"],
        )
        .expect("valid");
        r.register(Box::new(ingest_publish_duration.clone()))
            .expect("unique");
        let ingest_broker_up = IntGauge::new(
            "ccsync_ingest_broker_up",
            "1 while ccsync ingest holds an unblocked broker connection.",
        )
        .expect("valid");
        r.register(Box::new(ingest_broker_up.clone()))
            .expect("unique");
        let ingest_connect = counter_vec(
            &r,
            "ccsync_ingest_connect_total",
            "Connect-link requests at ccsync ingest (GET /connect/..., GET /oauth/callback), by outcome.",
            &["outcome"],
        );
        for outcome in CONNECT_OUTCOMES {
            ingest_connect.with_label_values(&[outcome]);
        }
        for route in INGEST_ROUTES {
            for status in ["202", "200", "400", "401", "413", "429", "503"] {
                ingest_requests.with_label_values(&[route, status]);
            }
            ingest_messages.with_label_values(&[route]);
            for reason in INGEST_REFUSALS {
                ingest_refused.with_label_values(&[route, reason]);
            }
            for reason in ["missing", "bad", "stale"] {
                ingest_signature_failures.with_label_values(&[route, reason]);
            }
            ingest_publish_duration.with_label_values(&[route]);
        }
        // Export every known label value from the start, so dashboards and alerts see 0 instead of
        // nothing before the first event.
        for k in [
            "throttled",
            "quota_exceeded",
            "activities_queued",
            "unrecognized",
        ] {
            rate_limited.with_label_values(&[k]);
        }
        // Every endpoint with the statuses the dashboard and alerts select (its success codes,
        // `429`, a `5..` code and `error`), so a `rate()` or a ratio never sits on an absent
        // series before the first call (issue 12).
        for (endpoint, statuses) in API_SERIES {
            for status in statuses.iter().chain(&["429", "500", "error"]) {
                api_requests.with_label_values(&[endpoint, status]);
            }
            api_request_duration.with_label_values(&[endpoint]);
        }
        for k in ["ok", "lost_race", "invalid_grant", "error"] {
            token_refresh.with_label_values(&[k]);
        }
        for k in ["invalid_grant", "unauthorized", "jwt_invalid"] {
            auth_failures.with_label_values(&[k]);
        }
        let resubscribes_prevented = counter_vec(
            &r,
            "ccsync_resubscribes_prevented_total",
            "Explicit-consent messages older than the contact's latest known opt-out that were kept from sign_up_form.",
            &["account"],
        );
        let optouts_published = counter_vec(
            &r,
            "ccsync_optouts_published_total",
            "contact.unsubscribed events the broker confirmed (CC's opt-out feed).",
            &["account"],
        );
        let optouts_lag = GaugeVec::new(
            Opts::new(
                "ccsync_optouts_feed_lag_seconds",
                "Seconds from CC's opt-out to its event's confirm (newest event of the last poll that published any).",
            ),
            &["account"],
        )
        .expect("valid");
        r.register(Box::new(optouts_lag.clone())).expect("unique");
        let optouts_last_poll = GaugeVec::new(
            Opts::new(
                "ccsync_optouts_last_poll_timestamp_seconds",
                "Unix time of the last successful opt-out poll of the account.",
            ),
            &["account"],
        )
        .expect("valid");
        r.register(Box::new(optouts_last_poll.clone()))
            .expect("unique");
        let optouts_leader = IntGauge::new(
            "ccsync_optouts_leader",
            "1 while this replica holds the opt-out feed's lease and polls CC (one replica at a time).",
        )
        .expect("valid");
        r.register(Box::new(optouts_leader.clone()))
            .expect("unique");
        Metrics {
            resubscribes_prevented,
            optouts_published,
            optouts_lag,
            optouts_last_poll,
            optouts_leader,
            registry: r,
            messages,
            account_requests,
            known_accounts: Default::default(),
            contacts_synced,
            api_requests,
            api_request_duration,
            rate_limited,
            ratelimit_wait,
            daily_quota_remaining,
            daily_quota_projected,
            token_refresh,
            auth_failures,
            auth_state,
            access_token_expiry,
            refresh_lock_wait,
            batch_size,
            activities_in_flight,
            activity_duration,
            paused,
            probes,
            held_bytes,
            held_messages,
            parked_accounts,
            refresh_token_age,
            dead_letters,
            dead_letters_unroutable,
            ingest_requests,
            ingest_messages,
            ingest_refused,
            ingest_signature_failures,
            ingest_publish_duration,
            ingest_broker_up,
            ingest_connect,
        }
    }
}

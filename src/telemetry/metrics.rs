//! The metrics every room records, behind typed methods: a caller names what happened, never a
//! label position, so a wrong label count cannot reach production (DESIGN §5.4).

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry,
};

/// Every metric ccsync exports. Rooms record through the typed methods below (a method per
/// thing that happens); the families stay private to the telemetry room.
pub struct Metrics {
    pub(super) registry: Registry,
    /// Settled messages by outcome (synced | dead_lettered | requeued | superseded | parked |
    /// unparked) and account ([`Metrics::account_label`]); record with [`Metrics::settled`]
    /// (private: a caller cannot get the labels wrong).
    pub(super) messages: IntCounterVec,
    /// CC requests granted by the rate limiter, per account (issue 13: the key's fair shares).
    pub(super) account_requests: IntCounterVec,
    /// The accounts labels may name (configured, or with a token set): anything else is
    /// `other`, so an upstream typo in an account id cannot grow the label set.
    pub(super) known_accounts: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Contacts CC confirmed (an import row counted in a completed activity, or a 2xx upsert).
    pub(super) contacts_synced: IntCounter,
    /// Every CC call by endpoint and HTTP status (`error` for transport failures).
    pub(super) api_requests: IntCounterVec,
    pub(super) api_request_duration: HistogramVec,
    /// 429s from CC by error_key (throttled | quota_exceeded | activities_queued).
    pub(super) rate_limited: IntCounterVec,
    /// Time spent waiting for the local and shared rate limits.
    pub(super) ratelimit_wait: Histogram,
    pub(super) daily_quota_remaining: IntGauge,
    /// Requests today (UTC) will end with at the current pace: used + pace × time to 00:00 UTC.
    pub(super) daily_quota_projected: IntGauge,
    /// Token refreshes by result: ok | invalid_grant | transport | throttled | lost_race | error.
    pub(super) token_refresh: IntCounterVec,
    /// Auth failures by reason: invalid_grant | unauthorized | revoked | no_token_set | ...
    pub(super) auth_failures: IntCounterVec,
    /// 1 while a usable token set exists, 0 when re-authorization is needed.
    /// Per account (operator-controlled, so a bounded label set).
    pub(super) auth_state: IntGaugeVec,
    pub(super) access_token_expiry: Gauge,
    pub(super) refresh_lock_wait: Histogram,
    /// Contacts per import sent to CC.
    pub(super) batch_size: Histogram,
    pub(super) activities_in_flight: IntGauge,
    /// From import created to activity terminal.
    pub(super) activity_duration: Histogram,
    /// 1 while consumption is paused, by reason (auth | quota | outage | forbidden | config) and
    /// account (empty for key-wide pauses: quota); set with [`Metrics::set_paused`].
    pub(super) paused: IntGaugeVec,
    /// Probes sent while paused for an outage or a 403, by reason.
    pub(super) probes: IntCounterVec,
    /// Bytes of the deliveries the worker holds (against `worker.max_held_bytes`).
    pub(super) held_bytes: IntGauge,
    /// Deliveries the worker holds unacked (read from the broker, not yet settled).
    pub(super) held_messages: IntGauge,
    /// Accounts whose messages this process parks (their CC connection is dead).
    pub(super) parked_accounts: IntGauge,
    /// Per account.
    pub(super) refresh_token_age: GaugeVec,
    /// Dead letters by reason code (the `x-ccsync-reason` header).
    pub(super) dead_letters: IntCounterVec,
    /// Dead letters the broker returned as unroutable (`<queue>.dlx` has no bound queue): the
    /// original stays in the queue unacked. Anything above 0 needs an operator (re-declare
    /// `<queue>.dead` and its binding, or restart a worker, which declares the topology).
    pub(super) dead_letters_unroutable: IntCounter,
    /// `ccsync ingest`: requests by route (`contacts` | `shopify`) and HTTP status.
    pub(super) ingest_requests: IntCounterVec,
    /// `ccsync ingest`: messages the broker confirmed, by route.
    pub(super) ingest_messages: IntCounterVec,
    /// `ccsync ingest`: messages (or whole requests) refused or skipped, by route and reason
    /// (see [`INGEST_REFUSALS`]).
    pub(super) ingest_refused: IntCounterVec,
    /// `ccsync ingest`: signature checks that failed, by route and reason (missing | bad | stale).
    pub(super) ingest_signature_failures: IntCounterVec,
    /// `ccsync ingest`: from the first publish of a request to the broker's last confirm.
    pub(super) ingest_publish_duration: HistogramVec,
    /// `ccsync ingest`: 1 while the broker connection is up and unblocked.
    pub(super) ingest_broker_up: IntGauge,
    /// `ccsync ingest`: connect-link requests by outcome (see [`CONNECT_OUTCOMES`]).
    pub(super) ingest_connect: IntCounterVec,
    /// Explicit-consent messages older than the contact's latest known opt-out, kept away from
    /// `sign_up_form` (it would re-subscribe them), per account (issue 15).
    pub(super) resubscribes_prevented: IntCounterVec,
    /// `contact.unsubscribed` events the broker confirmed, per account (the opt-out feed).
    pub(super) optouts_published: IntCounterVec,
    /// Seconds from CC's opt-out to its event's confirm, for the newest event of the account's
    /// last poll that published any.
    pub(super) optouts_lag: GaugeVec,
    /// Unix time of the account's last successful opt-out poll (alert when it stops moving).
    pub(super) optouts_last_poll: GaugeVec,
    /// 1 while this replica holds the opt-out feed's lease (exactly one replica should).
    pub(super) optouts_leader: IntGauge,
}

impl Metrics {
    /// Accounts the configuration names or the token store holds: labels may name them.
    pub(crate) fn know_account(&self, account: &str) {
        let mut k = self.known_accounts.lock().expect("not poisoned");
        if !k.contains(account) {
            k.insert(account.to_string());
        }
    }

    /// The `account` label for `account`: itself when known ([`Metrics::know_account`]), else
    /// `other` (a typo upstream must not grow the label set; DESIGN §5.4).
    pub(crate) fn account_label(&self, account: &str) -> String {
        if account.is_empty()
            || self
                .known_accounts
                .lock()
                .expect("not poisoned")
                .contains(account)
        {
            account.to_string()
        } else {
            "other".to_string()
        }
    }

    /// Count `n` messages of `account` settled with `outcome`.
    pub(crate) fn settled(&self, outcome: &str, account: &str, n: u64) {
        self.messages
            .with_label_values(&[outcome, &self.account_label(account)])
            .inc_by(n);
    }

    /// Messages settled with `outcome`, every account together.
    pub(crate) fn settled_total(&self, outcome: &str) -> u64 {
        use prometheus::core::Collector;
        self.messages
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "outcome" && l.value() == outcome)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// The value of `ccsync_paused{reason, account}`.
    pub fn paused_value(&self, reason: &str, account: &str) -> i64 {
        self.paused
            .with_label_values(&[reason, &self.account_label(account)])
            .get()
    }

    /// `ccsync_paused{reason, account}`; `account` empty for key-wide pauses.
    pub(crate) fn set_paused(&self, reason: &str, account: &str, on: bool) {
        self.paused
            .with_label_values(&[reason, &self.account_label(account)])
            .set(i64::from(on));
    }

    // ---- recording, one method per thing that happens --------------------------------------

    /// The limiter granted `account` one CC request (its share of the key).
    pub(crate) fn request_granted(&self, account: &str) {
        self.account_requests
            .with_label_values(&[&self.account_label(account)])
            .inc();
    }

    /// `n` contacts CC confirmed (import rows of a completed activity, or 2xx upserts).
    pub(crate) fn contacts_synced(&self, n: u64) {
        self.contacts_synced.inc_by(n);
    }

    /// One CC call to `endpoint` (DESIGN §5.4) answered with `status` (`error`: no answer).
    pub(crate) fn api_request(&self, endpoint: &str, status: &str, took: std::time::Duration) {
        self.api_requests
            .with_label_values(&[endpoint, status])
            .inc();
        self.api_request_duration
            .with_label_values(&[endpoint])
            .observe(took.as_secs_f64());
    }

    /// A 429 from CC, by its error key (`throttled` | `quota_exceeded` | `activities_queued` |
    /// `unrecognized`).
    pub(crate) fn rate_limited(&self, error_key: &str) {
        self.rate_limited.with_label_values(&[error_key]).inc();
    }

    /// Time a request waited for the local and shared limits.
    pub(crate) fn ratelimit_waited(&self, took: std::time::Duration) {
        self.ratelimit_wait.observe(took.as_secs_f64());
    }

    /// Today's (UTC) requests left on the key.
    pub(crate) fn set_daily_quota_remaining(&self, left: i64) {
        self.daily_quota_remaining.set(left);
    }

    /// What today will end with at the current pace.
    pub(crate) fn set_daily_quota_projected(&self, projected: i64) {
        self.daily_quota_projected.set(projected);
    }

    /// A token refresh ended with `result` (`ok` | `invalid_grant` | `transport` | `throttled` |
    /// `lost_race` | `error`).
    pub(crate) fn token_refreshed(&self, result: &str) {
        self.token_refresh.with_label_values(&[result]).inc();
    }

    /// An auth failure, by reason.
    pub(crate) fn auth_failed(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// Whether `account` has a usable token set (an account with a token set is known).
    pub(crate) fn set_auth_state(&self, account: &str, usable: bool) {
        self.know_account(account);
        self.auth_state
            .with_label_values(&[&self.account_label(account)])
            .set(i64::from(usable));
    }

    /// A token set of `account` in use: its access token's expiry and its refresh token's age.
    pub(crate) fn token_set_seen(&self, account: &str, expires_at: i64, refreshed_at: i64) {
        self.know_account(account);
        self.access_token_expiry.set(expires_at as f64);
        self.refresh_token_age
            .with_label_values(&[&self.account_label(account)])
            .set((crate::clock::now_unix() - refreshed_at).max(0) as f64);
    }

    /// Time spent for the refresh lock (or for another replica's refresh).
    pub(crate) fn refresh_lock_waited(&self, took: std::time::Duration) {
        self.refresh_lock_wait.observe(took.as_secs_f64());
    }

    /// An import of `contacts` rows sent to CC.
    pub(crate) fn import_sent(&self, contacts: usize) {
        self.batch_size.observe(contacts as f64);
    }

    /// Activities this process waits on.
    pub(crate) fn set_activities_in_flight(&self, n: usize) {
        self.activities_in_flight.set(n as i64);
    }

    /// An activity reached a terminal state `took` after its import was created.
    pub(crate) fn activity_finished(&self, took: std::time::Duration) {
        self.activity_duration.observe(took.as_secs_f64());
    }

    /// A probe sent while paused for `reason` (`outage` | `forbidden`).
    pub(crate) fn probe_sent(&self, reason: &str) {
        self.probes.with_label_values(&[reason]).inc();
    }

    /// Bytes of the deliveries held now.
    pub(crate) fn set_held_bytes(&self, bytes: usize) {
        self.held_bytes.set(bytes as i64);
    }

    /// A delivery read from the broker and held (`held`) or settled (`!held`).
    pub(crate) fn delivery_held(&self, held: bool) {
        if held {
            self.held_messages.inc();
        } else {
            self.held_messages.dec();
        }
    }

    /// Accounts whose messages this process parks.
    pub(crate) fn set_parked_accounts(&self, n: usize) {
        self.parked_accounts.set(n as i64);
    }

    /// A dead letter with `reason` (the `x-ccsync-reason` header).
    pub(crate) fn dead_lettered(&self, reason: &str) {
        self.dead_letters.with_label_values(&[reason]).inc();
    }

    /// A dead letter the broker returned as unroutable.
    pub(crate) fn dead_letter_unroutable(&self) {
        self.dead_letters_unroutable.inc();
    }

    /// `ccsync ingest` answered a request on `route` with `status`.
    pub(crate) fn ingest_answered(&self, route: &str, status: u16) {
        self.ingest_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
    }

    /// `ccsync ingest`: `n` messages on `route` confirmed by the broker, `took` from the first
    /// publish to the last confirm.
    pub(crate) fn ingest_confirmed(&self, route: &str, n: u64, took: std::time::Duration) {
        self.ingest_messages.with_label_values(&[route]).inc_by(n);
        self.ingest_publish_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// `ccsync ingest`: `n` messages (or a whole request) refused or skipped on `route`, by reason
    /// ([`super::INGEST_REFUSALS`]).
    pub(crate) fn ingest_refused(&self, route: &str, reason: &str, n: u64) {
        self.ingest_refused
            .with_label_values(&[route, reason])
            .inc_by(n);
    }

    /// `ccsync ingest`: a signature check failed (`missing` | `bad` | `stale`).
    pub(crate) fn ingest_signature_failed(&self, route: &str, reason: &str) {
        self.ingest_signature_failures
            .with_label_values(&[route, reason])
            .inc();
    }

    /// `ccsync ingest`: whether the broker connection is up and unblocked.
    pub(crate) fn set_ingest_broker_up(&self, up: bool) {
        self.ingest_broker_up.set(i64::from(up));
    }

    /// A connect-link request ended with `outcome` ([`super::CONNECT_OUTCOMES`]).
    pub(crate) fn connect_outcome(&self, outcome: &str) {
        self.ingest_connect.with_label_values(&[outcome]).inc();
    }

    /// `n` explicit-consent messages of `account` kept away from `sign_up_form`.
    pub(crate) fn resubscribes_prevented(&self, account: &str, n: u64) {
        self.resubscribes_prevented
            .with_label_values(&[&self.account_label(account)])
            .inc_by(n);
    }

    /// `n` `contact.unsubscribed` events of `account` confirmed by the broker.
    pub(crate) fn optouts_published(&self, account: &str, n: u64) {
        self.optouts_published
            .with_label_values(&[&self.account_label(account)])
            .inc_by(n);
    }

    /// Seconds from CC's opt-out to its event's confirm (the newest of the last poll).
    pub(crate) fn set_optouts_lag(&self, account: &str, secs: f64) {
        self.optouts_lag
            .with_label_values(&[&self.account_label(account)])
            .set(secs);
    }

    /// `account`'s opt-out poll succeeded at unix time `at`.
    pub(crate) fn optouts_polled(&self, account: &str, at: i64) {
        self.optouts_last_poll
            .with_label_values(&[&self.account_label(account)])
            .set(at as f64);
    }

    /// Whether this replica holds the opt-out feed's lease.
    pub(crate) fn set_optouts_leader(&self, leader: bool) {
        self.optouts_leader.set(i64::from(leader));
    }
}

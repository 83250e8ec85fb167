//! The simulator's knobs ([`SimConfig`], fixed at start) and fault switches ([`Faults`], changed at
//! run time through [`super::Sim::set_faults`] or `PUT /_sim/faults`, whose JSON field names are
//! the Rust field names; a missing field is off).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the token endpoint treats a refresh token after it has been used (reference §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefreshMode {
    /// Single use: every refresh returns a new refresh token and kills every older one of the
    /// same grant (CC's recommended app setting).
    Rotating,
    /// The same refresh token value comes back on every refresh; it only dies after 180 idle days.
    LongLived,
}

/// Start-time configuration. `Default` holds CC's values (reference §11).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Access-token lifetime (CC: 24 h, static).
    pub token_ttl: Duration,
    /// Refresh-token mode of the simulated app.
    pub refresh_mode: RefreshMode,
    /// How long a just-rotated refresh token keeps working (CC: unknown; Okta default 30 s;
    /// default here 0, the strictest).
    pub grace: Duration,
    /// Okta-style reuse detection: presenting a rotated token after the grace window also kills
    /// the grant's current refresh token. Off by default (plain `invalid_grant` for the reuser).
    pub reuse_revokes_family: bool,
    /// Idle expiry of refresh tokens on the simulator clock (CC: 180 days, both modes).
    pub refresh_idle_expiry: Duration,
    /// API requests allowed in any sliding 1-second window per client_id (CC: 4).
    pub per_second: u32,
    /// API requests per client_id per UTC day of the simulator clock (CC: 10,000).
    pub daily_quota: u64,
    /// Token-endpoint requests in any sliding 1-second window per client_id (CC: 1).
    pub token_per_second: u32,
    /// Approve every device code as soon as it is issued, and every `GET /authorize` at once
    /// (302 to the redirect URI with a code) instead of showing the simulated consent page
    /// (tests, demo).
    pub auto_approve: bool,
    /// Redirect URIs registered for the app (CC's developer portal). `GET /authorize` refuses
    /// any other, exactly compared, with a 400 page and no redirect (RFC 6749 §4.1.2.1). Empty
    /// by default: tests register what they use.
    pub redirect_uris: Vec<String>,
    /// Lifetime of an authorization code (CC: 5 minutes, single use, reference §2.4).
    pub code_ttl: Duration,
    /// Device-flow polling interval announced to clients, seconds (Okta default 5).
    pub device_interval_secs: u64,
    /// Device-code lifetime, seconds (Okta default 600).
    pub device_expires_secs: u64,
    /// Real time an import activity takes from creation to `completed` (half of it is spent
    /// `initialized`, the other half `processing`).
    pub processing: Duration,
    /// Real time added to `processing` per 1,000 rows read (pro rata: 500 rows add half), so big
    /// imports stay non-terminal longer, as CC's do (CC takes minutes for 40,000 rows; the
    /// reference gives no figure, §6). Default 0: every import takes `processing` alone. Adds
    /// to [`Faults::processing_per_1000_rows_ms`].
    pub processing_per_1000_rows: Duration,
    /// Non-terminal activities allowed per account before imports get 429 (CC: 1,000).
    pub max_queued_activities: usize,
    /// When set, HTTP Basic client authentication must carry this secret (confidential app).
    /// When unset, any secret (or none: public client) is accepted.
    pub client_secret: Option<String>,
    /// Seed of the fault RNG; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Tests: the simulator clock stands still and only [`super::Sim::advance_clock`] moves it,
    /// so rate windows, token expiry and device-code timing do not depend on how fast a loaded
    /// machine runs the test. Activity processing still runs on real time.
    pub freeze_clock: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(86_400),
            refresh_mode: RefreshMode::Rotating,
            grace: Duration::ZERO,
            reuse_revokes_family: false,
            refresh_idle_expiry: Duration::from_secs(180 * 86_400),
            per_second: 4,
            daily_quota: 10_000,
            token_per_second: 1,
            auto_approve: false,
            redirect_uris: Vec::new(),
            code_ttl: Duration::from_secs(300),
            device_interval_secs: 5,
            device_expires_secs: 600,
            processing: Duration::from_millis(1_000),
            processing_per_1000_rows: Duration::ZERO,
            max_queued_activities: 1_000,
            client_secret: None,
            seed: None,
            freeze_clock: false,
        }
    }
}

/// What a "commit, then lose the response" fault does to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostMode {
    /// The work is committed, then the connection is closed without a single response byte.
    Drop,
    /// The work is committed, then the request never gets an answer (until shutdown).
    Hang,
}

/// A "commit, then lose the response" switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostResponse {
    pub mode: LostMode,
    /// How many more responses to lose; `None` = every one until the fault is cleared. Counts
    /// down by one per lost response; at 0 the switch turns itself off.
    #[serde(default)]
    pub times: Option<u32>,
}

/// Fault switches. All off by default; rates are probabilities in 0.0–1.0 (tests use 0 or 1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Added before every non-admin request is handled.
    pub latency_ms: u64,
    /// Share of non-admin requests answered 503 before anything else happens (nothing is counted
    /// against rate limits, nothing is committed).
    pub error_rate: f64,
    /// Share of non-admin requests that never get an answer (nothing committed).
    pub hang_rate: f64,
    /// When set, `latency_ms`, `error_rate` and `hang_rate` only apply to paths starting with it
    /// (e.g. `/v3/` or `/oauth2/default/v1/token`).
    pub path_prefix: Option<String>,
    /// Successful token responses (all grants) are committed, then lost.
    pub token_lost_response: Option<LostResponse>,
    /// Accepted imports (`201`) are committed (the activity exists and will run), then lost.
    pub import_lost_response: Option<LostResponse>,
    /// Share of new import activities that end `failed` (nothing written).
    pub activity_failure_rate: f64,
    /// Extra real time added to every new activity's processing.
    pub extra_processing_ms: u64,
    /// Random extra processing in 0..=this many ms per new activity (activities then complete
    /// out of order).
    pub processing_jitter_ms: u64,
    /// Import rows whose email contains this text (case-insensitive) become row errors.
    pub reject_emails_containing: Option<String>,
    /// Real ms added to a new import's processing per 1,000 rows read (pro rata), on top of
    /// [`SimConfig::processing_per_1000_rows`]: an import of N rows stays
    /// `initialized`/`processing` for `processing + N/1000 × this` (+ `extra_processing_ms`,
    /// jitter). CC takes minutes for 40,000 rows (reference §6; no exact figure is documented).
    pub processing_per_1000_rows_ms: u64,
    /// Every `/v3` call with a valid token answers 403 (array form, `error_key` `forbidden`,
    /// the Swagger's 403 text), as CC does for a deactivated application or a user who lost a
    /// privilege (reference §7: one code for all three causes). The token endpoint and the admin
    /// API are unaffected. The call is counted like the scope 403 (after the rate limits).
    pub forbidden: bool,
    /// Share of `POST /v3/contacts/sign_up_form` calls that answer 409 `contacts.api.conflict`
    /// ("simultaneous requests attempting to modify the same contact", reference §5.1, §7)
    /// without writing the contact. Checked after body validation (a bad body stays 400).
    pub signup_conflict_rate: f64,
    /// Share of otherwise valid import rows that are skipped as correctable: not written, counted
    /// in `correctable_count` (reference §6.1, Swagger `ActivityStatus`), still counted in
    /// `items_total_count`. Drawn per row **per import** (random, not a hash of the email), so
    /// re-sending the same row in a later import can succeed, as it would after a human
    /// corrected it in CC's UI.
    pub correctable_rate: f64,
    /// Share of `GET /v3/activities/{id}` answers that are 404 `activities.api.not_found` (what
    /// CC answers after its 10-day retention or for a bad id, reference §6.5), although the
    /// activity exists and keeps running. Counted against the rate limits like a real 404.
    pub activity_not_found_rate: f64,
    /// Share of `GET /v3/activities/{id}` answers that are a 5xx (500 or 503 at random, both
    /// declared by the Swagger, reference §7) in CC's array form; the activity is unaffected.
    /// Unlike `error_rate`, which answers before the gate and counts nothing, these are counted
    /// (the failure is behind CC's gateway). `error_rate` + `path_prefix` cannot express this:
    /// the prefix `/v3/activities/` also matches `POST /v3/activities/contacts_json_import`.
    pub activity_poll_error_rate: f64,
}

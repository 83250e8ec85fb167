//! A faithful local Constant Contact V3 (issue 2, DESIGN §5.5): the OAuth server, the `/v3` API
//! the worker uses, CC's limits and error bodies, fault switches and introspection.
//!
//! Written from `reference/constant-contact-v3.md` and CC's Swagger only, never from the
//! worker's wire types, so tests check the contract instead of echoing it. Where the reference
//! is silent, each module documents the strictest plausible choice it made:
//! [`tokens`] (rotation, grace, idle expiry), [`oauth`] (parameters, client auth, token 429),
//! [`limits`] (sliding window, quota, what counts), [`activity`] (states, counts),
//! [`import`] (4 MB cut, row errors, duplicates), [`api`] (401, 415, 400 forms), [`schema`]
//! (Swagger → JSON Schema), [`faults`] (drop, hang, 503), [`admin`] (the `/_sim/` API).
//!
//! Harsh-CC switches ([`Faults`], all off by default; `PUT /_sim/faults` or [`Sim::set_faults`]):
//! processing that grows with the rows of an import (`processing_per_1000_rows_ms`, also
//! [`SimConfig::processing_per_1000_rows`]), 403 on every API call (`forbidden`), 409 on
//! `sign_up_form` (`signup_conflict_rate`), rows skipped as correctable (`correctable_rate`),
//! 404 and 5xx on activity polls (`activity_not_found_rate`, `activity_poll_error_rate`).
//! Always on, as in CC: 400 for an import naming an unknown list, 429 past
//! [`SimConfig::max_queued_activities`] queued activities.
//!
//! **Accounts**: the simulator keeps one store per CC account ([`store::Stores`]): contacts,
//! lists, custom fields and activities. A `/v3` call uses the store of the account its access
//! token names (`platform_user_id`: [`Sim::issue_tokens`]`(client, account)`,
//! [`Sim::approve_for`], `?account=` on the admin approval); another account's list ids are
//! unknown and its activities 404. Rate limits and the daily quota stay per API key (client_id),
//! across accounts, as CC's are. The handle's [`Sim::contacts`], [`Sim::contact`],
//! [`Sim::create_list`], [`Sim::create_custom_field`] and the admin API without `?account=` mean
//! account [`DEFAULT_ACCOUNT`]; the `_of`/`_for` variants name one; [`Sim::counters`] totals
//! every account.
//!
//! Start one in-process with [`Sim::start`] (random port) or standalone with `ccsync sim`.
//! Everything the handle offers is also on the admin HTTP API under `/_sim/` (see
//! `docs/simulator.md`).

pub mod activity;
pub mod admin;
pub mod api;
pub mod bulk;
pub mod bytecut;
pub mod cli;
pub mod config;
pub mod contact_writes;
pub mod contacts;
pub mod faults;
pub mod import;
pub mod jwt;
pub mod limits;
pub mod logins;
pub mod oauth;
pub mod oauth_error;
pub mod resources;
pub mod schema;
pub mod state;
pub mod store;
pub mod tokens;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use uuid::Uuid;

pub use cli::{SimArgs, run_cli, run_standalone};
pub use config::{Faults, LostMode, LostResponse, RefreshMode, SimConfig};
pub use state::RequestRecord;
pub use store::{DEFAULT_ACCOUNT, SimContact};

use faults::{ConnHandle, KillListener};
use state::{Shared, lock};

/// Scope `issue_tokens` grants (what a sync worker asks for, reference §2.2).
pub const DEFAULT_SCOPE: &str = "contact_data offline_access";

/// A running simulator. Dropping it without [`Sim::shutdown`] leaves the server task running
/// until the runtime ends.
pub struct Sim {
    shared: Arc<Shared>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Request counters (admin `GET /_sim/counters`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Counters {
    pub requests: u64,
    pub api_requests: u64,
    pub token_requests: u64,
    /// Successful refresh-token grants.
    pub refreshes: u64,
    /// Status code → count, over all logged requests.
    pub by_status: BTreeMap<u16, u64>,
    /// `error` / `error_key` → count.
    pub by_error: BTreeMap<String, u64>,
    /// Requests whose response was lost or that hang (no status).
    pub unanswered: u64,
    /// Activities, completed and failed ones, and contacts: totals over **every account**.
    pub activities: u64,
    pub activities_completed: u64,
    pub activities_failed: u64,
    pub contacts: u64,
    /// account → contacts in its store.
    #[serde(default)]
    pub contacts_by_account: BTreeMap<String, u64>,
    /// account → activities in its store.
    #[serde(default)]
    pub activities_by_account: BTreeMap<String, u64>,
    /// client_id → API requests counted against today's quota (simulator UTC day).
    pub quota_used_today: BTreeMap<String, u64>,
}

impl Sim {
    /// Start on `127.0.0.1:0` (a free port).
    pub async fn start(cfg: SimConfig) -> std::io::Result<Sim> {
        Self::start_on(0, cfg).await
    }

    /// Start on `127.0.0.1:port` (0 = any free port).
    pub async fn start_on(port: u16, cfg: SimConfig) -> std::io::Result<Sim> {
        Self::start_at(std::net::SocketAddr::from(([127, 0, 0, 1], port)), cfg).await
    }

    /// Start on any address (the CLI may bind 0.0.0.0 for containers).
    pub async fn start_at(addr: std::net::SocketAddr, cfg: SimConfig) -> std::io::Result<Sim> {
        let key = jwt::signing_key()?;
        // Load the Swagger once per process before serving (a bad document fails the start).
        schema::preload().map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(addr).await?;
        let port = listener.local_addr()?.port();
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let shared = Arc::new(Shared::new(cfg, key, format!("http://{host}:{port}")));
        let app = router(shared.clone());
        let stop = shared.shutdown.clone();
        let task = tokio::spawn(async move {
            let svc = app.into_make_service_with_connect_info::<ConnHandle>();
            if let Err(e) = axum::serve(KillListener(listener), svc)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::warn!(error = %e, "simulator server stopped with an error");
            }
        });
        Ok(Sim { shared, port, task })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }
    /// `{base}/v3` (what `CCSYNC_API_BASE_URL` points at).
    pub fn api_base_url(&self) -> String {
        format!("{}/v3", self.shared.base_url)
    }
    /// `{base}/oauth2/default/v1` (what `CCSYNC_AUTH_BASE_URL` points at).
    pub fn auth_base_url(&self) -> String {
        format!("{}/oauth2/default/v1", self.shared.base_url)
    }
    /// `{base}/oauth2/default/v1/keys`
    pub fn jwks_url(&self) -> String {
        format!("{}/keys", self.auth_base_url())
    }

    /// A fresh token pair as if a device flow for `account` had just been approved
    /// (scope `contact_data offline_access`). Its API calls read and write `account`'s store;
    /// its requests count against `client_id`'s rate limits and quota.
    pub fn issue_tokens(&self, client_id: &str, account: &str) -> (String, String) {
        let sh = &self.shared;
        let t = lock(&sh.auth).new_grant(
            client_id,
            account,
            DEFAULT_SCOPE,
            sh.clock.mono(),
            &sh.cfg,
            sh.key,
            sh.clock.now().unix_timestamp(),
        );
        (t.access_token, t.refresh_token.unwrap_or_default())
    }

    /// Approve a pending user code for account `default`.
    pub fn approve(&self, user_code: &str) -> bool {
        self.approve_for(user_code, DEFAULT_ACCOUNT)
    }
    /// Approve a pending user code for `account` (its tokens carry it as `platform_user_id`, and
    /// their API calls see only that account's store).
    pub fn approve_for(&self, user_code: &str, account: &str) -> bool {
        lock(&self.shared.auth).decide(user_code, Some(account))
    }
    /// Sign the simulated browser in to CC as `account`: from now on an authorize request without
    /// the sim-only `account` parameter (a real client never sends one: a connect link, a
    /// browser following redirects) approves for this account. Default: `default`.
    pub fn sign_in(&self, account: &str) {
        *lock(&self.shared.signed_in) = account.to_string();
    }
    /// Refuse a pending user code (the poller then gets `access_denied`).
    pub fn deny(&self, user_code: &str) -> bool {
        lock(&self.shared.auth).decide(user_code, None)
    }

    pub fn set_faults(&self, f: Faults) {
        *lock(&self.shared.faults) = f;
    }
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Move the simulator clock forward (token expiry, idle expiry, device codes, rate windows,
    /// the quota day). Activity processing stays on real time.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
    }
    /// The simulator clock (UTC).
    pub fn now(&self) -> OffsetDateTime {
        self.shared.clock.now()
    }
    /// How far the simulator clock is ahead of real time.
    pub fn clock_offset(&self) -> Duration {
        self.shared.clock.offset()
    }

    /// Kill every access and refresh token (the user revoked the app).
    pub fn revoke_all(&self) {
        lock(&self.shared.auth).revoke_all();
    }

    /// Every non-admin request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    pub fn counters(&self) -> Counters {
        admin::counters(&self.shared)
    }

    /// Create a contact list in account `default` (as if made in CC's UI); returns the existing
    /// one's id if the name exists. See [`Sim::create_list_for`].
    pub fn create_list(&self, name: &str) -> Uuid {
        self.create_list_for(DEFAULT_ACCOUNT, name)
    }

    /// Create a contact list in `account`'s store; returns the existing one's id if that account
    /// has a list of this name. The id is unknown to every other account.
    pub fn create_list_for(&self, account: &str, name: &str) -> Uuid {
        let now = self.shared.clock.now();
        self.shared
            .with_store(account, |s| match s.create_list(name, None, false, now) {
                Ok(id) => id,
                Err(_) => s
                    .lists
                    .iter()
                    .find(|l| l.name == name)
                    .map_or_else(Uuid::nil, |l| l.id),
            })
    }

    /// Create a custom field (type `string`) in account `default`; returns the existing one's id
    /// if the name exists. See [`Sim::create_custom_field_for`].
    pub fn create_custom_field(&self, name: &str) -> Uuid {
        self.create_custom_field_for(DEFAULT_ACCOUNT, name)
    }

    /// Create a custom field (type `string`) in `account`'s store; returns the existing one's id
    /// if that account has a field of this name.
    pub fn create_custom_field_for(&self, account: &str, name: &str) -> Uuid {
        let now = self.shared.clock.now();
        self.shared
            .with_store(account, |s| match s.create_field(name, "string", now) {
                Ok(id) => id,
                Err(_) => s
                    .field_by_name(&name.replace(' ', "_"))
                    .map_or_else(Uuid::nil, |f| f.id),
            })
    }

    /// Every contact of account `default`, after settling the activities that are due. Contacts
    /// written with another account's token are not here: see [`Sim::contacts_of`],
    /// [`Sim::accounts`].
    pub fn contacts(&self) -> Vec<SimContact> {
        self.contacts_of(DEFAULT_ACCOUNT)
    }

    /// Every contact of `account` (empty if it has no store).
    pub fn contacts_of(&self, account: &str) -> Vec<SimContact> {
        self.shared
            .read_store(account, |s| s.contacts.values().cloned().collect())
    }

    /// One contact of account `default` by email (case-insensitive).
    pub fn contact(&self, email: &str) -> Option<SimContact> {
        self.contact_of(DEFAULT_ACCOUNT, email)
    }

    /// One contact of `account` by email (case-insensitive).
    pub fn contact_of(&self, account: &str, email: &str) -> Option<SimContact> {
        self.shared
            .read_store(account, |s| s.contact(email).cloned())
    }

    /// The person behind `email` (account `default`) clicks the unsubscribe link of an email:
    /// opted out with source `Contact` and the simulator clock's now as its date. `None` when
    /// there is no such (non-deleted) contact.
    pub fn unsubscribe_by_link(&self, email: &str, reason: Option<&str>) -> Option<SimContact> {
        self.unsubscribe_by_link_of(DEFAULT_ACCOUNT, email, reason)
    }

    /// [`Sim::unsubscribe_by_link`] in `account`.
    pub fn unsubscribe_by_link_of(
        &self,
        account: &str,
        email: &str,
        reason: Option<&str>,
    ) -> Option<SimContact> {
        admin::unsubscribe_by_link(&self.shared, account, email, reason.map(str::to_owned))
    }

    /// Every account that has a store (it called the API or was given data), in name order.
    pub fn accounts(&self) -> Vec<String> {
        lock(&self.shared.stores)
            .iter()
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Stop serving: hanging requests are released (their connections dropped), then the server
    /// drains.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let _ = self.task.await;
    }
}

fn router(sh: Arc<Shared>) -> Router {
    let oauth = Router::new()
        .route("/device/authorize", post(oauth::device_authorize))
        .route("/token", post(oauth::token))
        .route("/authorize", get(oauth::authorize))
        .route("/keys", get(oauth::keys));
    Router::new()
        .nest("/oauth2/default/v1", oauth)
        .nest("/v3", api::router(sh.clone()))
        .nest("/_sim", admin::router())
        // CC takes bodies over 4 MB (and drops the excess, see import.rs); the simulator reads
        // up to 64 MiB before answering 413.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            sh.clone(),
            faults::outer,
        ))
        .with_state(sh)
}

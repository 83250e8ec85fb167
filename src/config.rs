//! Typed settings: `config/default.toml` (compiled in), then an optional file named by
//! `CCSYNC_CONFIG`, then `CCSYNC_` environment variables (DESIGN §5.3).
//!
//! Parse, don't validate: [`Settings::load`] either returns settings whose URLs, list ids and keys
//! are known good, or a [`ConfigError`] whose one line names the key and the problem. Secrets
//! (`client_secret`, `token_encryption_key`, and the broker/Redis URLs, which carry passwords) are
//! [`SecretString`]s: their `Debug` is redacted and [`Settings::redacted`] prints them masked.

use std::net::SocketAddr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

/// The defaults, compiled in so the binary runs without the repository next to it.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// What went wrong with the configuration. Fatal at start: fix the named key and restart.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error("configuration: {0}")]
    Load(String),
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// The raw, layered document. Kept private: the rest of the crate sees [`Settings`].
#[derive(Debug, Deserialize)]
struct Raw {
    amqp_url: SecretString,
    redis_url: SecretString,
    #[serde(default, deserialize_with = "string_like")]
    amqp_ca_file: String,
    #[serde(default, deserialize_with = "string_like")]
    amqp_client_cert_file: String,
    #[serde(default, deserialize_with = "string_like")]
    amqp_client_key_file: String,
    #[serde(default, deserialize_with = "string_like")]
    redis_ca_file: String,
    #[serde(default, deserialize_with = "string_like")]
    redis_client_cert_file: String,
    #[serde(default, deserialize_with = "string_like")]
    redis_client_key_file: String,
    #[serde(deserialize_with = "string_like")]
    queue: String,
    #[serde(deserialize_with = "string_like")]
    client_id: String,
    #[serde(deserialize_with = "secret_like")]
    client_secret: SecretString,
    api_base_url: String,
    auth_base_url: String,
    #[serde(deserialize_with = "string_like")]
    default_list_ids: String,
    #[serde(deserialize_with = "secret_like")]
    token_encryption_key: SecretString,
    metrics_addr: String,
    log_format: String,
    redis: RawRedis,
    auth: AuthSettings,
    ratelimit: RateLimitSettings,
    worker: WorkerSettings,
    testing: TestingSettings,
    #[serde(default)]
    accounts: std::collections::BTreeMap<String, RawAccount>,
    ingest: RawIngest,
    #[serde(deserialize_with = "string_like")]
    events_exchange: String,
    optouts: RawOptouts,
}

/// `[optouts]` as written; validated into [`OptoutSettings`].
#[derive(Debug, Deserialize)]
struct RawOptouts {
    enabled: bool,
    poll_secs: u64,
    #[serde(default, deserialize_with = "string_like")]
    backfill_from: String,
}

/// The opt-out feed (issue 15): CC's own opt-outs published as `contact.unsubscribed` events.
#[derive(Debug, Clone)]
pub struct OptoutSettings {
    /// `CCSYNC_OPTOUTS__ENABLED`: false keeps the feed off (no poll, no lease).
    pub enabled: bool,
    /// `CCSYNC_OPTOUTS__POLL_SECS`: how often the feed asks CC, per account (one request a poll
    /// and account, plus one per further 500 opt-outs).
    pub poll_secs: u64,
    /// `CCSYNC_OPTOUTS__BACKFILL_FROM`: where an account's feed starts when it has no cursor
    /// yet; `None`: 5 minutes before it first runs (no history).
    pub backfill_from: Option<time::OffsetDateTime>,
}

/// `[accounts.<name>]`: what differs per CC account.
#[derive(Debug, Clone, Deserialize, Default)]
struct RawAccount {
    #[serde(default, deserialize_with = "string_like")]
    default_list_ids: String,
    #[serde(default, deserialize_with = "string_like")]
    weight: String,
}

/// Settings of one CC account (`[accounts.<name>]`, or `CCSYNC_ACCOUNTS__<NAME>__…`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSettings {
    /// This account's lists for messages that name none (CC list ids differ per account);
    /// empty: the global `default_list_ids`.
    pub default_list_ids: Vec<Uuid>,
    /// This account's weight in the key's fair shares (issue 13; default 1): with two busy
    /// accounts of weights 2 and 1, the first gets two requests for each of the second's.
    pub weight: f64,
}

impl Default for AccountSettings {
    fn default() -> Self {
        AccountSettings {
            default_list_ids: Vec::new(),
            weight: 1.0,
        }
    }
}

/// `[ingest]` as written; validated into [`IngestSettings`].
#[derive(Debug, Deserialize)]
struct RawIngest {
    addr: String,
    #[serde(deserialize_with = "secret_like")]
    secrets: SecretString,
    #[serde(deserialize_with = "secret_like")]
    shopify_secret: SecretString,
    #[serde(deserialize_with = "string_like")]
    shopify_accounts: String,
    #[serde(deserialize_with = "string_like")]
    shopify_list_ids: String,
    #[serde(deserialize_with = "string_like")]
    shopify_tags_field: String,
    max_body_bytes: usize,
    max_lines: usize,
    rate_per_second: u32,
    signature_tolerance_secs: u64,
    publish_timeout_ms: u64,
    retry_after_secs: u64,
    publish_channels: usize,
    #[serde(default, deserialize_with = "string_like")]
    public_url: String,
}

/// `ccsync ingest` (the webhook endpoint), validated.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// `CCSYNC_INGEST__ADDR`: where the endpoint, `/healthz`, `/readyz` and `/metrics` listen.
    pub addr: SocketAddr,
    /// `CCSYNC_INGEST__SECRETS`: every secret `POST /v1/contacts` accepts (rotation: old and new
    /// at once). Empty: the endpoint is off (404).
    pub secrets: Vec<SecretString>,
    /// `CCSYNC_INGEST__SHOPIFY_SECRET`; `None`: `/webhooks/shopify` is off (404).
    pub shopify_secret: Option<SecretString>,
    /// Shop domain → CC account; shops not named go to `default`.
    pub shopify_accounts: std::collections::BTreeMap<String, String>,
    /// Lists Shopify customers join; empty: the account's default lists.
    pub shopify_list_ids: Vec<Uuid>,
    /// Custom field for the customer's tags; `None`: tags are dropped.
    pub shopify_tags_field: Option<String>,
    pub max_body_bytes: usize,
    pub max_lines: usize,
    /// Per route and replica; 0: unlimited.
    pub rate_per_second: u32,
    pub signature_tolerance: Duration,
    pub publish_timeout: Duration,
    pub retry_after_secs: u64,
    pub publish_channels: usize,
    /// `CCSYNC_INGEST__PUBLIC_URL`: where customers and CC reach `ccsync ingest` (a path prefix
    /// is kept). Connect links are built on it and CC redirects to `<public URL>/oauth/callback`.
    /// `None`: no connect links.
    pub public_url: Option<url::Url>,
}

/// `[redis]` as written; validated into [`RedisSettings`].
#[derive(Debug, Deserialize)]
struct RawRedis {
    #[serde(deserialize_with = "string_like")]
    key_prefix: String,
    #[serde(default, deserialize_with = "secret_like")]
    cluster_nodes: SecretString,
    #[serde(default, deserialize_with = "secret_like")]
    sentinels: SecretString,
    #[serde(default, deserialize_with = "string_like")]
    sentinel_master: String,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Prefix of every Redis key ccsync writes; lets tests (and several deployments) share one Redis.
    pub key_prefix: String,
    /// One server, a cluster, or a master found through Sentinel.
    pub topology: RedisTopology,
}

/// Where Redis is (`[redis]`): every Redis user goes through `crate::redis`, which opens the
/// connections this names.
#[derive(Clone)]
pub enum RedisTopology {
    /// `CCSYNC_REDIS_URL` alone.
    Single,
    /// `CCSYNC_REDIS__CLUSTER_NODES`: seed nodes of a Redis Cluster (redis:// or rediss://; the
    /// first one's user and password are used for every node).
    Cluster(Vec<SecretString>),
    /// `CCSYNC_REDIS__SENTINELS` + `CCSYNC_REDIS__SENTINEL_MASTER`: the sentinels to ask, and the
    /// master's name. The master itself is reached with `CCSYNC_REDIS_URL`'s scheme (rediss://
    /// for TLS), user, password and database; its host and port are Sentinel's answer.
    Sentinel {
        sentinels: Vec<SecretString>,
        master: String,
    },
}

impl std::fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |v: &[SecretString]| -> Vec<String> { v.iter().map(mask_url).collect() };
        match self {
            RedisTopology::Single => f.write_str("Single (CCSYNC_REDIS_URL)"),
            RedisTopology::Cluster(nodes) => {
                f.debug_tuple("Cluster").field(&masked(nodes)).finish()
            }
            RedisTopology::Sentinel { sentinels, master } => f
                .debug_struct("Sentinel")
                .field("sentinels", &masked(sentinels))
                .field("master", master)
                .finish(),
        }
    }
}

/// PEM files for one TLS connection (`CCSYNC_<AMQP|REDIS>_CA_FILE`, `..._CLIENT_CERT_FILE`,
/// `..._CLIENT_KEY_FILE`). Checked at load: each names a readable file of the right kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA (one or more PEM certificates) that signed the server's certificate; `None`: the
    /// platform's root store (a public CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) for servers that ask for one (mutual TLS); both or none.
    pub client_cert_file: Option<std::path::PathBuf>,
    pub client_key_file: Option<std::path::PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self == &TlsFiles::default()
    }
}

/// The broker as the product reaches it: URL and TLS files (`crate::queue::Broker::connect`).
#[derive(Debug, Clone)]
pub struct AmqpEndpoint {
    pub url: SecretString,
    pub tls: TlsFiles,
}

impl AmqpEndpoint {
    /// A URL without TLS files (amqp://, or amqps:// to a broker with a public certificate).
    pub fn plain(url: SecretString) -> AmqpEndpoint {
        AmqpEndpoint {
            url,
            tls: TlsFiles::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub scope: String,
    pub refresh_before_secs: u64,
    pub lock_lease_ms: u64,
    pub wait_bound_secs: u64,
    pub keepalive_secs: u64,
    pub jwks_url: String,
    /// `CCSYNC_AUTH__INVITE_SECRET`: the HMAC key of connect links (`ccsync auth invite`, served
    /// by `ccsync ingest`); at least 32 characters. `None`: no connect links.
    #[serde(default, deserialize_with = "optional_secret")]
    pub invite_secret: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub per_second: u32,
    pub daily_quota: u64,
    pub daily_reserve: u64,
    pub token_per_second: u32,
    pub expected_replicas: u32,
    /// Extra spacing (over 1 s / per_second) that absorbs network jitter between a permit and
    /// the moment CC counts the request (see `crate::ratelimit` docs).
    pub jitter_allowance_ms: u64,
    /// Shared cool-down after a `throttled` 429.
    pub throttle_cooldown_ms: u64,
    /// Bound on one Redis round trip of the limiter before it falls back to local limits.
    pub redis_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub prefetch: u16,
    pub batch_max_contacts: usize,
    pub batch_max_bytes: usize,
    pub linger_min_ms: u64,
    pub linger_max_ms: u64,
    pub max_activities_in_flight: usize,
    pub max_hold_secs: u64,
    pub request_timeout_secs: u64,
    pub poll_initial_ms: u64,
    pub poll_max_ms: u64,
    pub shutdown_deadline_secs: u64,
    pub create_custom_fields: bool,
    pub custom_fields_refresh_secs: u64,
    pub max_redeliveries: u32,
    pub claim_lease_secs: u64,
    pub max_held_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TestingSettings {
    /// TEST ONLY: added to the system clock (see [`crate::clock`]).
    pub clock_offset_secs: i64,
    /// TEST ONLY: the worker aborts when it reads a message for this email (a message that
    /// kills the worker, for the poison tests). Empty in production.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub abort_on_email: Option<String>,
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()))
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub amqp_url: SecretString,
    pub redis_url: SecretString,
    /// `CCSYNC_AMQP_CA_FILE`, `CCSYNC_AMQP_CLIENT_CERT_FILE`, `CCSYNC_AMQP_CLIENT_KEY_FILE`.
    pub amqp_tls: TlsFiles,
    /// `CCSYNC_REDIS_CA_FILE`, `CCSYNC_REDIS_CLIENT_CERT_FILE`, `CCSYNC_REDIS_CLIENT_KEY_FILE`.
    pub redis_tls: TlsFiles,
    pub queue: String,
    pub client_id: String,
    /// `None` for a public client (device flow); `Some` sends HTTP Basic at the token endpoint.
    pub client_secret: Option<SecretString>,
    pub api_base_url: url::Url,
    pub auth_base_url: url::Url,
    pub default_list_ids: Vec<Uuid>,
    /// 32 bytes for AES-256-GCM, or `None` (token set stored in clear; `config check` warns).
    pub token_encryption_key: Option<TokenKey>,
    pub metrics_addr: SocketAddr,
    pub log_format: LogFormat,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub ratelimit: RateLimitSettings,
    pub worker: WorkerSettings,
    pub testing: TestingSettings,
    /// Per-account settings; the accounts named here are known even before a login.
    pub accounts: std::collections::BTreeMap<String, AccountSettings>,
    pub ingest: IngestSettings,
    /// `CCSYNC_EVENTS_EXCHANGE`: the durable topic exchange ccsync publishes its events to
    /// (`contact.unsubscribed`), declared by every worker at start.
    pub events_exchange: String,
    pub optouts: OptoutSettings,
}

/// The token-set encryption key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct TokenKey(pub [u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([REDACTED])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl Settings {
    /// The default lists of `account`: its own (`[accounts.<name>]`), else the global ones.
    pub fn default_lists_for(&self, account: &str) -> &[Uuid] {
        match self.accounts.get(account) {
            Some(a) if !a.default_list_ids.is_empty() => &a.default_list_ids,
            _ => &self.default_list_ids,
        }
    }

    /// Each configured account's weight in the key's fair shares (others weigh 1).
    pub fn account_weights(&self) -> std::collections::HashMap<String, f64> {
        self.accounts
            .iter()
            .map(|(name, a)| (name.clone(), a.weight))
            .collect()
    }

    /// Defaults, then `$CCSYNC_CONFIG` if set, then the environment.
    pub fn load() -> Result<Settings, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Ok(path) = std::env::var("CCSYNC_CONFIG") {
            if !std::path::Path::new(&path).exists() {
                return Err(invalid(
                    "CCSYNC_CONFIG",
                    format!("file {path} does not exist"),
                ));
            }
            fig = fig.merge(Toml::file(path));
        }
        Self::from_figment(fig.merge(env_provider()))
    }

    /// Defaults overlaid with the given `(KEY, value)` pairs, named as in the environment
    /// (`CCSYNC_QUEUE`, `CCSYNC_WORKER__PREFETCH`). The process environment is not read.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Settings, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        for (k, v) in pairs {
            let key = k
                .strip_prefix("CCSYNC_")
                .ok_or_else(|| invalid(k, "override keys start with CCSYNC_"))?
                .to_ascii_lowercase()
                .replace("__", ".");
            // Parse the value as the environment provider does (numbers, booleans, strings).
            let value: figment::value::Value = v.parse().unwrap_or_else(|_| v.into());
            fig = fig.merge((key, value));
        }
        Self::from_figment(fig)
    }

    fn from_figment(fig: Figment) -> Result<Settings, ConfigError> {
        let raw: Raw = fig.extract().map_err(|e| {
            // figment names the path of the failing key; keep only the first error, on one line.
            let key = e.path.join(".");
            let msg = e.kind.to_string();
            if key.is_empty() {
                ConfigError::Load(msg)
            } else {
                invalid(&env_name(&key), msg)
            }
        })?;
        Self::validate(raw)
    }

    fn validate(raw: Raw) -> Result<Settings, ConfigError> {
        check_url(
            "CCSYNC_AMQP_URL",
            raw.amqp_url.expose_secret(),
            &["amqp", "amqps"],
        )?;
        check_url(
            "CCSYNC_REDIS_URL",
            raw.redis_url.expose_secret(),
            &["redis", "rediss"],
        )?;
        let api_base_url = check_url("CCSYNC_API_BASE_URL", &raw.api_base_url, &["http", "https"])?;
        let auth_base_url = check_url(
            "CCSYNC_AUTH_BASE_URL",
            &raw.auth_base_url,
            &["http", "https"],
        )?;
        if raw.queue.trim().is_empty() || raw.queue.len() > 200 {
            return Err(invalid("CCSYNC_QUEUE", "must be 1 to 200 characters"));
        }
        let default_list_ids = parse_list_ids(&raw.default_list_ids)?;
        let mut accounts = std::collections::BTreeMap::new();
        for (name, a) in &raw.accounts {
            let lists = parse_list_ids(&a.default_list_ids).map_err(|e| match e {
                ConfigError::Invalid { problem, .. } => invalid(
                    &format!(
                        "CCSYNC_ACCOUNTS__{}__DEFAULT_LIST_IDS",
                        name.to_ascii_uppercase()
                    ),
                    problem,
                ),
                other => other,
            })?;
            let weight = match a.weight.trim() {
                "" => 1.0,
                w => w
                    .parse::<f64>()
                    .ok()
                    .filter(|w| w.is_finite() && *w > 0.0 && *w <= 1000.0)
                    .ok_or_else(|| {
                        invalid(
                            &format!("CCSYNC_ACCOUNTS__{}__WEIGHT", name.to_ascii_uppercase()),
                            "must be a number above 0 and at most 1000 (the account's share of the API key, default 1)",
                        )
                    })?,
            };
            accounts.insert(
                name.clone(),
                AccountSettings {
                    default_list_ids: lists,
                    weight,
                },
            );
        }
        let token_encryption_key = match raw.token_encryption_key.expose_secret().trim() {
            "" => None,
            b64 => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| invalid("CCSYNC_TOKEN_ENCRYPTION_KEY", "is not valid base64"))?;
                let key: [u8; 32] = bytes.try_into().map_err(|_| {
                    invalid(
                        "CCSYNC_TOKEN_ENCRYPTION_KEY",
                        "must decode to exactly 32 bytes (try: head -c32 /dev/urandom | base64)",
                    )
                })?;
                Some(TokenKey(key))
            }
        };
        let metrics_addr = raw.metrics_addr.parse().map_err(|_| {
            invalid(
                "CCSYNC_METRICS_ADDR",
                format!("'{}' is not a host:port socket address", raw.metrics_addr),
            )
        })?;
        let log_format = match raw.log_format.as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => {
                return Err(invalid(
                    "CCSYNC_LOG_FORMAT",
                    format!("'{other}' is not json or text"),
                ));
            }
        };
        let client_secret =
            (!raw.client_secret.expose_secret().is_empty()).then_some(raw.client_secret);
        let ingest = validate_ingest(raw.ingest)?;
        if let Some(k) = &raw.auth.invite_secret
            && k.expose_secret().len() < 32
        {
            // The key of bearer links for whole CC accounts: no guessable value.
            return Err(invalid(
                "CCSYNC_AUTH__INVITE_SECRET",
                "must be at least 32 characters (try: head -c32 /dev/urandom | base64)",
            ));
        }
        let events_exchange = raw.events_exchange.trim().to_string();
        if events_exchange.is_empty()
            || events_exchange.len() > 255
            || events_exchange.starts_with("amq.")
        {
            return Err(invalid(
                "CCSYNC_EVENTS_EXCHANGE",
                "must be 1 to 255 characters and not start with amq. (RabbitMQ reserves those names)",
            ));
        }
        let optouts = validate_optouts(raw.optouts)?;
        let amqp_tls = tls_files(
            "AMQP",
            &raw.amqp_ca_file,
            &raw.amqp_client_cert_file,
            &raw.amqp_client_key_file,
        )?;
        if !amqp_tls.is_empty() && !raw.amqp_url.expose_secret().starts_with("amqps:") {
            return Err(invalid(
                "CCSYNC_AMQP_CA_FILE",
                "TLS files are set but CCSYNC_AMQP_URL is not amqps:// (use amqps:// or unset them)",
            ));
        }
        let redis_tls = tls_files(
            "REDIS",
            &raw.redis_ca_file,
            &raw.redis_client_cert_file,
            &raw.redis_client_key_file,
        )?;
        let redis = validate_redis(raw.redis, &raw.redis_url, &redis_tls)?;
        let s = Settings {
            events_exchange,
            optouts,
            amqp_url: raw.amqp_url,
            redis_url: raw.redis_url,
            amqp_tls,
            redis_tls,
            queue: raw.queue,
            client_id: raw.client_id,
            client_secret,
            api_base_url,
            auth_base_url,
            default_list_ids,
            accounts,
            token_encryption_key,
            metrics_addr,
            log_format,
            redis,
            auth: raw.auth,
            ratelimit: raw.ratelimit,
            worker: raw.worker,
            testing: raw.testing,
            ingest,
        };
        s.check_numbers()?;
        Ok(s)
    }

    fn check_numbers(&self) -> Result<(), ConfigError> {
        let w = &self.worker;
        if w.batch_max_contacts == 0 || w.batch_max_contacts > 40_000 {
            return Err(invalid(
                "CCSYNC_WORKER__BATCH_MAX_CONTACTS",
                "must be 1..=40000 (CC's import limit)",
            ));
        }
        if w.batch_max_bytes < 10_000 || w.batch_max_bytes >= 4_000_000 {
            return Err(invalid(
                "CCSYNC_WORKER__BATCH_MAX_BYTES",
                "must be 10000..4000000 (CC silently drops what lies past 4 MB)",
            ));
        }
        if w.prefetch == 0 {
            return Err(invalid("CCSYNC_WORKER__PREFETCH", "must be at least 1"));
        }
        if w.linger_min_ms > w.linger_max_ms {
            return Err(invalid(
                "CCSYNC_WORKER__LINGER_MIN_MS",
                "must not exceed worker.linger_max_ms",
            ));
        }
        if w.max_hold_secs >= 1800 {
            return Err(invalid(
                "CCSYNC_WORKER__MAX_HOLD_SECS",
                "must stay below RabbitMQ's 30-minute consumer timeout (1800 s)",
            ));
        }
        if w.request_timeout_secs == 0 || w.request_timeout_secs >= w.max_hold_secs.max(1) {
            return Err(invalid(
                "CCSYNC_WORKER__REQUEST_TIMEOUT_SECS",
                "must be at least 1 and below worker.max_hold_secs",
            ));
        }
        if w.max_held_bytes < w.batch_max_bytes {
            return Err(invalid(
                "CCSYNC_WORKER__MAX_HELD_BYTES",
                "must be at least worker.batch_max_bytes (a full import must fit)",
            ));
        }
        if w.claim_lease_secs == 0 {
            return Err(invalid(
                "CCSYNC_WORKER__CLAIM_LEASE_SECS",
                "must be at least 1 (the holder renews it every third of the lease)",
            ));
        }
        if w.max_activities_in_flight == 0 || w.max_activities_in_flight > 1000 {
            return Err(invalid(
                "CCSYNC_WORKER__MAX_ACTIVITIES_IN_FLIGHT",
                "must be 1..=1000 (CC queues at most 1,000 activities per account)",
            ));
        }
        let r = &self.ratelimit;
        if r.per_second == 0 || r.token_per_second == 0 || r.expected_replicas == 0 {
            return Err(invalid(
                "CCSYNC_RATELIMIT__PER_SECOND",
                "rates and expected_replicas must be at least 1",
            ));
        }
        if r.jitter_allowance_ms == 0 || r.jitter_allowance_ms >= 1000 {
            return Err(invalid(
                "CCSYNC_RATELIMIT__JITTER_ALLOWANCE_MS",
                "must be 1..=999 (0 leaves no margin for network jitter)",
            ));
        }
        if r.redis_timeout_ms == 0 {
            return Err(invalid(
                "CCSYNC_RATELIMIT__REDIS_TIMEOUT_MS",
                "must be at least 1",
            ));
        }
        if r.daily_reserve >= r.daily_quota {
            return Err(invalid(
                "CCSYNC_RATELIMIT__DAILY_RESERVE",
                "must be smaller than ratelimit.daily_quota",
            ));
        }
        Ok(())
    }

    /// Configuration problems that do not stop the program but that an operator should hear of.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.token_encryption_key.is_none() {
            w.push("CCSYNC_TOKEN_ENCRYPTION_KEY is not set: the token set is stored in Redis in clear text".into());
        }
        if self.client_id.is_empty() {
            w.push("CCSYNC_CLIENT_ID is empty: no CC call can be made".into());
        }
        if self.default_list_ids.is_empty() {
            w.push(
                "CCSYNC_DEFAULT_LIST_IDS is empty: messages without list_ids will be dead-lettered"
                    .into(),
            );
        }
        if self.testing.clock_offset_secs != 0 {
            w.push(
                "CCSYNC_TESTING__CLOCK_OFFSET_SECS is set: a test-only clock shift is active"
                    .into(),
            );
        }
        // The refresh-token hint depends on the stored sets: `config check` reads them
        // (`auth::cli::refresh_mode_warnings`) and warns per account using rotating tokens.
        let connect = self.connect_links();
        if self.ingest.secrets.is_empty() && self.ingest.shopify_secret.is_none() && !connect {
            w.push("CCSYNC_INGEST__SECRETS and CCSYNC_INGEST__SHOPIFY_SECRET are empty: `ccsync ingest` has no endpoint to serve (the worker does not need them)".into());
        }
        match (
            self.auth.invite_secret.is_some(),
            self.ingest.public_url.is_some(),
        ) {
            (true, false) => w.push("CCSYNC_AUTH__INVITE_SECRET is set but CCSYNC_INGEST__PUBLIC_URL is not: connect links are off (`ccsync auth invite` and ingest's /connect need both)".into()),
            (false, true) => w.push("CCSYNC_INGEST__PUBLIC_URL is set but CCSYNC_AUTH__INVITE_SECRET is not: connect links are off (`ccsync auth invite` and ingest's /connect need both)".into()),
            _ => {}
        }
        if connect && self.client_secret.is_none() {
            w.push("connect links run the authorization code flow with the client secret, but CCSYNC_CLIENT_SECRET is not set: `ccsync ingest` refuses to start so".into());
        }
        w
    }

    /// Connect links are on: `auth.invite_secret` and `ingest.public_url` are both set.
    pub fn connect_links(&self) -> bool {
        self.auth.invite_secret.is_some() && self.ingest.public_url.is_some()
    }

    /// The effective configuration with every secret masked, for `config check`.
    pub fn redacted(&self) -> String {
        let mask = mask_url;
        let lists: Vec<String> = self
            .default_list_ids
            .iter()
            .map(|u| u.to_string())
            .collect();
        format!(
            "amqp_url = {:?}\nredis_url = {:?}\namqp_tls = {:?}\nredis_tls = {:?}\nqueue = {:?}\nevents_exchange = {:?}\nclient_id = {:?}\nclient_secret = {}\napi_base_url = {:?}\nauth_base_url = {:?}\ndefault_list_ids = {:?}\ntoken_encryption_key = {}\nmetrics_addr = {:?}\nlog_format = {:?}\n{:#?}\n{:#?}\n{:#?}\n{:#?}\n{:#?}\n{}",
            mask(&self.amqp_url),
            mask(&self.redis_url),
            self.amqp_tls,
            self.redis_tls,
            self.queue,
            self.events_exchange,
            self.client_id,
            if self.client_secret.is_some() {
                "\"[REDACTED]\""
            } else {
                "\"\" (public client)"
            },
            self.api_base_url.as_str(),
            self.auth_base_url.as_str(),
            lists.join(","),
            if self.token_encryption_key.is_some() {
                "\"[REDACTED]\""
            } else {
                "\"\" (not set)"
            },
            self.metrics_addr.to_string(),
            self.log_format,
            self.redis,
            self.auth,
            self.ratelimit,
            self.worker,
            self.testing,
            self.ingest.redacted(),
        ) + &format!("\n{:#?}", self.optouts)
            + &self
                .accounts
                .iter()
                .map(|(name, a)| {
                    let l: Vec<String> = a.default_list_ids.iter().map(Uuid::to_string).collect();
                    format!(
                        "\n[accounts.{name}]\ndefault_list_ids = {:?}\nweight = {}",
                        l.join(","),
                        a.weight
                    )
                })
                .collect::<String>()
    }

    /// The broker's URL and TLS files, for `crate::queue::Broker::connect`.
    pub fn amqp(&self) -> AmqpEndpoint {
        AmqpEndpoint {
            url: self.amqp_url.clone(),
            tls: self.amqp_tls.clone(),
        }
    }

    /// `<queue>.dlx`, the dead-letter exchange (DESIGN §2).
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.queue)
    }

    /// `<queue>.dead`, where dead letters wait for a human or `dlq replay`.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }

    pub fn linger_bounds(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.worker.linger_min_ms),
            Duration::from_millis(self.worker.linger_max_ms),
        )
    }
}

impl IngestSettings {
    /// `[ingest]` for `config check`: secrets shown only as how many there are.
    fn redacted(&self) -> String {
        let lists: Vec<String> = self.shopify_list_ids.iter().map(Uuid::to_string).collect();
        let accounts: Vec<String> = self
            .shopify_accounts
            .iter()
            .map(|(shop, account)| format!("{shop}={account}"))
            .collect();
        format!(
            "[ingest]\naddr = {:?}\nsecrets = \"{}\"\nshopify_secret = \"{}\"\nshopify_accounts = {:?}\nshopify_list_ids = {:?}\nshopify_tags_field = {:?}\nmax_body_bytes = {}\nmax_lines = {}\nrate_per_second = {}\nsignature_tolerance_secs = {}\npublish_timeout_ms = {}\nretry_after_secs = {}\npublish_channels = {}\npublic_url = {:?}",
            self.addr.to_string(),
            match self.secrets.len() {
                0 => "(none: POST /v1/contacts is off)".to_string(),
                n => format!("[REDACTED: {n} secret(s)]"),
            },
            if self.shopify_secret.is_some() {
                "[REDACTED]"
            } else {
                "(none: POST /webhooks/shopify is off)"
            },
            accounts.join(","),
            lists.join(","),
            self.shopify_tags_field.as_deref().unwrap_or(""),
            self.max_body_bytes,
            self.max_lines,
            self.rate_per_second,
            self.signature_tolerance.as_secs(),
            self.publish_timeout.as_millis(),
            self.retry_after_secs,
            self.publish_channels,
            self.public_url.as_ref().map(url::Url::as_str).unwrap_or(""),
        )
    }
}

fn validate_optouts(raw: RawOptouts) -> Result<OptoutSettings, ConfigError> {
    // At least a second (the tests' pace); at most a day, so an account's opt-outs reach
    // upstream systems the day they happen.
    if !(1..=86_400).contains(&raw.poll_secs) {
        return Err(invalid(
            "CCSYNC_OPTOUTS__POLL_SECS",
            "must be 1..=86400 seconds (each poll costs one request per account; 900 spends 96 a day per account)",
        ));
    }
    let backfill_from = match raw.backfill_from.trim() {
        "" => None,
        t => Some(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    invalid(
                        "CCSYNC_OPTOUTS__BACKFILL_FROM",
                        format!("'{t}' is not an RFC 3339 time such as 2026-01-01T00:00:00Z"),
                    )
                })?,
        ),
    };
    Ok(OptoutSettings {
        enabled: raw.enabled,
        poll_secs: raw.poll_secs,
        backfill_from,
    })
}

fn validate_ingest(raw: RawIngest) -> Result<IngestSettings, ConfigError> {
    let addr = raw.addr.parse().map_err(|_| {
        invalid(
            "CCSYNC_INGEST__ADDR",
            format!("'{}' is not a host:port socket address", raw.addr),
        )
    })?;
    let mut secrets = Vec::new();
    for s in raw.secrets.expose_secret().split(',').map(str::trim) {
        if s.is_empty() {
            continue;
        }
        if s.len() < 16 {
            return Err(invalid(
                "CCSYNC_INGEST__SECRETS",
                "each secret must be at least 16 characters (try: head -c32 /dev/urandom | base64)",
            ));
        }
        secrets.push(SecretString::from(s.to_string()));
    }
    let shopify_secret = match raw.shopify_secret.expose_secret().trim() {
        "" => None,
        s => Some(SecretString::from(s.to_string())),
    };
    let mut shopify_accounts = std::collections::BTreeMap::new();
    for pair in raw.shopify_accounts.split(',').map(str::trim) {
        if pair.is_empty() {
            continue;
        }
        let (shop, account) = pair
            .split_once('=')
            .map(|(a, b)| (a.trim(), b.trim()))
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            .ok_or_else(|| {
                invalid(
                    "CCSYNC_INGEST__SHOPIFY_ACCOUNTS",
                    format!("'{pair}' is not shop-domain=account"),
                )
            })?;
        shopify_accounts.insert(shop.to_ascii_lowercase(), account.to_string());
    }
    let shopify_list_ids = parse_list_ids(&raw.shopify_list_ids)
        .map_err(|e| rename_key(e, "CCSYNC_INGEST__SHOPIFY_LIST_IDS"))?;
    let tags = raw.shopify_tags_field.trim();
    let shopify_tags_field = (!tags.is_empty()).then(|| tags.to_string());
    if raw.max_body_bytes < 1024 {
        return Err(invalid(
            "CCSYNC_INGEST__MAX_BODY_BYTES",
            "must be at least 1024",
        ));
    }
    if raw.max_lines == 0 {
        return Err(invalid("CCSYNC_INGEST__MAX_LINES", "must be at least 1"));
    }
    if raw.publish_timeout_ms == 0 {
        return Err(invalid(
            "CCSYNC_INGEST__PUBLISH_TIMEOUT_MS",
            "must be at least 1",
        ));
    }
    if raw.publish_channels == 0 || raw.publish_channels > 64 {
        return Err(invalid("CCSYNC_INGEST__PUBLISH_CHANNELS", "must be 1..=64"));
    }
    if raw.signature_tolerance_secs == 0 {
        return Err(invalid(
            "CCSYNC_INGEST__SIGNATURE_TOLERANCE_SECS",
            "must be at least 1",
        ));
    }
    let public_url = match raw.public_url.trim() {
        "" => None,
        u => {
            let url = check_url("CCSYNC_INGEST__PUBLIC_URL", u, &["http", "https"])?;
            if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
                return Err(invalid(
                    "CCSYNC_INGEST__PUBLIC_URL",
                    "must be a base URL like https://ingest.example.com (a path prefix is fine; no query or fragment)",
                ));
            }
            Some(url)
        }
    };
    Ok(IngestSettings {
        public_url,
        addr,
        secrets,
        shopify_secret,
        shopify_accounts,
        shopify_list_ids,
        shopify_tags_field,
        max_body_bytes: raw.max_body_bytes,
        max_lines: raw.max_lines,
        rate_per_second: raw.rate_per_second,
        signature_tolerance: Duration::from_secs(raw.signature_tolerance_secs),
        publish_timeout: Duration::from_millis(raw.publish_timeout_ms),
        retry_after_secs: raw.retry_after_secs.max(1),
        publish_channels: raw.publish_channels,
    })
}

/// A URL with its password masked (anything unparsable is masked whole).
fn mask_url(s: &SecretString) -> String {
    match url::Url::parse(s.expose_secret()) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("REDACTED"));
            }
            u.to_string()
        }
        Err(_) => "[REDACTED]".into(),
    }
}

/// `CCSYNC_<conn>_CA_FILE`, `..._CLIENT_CERT_FILE`, `..._CLIENT_KEY_FILE`: each empty or a
/// readable PEM file of its kind; the client pair both or neither.
fn tls_files(conn: &str, ca: &str, cert: &str, key: &str) -> Result<TlsFiles, ConfigError> {
    let pem = |name: &str, path: &str, what: &str, marker: &str| {
        let path = path.trim();
        if path.is_empty() {
            return Ok(None);
        }
        let key = format!("CCSYNC_{conn}_{name}");
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(&key, format!("cannot read {path}: {e}")))?;
        if !text.contains("-----BEGIN ") || !text.contains(marker) {
            return Err(invalid(&key, format!("{path} holds no PEM {what}")));
        }
        Ok(Some(std::path::PathBuf::from(path)))
    };
    let files = TlsFiles {
        ca_file: pem("CA_FILE", ca, "certificate", "CERTIFICATE-----")?,
        client_cert_file: pem("CLIENT_CERT_FILE", cert, "certificate", "CERTIFICATE-----")?,
        client_key_file: pem("CLIENT_KEY_FILE", key, "private key", "PRIVATE KEY-----")?,
    };
    match (&files.client_cert_file, &files.client_key_file) {
        (Some(_), None) => Err(invalid(
            &format!("CCSYNC_{conn}_CLIENT_KEY_FILE"),
            format!(
                "must be set with CCSYNC_{conn}_CLIENT_CERT_FILE (the client certificate's key)"
            ),
        )),
        (None, Some(_)) => Err(invalid(
            &format!("CCSYNC_{conn}_CLIENT_CERT_FILE"),
            format!("must be set with CCSYNC_{conn}_CLIENT_KEY_FILE (the key's certificate)"),
        )),
        _ => Ok(files),
    }
}

/// Comma-separated redis:// or rediss:// URLs.
fn redis_urls(key: &str, list: &SecretString) -> Result<Vec<SecretString>, ConfigError> {
    list.expose_secret()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let parsed = url::Url::parse(u).map_err(|_| {
                invalid(key, "holds an entry that is not a URL (redis://host:port)")
            })?;
            if !["redis", "rediss"].contains(&parsed.scheme()) || parsed.host_str().is_none() {
                return Err(invalid(
                    key,
                    format!(
                        "entries must be redis://host:port or rediss://host:port, not {}://",
                        parsed.scheme()
                    ),
                ));
            }
            Ok(SecretString::from(u.to_string()))
        })
        .collect()
}

fn validate_redis(
    raw: RawRedis,
    redis_url: &SecretString,
    tls: &TlsFiles,
) -> Result<RedisSettings, ConfigError> {
    let nodes = redis_urls("CCSYNC_REDIS__CLUSTER_NODES", &raw.cluster_nodes)?;
    let sentinels = redis_urls("CCSYNC_REDIS__SENTINELS", &raw.sentinels)?;
    let master = raw.sentinel_master.trim().to_string();
    let topology = match (nodes.is_empty(), sentinels.is_empty()) {
        (false, false) => {
            return Err(invalid(
                "CCSYNC_REDIS__SENTINELS",
                "set either CCSYNC_REDIS__CLUSTER_NODES (Redis Cluster) or CCSYNC_REDIS__SENTINELS (Sentinel), not both",
            ));
        }
        (false, true) => {
            if !master.is_empty() {
                return Err(invalid(
                    "CCSYNC_REDIS__SENTINEL_MASTER",
                    "is only used with CCSYNC_REDIS__SENTINELS, not with CCSYNC_REDIS__CLUSTER_NODES",
                ));
            }
            RedisTopology::Cluster(nodes)
        }
        (true, false) => {
            if master.is_empty() {
                return Err(invalid(
                    "CCSYNC_REDIS__SENTINEL_MASTER",
                    "must name the master the sentinels watch (as in `sentinel monitor <name> ...`)",
                ));
            }
            RedisTopology::Sentinel { sentinels, master }
        }
        (true, true) => {
            if !master.is_empty() {
                return Err(invalid(
                    "CCSYNC_REDIS__SENTINELS",
                    "must list the sentinels (redis://host:26379,...) when CCSYNC_REDIS__SENTINEL_MASTER is set",
                ));
            }
            RedisTopology::Single
        }
    };
    let tls_urls: Vec<&SecretString> = match &topology {
        RedisTopology::Cluster(n) => n.iter().collect(),
        RedisTopology::Sentinel { sentinels, .. } => {
            sentinels.iter().chain(std::iter::once(redis_url)).collect()
        }
        RedisTopology::Single => vec![redis_url],
    };
    if !tls.is_empty()
        && !tls_urls
            .iter()
            .any(|u| u.expose_secret().starts_with("rediss:"))
    {
        return Err(invalid(
            "CCSYNC_REDIS_CA_FILE",
            "TLS files are set but no Redis URL in use is rediss:// (use rediss:// or unset them)",
        ));
    }
    Ok(RedisSettings {
        key_prefix: raw.key_prefix,
        topology,
    })
}

/// The same problem, reported under another key.
fn rename_key(e: ConfigError, key: &str) -> ConfigError {
    match e {
        ConfigError::Invalid { problem, .. } => invalid(key, problem),
        other => other,
    }
}

/// Environment values are typed by their look (`12345` is a number), but ids, prefixes and secrets
/// may well look like numbers: accept any scalar where a string is expected.
fn string_like<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    })
}

fn secret_like<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    string_like(d).map(SecretString::from)
}

/// A secret that is off when empty.
fn optional_secret<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SecretString>, D::Error> {
    let s = string_like(d)?;
    Ok((!s.trim().is_empty()).then(|| SecretString::from(s.trim().to_string())))
}

fn env_provider() -> Env {
    // CCSYNC_CONFIG names a file, not a key.
    Env::prefixed("CCSYNC_").split("__").ignore(&["config"])
}

/// `worker.prefetch` → `CCSYNC_WORKER__PREFETCH`, the name an operator sets.
fn env_name(path: &str) -> String {
    format!("CCSYNC_{}", path.to_ascii_uppercase().replace('.', "__"))
}

fn check_url(key: &str, value: &str, schemes: &[&str]) -> Result<url::Url, ConfigError> {
    let u = url::Url::parse(value).map_err(|e| invalid(key, format!("is not a URL ({e})")))?;
    if !schemes.contains(&u.scheme()) {
        return Err(invalid(
            key,
            format!(
                "scheme '{}' is not one of {}",
                u.scheme(),
                schemes.join(", ")
            ),
        ));
    }
    Ok(u)
}

fn parse_list_ids(s: &str) -> Result<Vec<Uuid>, ConfigError> {
    let ids: Vec<Uuid> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            Uuid::parse_str(p).map_err(|_| {
                invalid(
                    "CCSYNC_DEFAULT_LIST_IDS",
                    format!("'{p}' is not a list UUID"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    if ids.len() > 50 {
        return Err(invalid(
            "CCSYNC_DEFAULT_LIST_IDS",
            "at most 50 lists (CC's import limit)",
        ));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_are_valid() {
        let s = Settings::from_pairs([]).unwrap();
        assert_eq!(s.queue, "ccsync.contacts");
        assert_eq!(s.dead_letter_queue(), "ccsync.contacts.dead");
        assert_eq!(s.api_base_url.as_str(), "https://api.cc.email/v3");
        assert_eq!(s.ratelimit.per_second, 4);
        assert!(s.client_secret.is_none());
    }

    #[test]
    fn env_style_overrides_apply() {
        let s = Settings::from_pairs([
            ("CCSYNC_QUEUE", "q1"),
            ("CCSYNC_CLIENT_ID", "12345"),
            ("CCSYNC_WORKER__BATCH_MAX_CONTACTS", "500"),
            (
                "CCSYNC_DEFAULT_LIST_IDS",
                "c2a2b8b4-0000-4000-8000-000000000001, c2a2b8b4-0000-4000-8000-000000000002",
            ),
        ])
        .unwrap();
        assert_eq!(s.queue, "q1");
        assert_eq!(s.client_id, "12345");
        assert_eq!(s.worker.batch_max_contacts, 500);
        assert_eq!(s.default_list_ids.len(), 2);
        // Per-account lists override the global ones for that account only.
        let acme = "c2a2b8b4-0000-4000-8000-00000000000a";
        let s2 = Settings::from_pairs([
            (
                "CCSYNC_DEFAULT_LIST_IDS",
                "c2a2b8b4-0000-4000-8000-000000000001",
            ),
            ("CCSYNC_ACCOUNTS__ACME__DEFAULT_LIST_IDS", acme),
        ])
        .unwrap();
        assert_eq!(s2.default_lists_for("acme")[0].to_string(), acme);
        assert_eq!(
            s2.default_lists_for("other"),
            s2.default_list_ids.as_slice()
        );
        assert!(s2.redacted().contains("[accounts.acme]"));
        let bad = Settings::from_pairs([("CCSYNC_ACCOUNTS__ACME__DEFAULT_LIST_IDS", "nope")]);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("CCSYNC_ACCOUNTS__ACME__DEFAULT_LIST_IDS")
        );
        // Weights of the key's fair shares: per account, default 1, checked.
        let s3 = Settings::from_pairs([("CCSYNC_ACCOUNTS__ACME__WEIGHT", "2.5")]).unwrap();
        assert_eq!(s3.account_weights()["acme"], 2.5);
        assert!(s3.redacted().contains("weight = 2.5"));
        for bad in ["0", "-1", "x", "1001"] {
            let e = Settings::from_pairs([("CCSYNC_ACCOUNTS__ACME__WEIGHT", bad)]).unwrap_err();
            assert!(
                e.to_string().contains("CCSYNC_ACCOUNTS__ACME__WEIGHT"),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::from_pairs([("CCSYNC_DEFAULT_LIST_IDS", "nope")]).unwrap_err();
        assert!(e.to_string().contains("CCSYNC_DEFAULT_LIST_IDS"), "{e}");
        let e = Settings::from_pairs([("CCSYNC_AMQP_URL", "http://x")]).unwrap_err();
        assert!(e.to_string().contains("CCSYNC_AMQP_URL"), "{e}");
        let e = Settings::from_pairs([("CCSYNC_TOKEN_ENCRYPTION_KEY", "c2hvcnQ=")]).unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
        let e = Settings::from_pairs([("CCSYNC_WORKER__PREFETCH", "many")]).unwrap_err();
        assert!(e.to_string().contains("CCSYNC_WORKER__PREFETCH"), "{e}");
        let e = Settings::from_pairs([("CCSYNC_INGEST__SECRETS", "short")]).unwrap_err();
        assert!(e.to_string().contains("CCSYNC_INGEST__SECRETS"), "{e}");
        let e = Settings::from_pairs([("CCSYNC_INGEST__SHOPIFY_ACCOUNTS", "a.myshopify.com")])
            .unwrap_err();
        assert!(e.to_string().contains("shop-domain=account"), "{e}");
        let e = Settings::from_pairs([("CCSYNC_INGEST__SHOPIFY_LIST_IDS", "x")]).unwrap_err();
        assert!(
            e.to_string().contains("CCSYNC_INGEST__SHOPIFY_LIST_IDS"),
            "{e}"
        );
        let e = Settings::from_pairs([("CCSYNC_WORKER__BATCH_MAX_BYTES", "5000000")]).unwrap_err();
        assert!(e.to_string().contains("4 MB"), "{e}");
    }

    #[test]
    fn the_events_exchange_and_the_opt_out_feed_are_validated() {
        let s = Settings::from_pairs([]).unwrap();
        assert_eq!(s.events_exchange, "ccsync.events");
        assert!(s.optouts.enabled);
        assert_eq!(s.optouts.poll_secs, 900);
        assert_eq!(s.optouts.backfill_from, None);
        let s = Settings::from_pairs([
            ("CCSYNC_EVENTS_EXCHANGE", "shop.events"),
            ("CCSYNC_OPTOUTS__POLL_SECS", "1"),
            ("CCSYNC_OPTOUTS__ENABLED", "false"),
            ("CCSYNC_OPTOUTS__BACKFILL_FROM", "2026-01-01T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(s.events_exchange, "shop.events");
        assert_eq!(s.optouts.poll_secs, 1);
        assert!(!s.optouts.enabled);
        assert_eq!(
            s.optouts.backfill_from.map(|t| t.unix_timestamp()),
            Some(1_767_225_600)
        );
        assert!(s.redacted().contains("poll_secs: 1"), "{}", s.redacted());
        for (k, v, says) in [
            ("CCSYNC_OPTOUTS__POLL_SECS", "0", "1..=86400"),
            ("CCSYNC_OPTOUTS__POLL_SECS", "86401", "1..=86400"),
            (
                "CCSYNC_OPTOUTS__POLL_SECS",
                "soon",
                "CCSYNC_OPTOUTS__POLL_SECS",
            ),
            ("CCSYNC_OPTOUTS__BACKFILL_FROM", "last week", "RFC 3339"),
            ("CCSYNC_EVENTS_EXCHANGE", " ", "1 to 255"),
            ("CCSYNC_EVENTS_EXCHANGE", "amq.topic", "amq."),
        ] {
            let e = Settings::from_pairs([(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(says), "{k}={v}: {e}");
        }
    }

    #[test]
    fn connect_links_need_a_long_secret_and_a_base_url_and_warn_when_half_set() {
        let secret = "invite-secret-0123456789-0123456789";
        let s = Settings::from_pairs([
            ("CCSYNC_AUTH__INVITE_SECRET", secret),
            ("CCSYNC_INGEST__PUBLIC_URL", "https://ingest.example.com/"),
            ("CCSYNC_CLIENT_SECRET", "app-secret"),
        ])
        .unwrap();
        assert!(s.connect_links());
        assert_eq!(
            s.ingest.public_url.as_ref().unwrap().as_str(),
            "https://ingest.example.com/"
        );
        let out = s.redacted();
        assert!(!out.contains(secret), "{out}");
        assert!(!format!("{s:?}").contains(secret));
        assert!(
            !s.warnings().iter().any(|w| w.contains("connect links")),
            "{:?}",
            s.warnings()
        );
        let e = Settings::from_pairs([("CCSYNC_AUTH__INVITE_SECRET", "short")]).unwrap_err();
        assert!(e.to_string().contains("CCSYNC_AUTH__INVITE_SECRET"), "{e}");
        for bad in [
            "ingest.example.com",
            "ftp://x",
            "https://x/?a=1",
            "https://x/#f",
        ] {
            let e = Settings::from_pairs([("CCSYNC_INGEST__PUBLIC_URL", bad)]).unwrap_err();
            assert!(
                e.to_string().contains("CCSYNC_INGEST__PUBLIC_URL"),
                "{bad}: {e}"
            );
        }
        let half = Settings::from_pairs([("CCSYNC_AUTH__INVITE_SECRET", secret)]).unwrap();
        assert!(!half.connect_links());
        assert!(half.warnings().iter().any(|w| {
            w.contains("CCSYNC_AUTH__INVITE_SECRET is set but CCSYNC_INGEST__PUBLIC_URL is not")
        }));
        let half =
            Settings::from_pairs([("CCSYNC_INGEST__PUBLIC_URL", "https://x.example")]).unwrap();
        assert!(half.warnings().iter().any(|w| {
            w.contains("CCSYNC_INGEST__PUBLIC_URL is set but CCSYNC_AUTH__INVITE_SECRET is not")
        }));
        // Both set, no client secret: named, since ingest then refuses to start.
        let no_secret = Settings::from_pairs([
            ("CCSYNC_AUTH__INVITE_SECRET", secret),
            ("CCSYNC_INGEST__PUBLIC_URL", "https://x.example"),
        ])
        .unwrap();
        assert!(
            no_secret
                .warnings()
                .iter()
                .any(|w| w.contains("CCSYNC_CLIENT_SECRET is not set"))
        );
    }

    #[test]
    fn redis_topologies_and_tls_files_are_checked_and_name_their_key() {
        let s = Settings::from_pairs([(
            "CCSYNC_REDIS__CLUSTER_NODES",
            "redis://:pw-in-url@10.0.0.1:7001, redis://10.0.0.2:7002",
        )])
        .unwrap();
        match &s.redis.topology {
            RedisTopology::Cluster(n) => assert_eq!(n.len(), 2),
            other => panic!("{other:?}"),
        }
        let out = s.redacted();
        assert!(!out.contains("pw-in-url"), "{out}");
        assert!(out.contains("10.0.0.2:7002"), "{out}");
        let s = Settings::from_pairs([
            ("CCSYNC_REDIS__SENTINELS", "redis://10.0.0.1:26379"),
            ("CCSYNC_REDIS__SENTINEL_MASTER", "mymaster"),
        ])
        .unwrap();
        assert!(
            matches!(&s.redis.topology, RedisTopology::Sentinel { master, .. } if master == "mymaster")
        );
        for (pairs, key) in [
            (
                vec![("CCSYNC_REDIS__SENTINELS", "redis://h:26379")],
                "CCSYNC_REDIS__SENTINEL_MASTER",
            ),
            (
                vec![("CCSYNC_REDIS__SENTINEL_MASTER", "m")],
                "CCSYNC_REDIS__SENTINELS",
            ),
            (
                vec![
                    ("CCSYNC_REDIS__SENTINELS", "redis://h:26379"),
                    ("CCSYNC_REDIS__SENTINEL_MASTER", "m"),
                    ("CCSYNC_REDIS__CLUSTER_NODES", "redis://h:7001"),
                ],
                "CCSYNC_REDIS__SENTINELS",
            ),
            (
                vec![("CCSYNC_REDIS__CLUSTER_NODES", "http://h:7001")],
                "CCSYNC_REDIS__CLUSTER_NODES",
            ),
            (
                vec![("CCSYNC_AMQP_CA_FILE", "/nonexistent/ca.pem")],
                "CCSYNC_AMQP_CA_FILE",
            ),
            (
                vec![("CCSYNC_REDIS_CLIENT_KEY_FILE", "/nonexistent/k.pem")],
                "CCSYNC_REDIS_CLIENT_KEY_FILE",
            ),
        ] {
            let e = Settings::from_pairs(pairs.clone()).unwrap_err().to_string();
            assert!(e.contains(key), "{pairs:?}: {e}");
        }
        // Files must hold PEM of the right kind, the client pair comes whole, and TLS files
        // need a TLS URL.
        let dir = std::env::temp_dir().join(format!("ccsync-cfg-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a pem").unwrap();
        let (ca, junk) = (ca.to_str().unwrap(), junk.to_str().unwrap());
        let amqps = ("CCSYNC_AMQP_URL", "amqps://u:p@mq:5671/%2f");
        let ok = Settings::from_pairs([amqps, ("CCSYNC_AMQP_CA_FILE", ca)]).unwrap();
        assert_eq!(
            ok.amqp().tls.ca_file.as_deref(),
            Some(std::path::Path::new(ca))
        );
        for (pairs, key) in [
            (
                vec![amqps, ("CCSYNC_AMQP_CA_FILE", junk)],
                "CCSYNC_AMQP_CA_FILE",
            ),
            (vec![("CCSYNC_AMQP_CA_FILE", ca)], "CCSYNC_AMQP_CA_FILE"),
            (vec![("CCSYNC_REDIS_CA_FILE", ca)], "CCSYNC_REDIS_CA_FILE"),
            (
                vec![amqps, ("CCSYNC_AMQP_CLIENT_CERT_FILE", ca)],
                "CCSYNC_AMQP_CLIENT_KEY_FILE",
            ),
        ] {
            let e = Settings::from_pairs(pairs.clone()).unwrap_err().to_string();
            assert!(e.contains(key), "{pairs:?}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn redaction_hides_secrets() {
        let key = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
        let s = Settings::from_pairs([
            (
                "CCSYNC_AMQP_URL",
                "amqps://user:hunter2@mq.example:5671/%2f",
            ),
            (
                "CCSYNC_REDIS_URL",
                "rediss://ccsync:s3cret@redis.example:6380",
            ),
            ("CCSYNC_CLIENT_SECRET", "topsecret"),
            ("CCSYNC_TOKEN_ENCRYPTION_KEY", key),
        ])
        .unwrap();
        let out = s.redacted();
        for secret in ["hunter2", "s3cret", "topsecret", key] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(out.contains("mq.example"));
        let s = Settings::from_pairs([
            (
                "CCSYNC_INGEST__SECRETS",
                "old-secret-0123456789,new-secret-9876543210",
            ),
            ("CCSYNC_INGEST__SHOPIFY_SECRET", "shpss_topsecret"),
        ])
        .unwrap();
        assert_eq!(s.ingest.secrets.len(), 2);
        let out = s.redacted();
        for secret in ["old-secret", "new-secret", "shpss_topsecret"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains("2 secret(s)"), "{out}");
        assert!(!format!("{s:?}").contains("shpss_topsecret"));
    }
}

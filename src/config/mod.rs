//! Typed settings: `config/default.toml` (compiled in), then an optional file named by
//! `CCSYNC_CONFIG`, then `CCSYNC_` environment variables (DESIGN §5.3).
//!
//! Parse, don't validate: [`Settings::load`] either returns settings whose URLs, list ids and keys
//! are known good, or a [`ConfigError`] whose one line names the key and the problem. Secrets
//! (`client_secret`, `token_encryption_key`, and the broker/Redis URLs, which carry passwords) are
//! [`SecretString`]s: their `Debug` is redacted and [`Settings::redacted`] prints them masked.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use uuid::Uuid;

mod connections;
mod ingest;
mod load;
mod redact;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use connections::{AmqpEndpoint, RedisSettings, RedisTopology, TlsFiles};
pub use ingest::IngestSettings;
pub use sections::{
    AccountSettings, AuthSettings, OptoutSettings, RateLimitSettings, TestingSettings,
    WorkerSettings,
};

/// The defaults, compiled in so the binary runs without the repository next to it.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

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
    /// The default lists of every configured account and the global ones, for checking
    /// messages outside the worker (`ccsync publish`, `ccsync ingest`).
    pub fn default_lists(&self) -> crate::contact::DefaultLists {
        crate::contact::DefaultLists {
            global: self.default_list_ids.clone(),
            accounts: self
                .accounts
                .iter()
                .map(|(name, a)| (name.clone(), a.default_list_ids.clone()))
                .collect(),
        }
    }

    /// Each configured account's weight in the key's fair shares (others weigh 1).
    pub(crate) fn account_weights(&self) -> std::collections::HashMap<String, f64> {
        self.accounts
            .iter()
            .map(|(name, a)| (name.clone(), a.weight))
            .collect()
    }

    /// Connect links are on: `auth.invite_secret` and `ingest.public_url` are both set.
    pub(crate) fn connect_links(&self) -> bool {
        self.auth.invite_secret.is_some() && self.ingest.public_url.is_some()
    }

    /// The broker's URL and TLS files, for `crate::queue::Broker::connect`.
    pub fn amqp(&self) -> AmqpEndpoint {
        AmqpEndpoint {
            url: self.amqp_url.clone(),
            tls: self.amqp_tls.clone(),
        }
    }

    /// `<queue>.dead`, where dead letters wait for a human or `dlq replay`.
    #[cfg(test)]
    pub(crate) fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }

    pub fn linger_bounds(&self) -> (Duration, Duration) {
        (self.worker.linger_min, self.worker.linger_max)
    }
}

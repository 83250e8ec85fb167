//! Loading and layering: defaults, `CCSYNC_CONFIG`, then `CCSYNC_` variables, into the raw
//! document that `validate` turns into [`Settings`].

use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

use super::sections::{AuthSettings, RateLimitSettings, TestingSettings, WorkerSettings};
use super::validate::check_url_problem;
use super::{ConfigError, DEFAULT_TOML, Settings, invalid};
use super::{connections::RawRedis, ingest::RawIngest, sections::RawOptouts};

/// The raw, layered document. Kept private: the rest of the crate sees [`Settings`].
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    pub(super) amqp_url: SecretString,
    pub(super) redis_url: SecretString,
    #[serde(default, deserialize_with = "string_like")]
    pub(super) amqp_ca_file: String,
    #[serde(default, deserialize_with = "string_like")]
    pub(super) amqp_client_cert_file: String,
    #[serde(default, deserialize_with = "string_like")]
    pub(super) amqp_client_key_file: String,
    #[serde(default, deserialize_with = "string_like")]
    pub(super) redis_ca_file: String,
    #[serde(default, deserialize_with = "string_like")]
    pub(super) redis_client_cert_file: String,
    #[serde(default, deserialize_with = "string_like")]
    pub(super) redis_client_key_file: String,
    #[serde(deserialize_with = "string_like")]
    pub(super) queue: String,
    #[serde(deserialize_with = "string_like")]
    pub(super) client_id: String,
    #[serde(deserialize_with = "secret_like")]
    pub(super) client_secret: SecretString,
    pub(super) api_base_url: String,
    pub(super) auth_base_url: String,
    #[serde(deserialize_with = "string_like")]
    pub(super) default_list_ids: String,
    #[serde(deserialize_with = "secret_like")]
    pub(super) token_encryption_key: SecretString,
    pub(super) metrics_addr: String,
    pub(super) log_format: String,
    pub(super) redis: RawRedis,
    pub(super) auth: AuthSettings,
    pub(super) ratelimit: RateLimitSettings,
    pub(super) worker: WorkerSettings,
    pub(super) testing: TestingSettings,
    #[serde(default)]
    pub(super) accounts: std::collections::BTreeMap<String, RawAccount>,
    pub(super) ingest: RawIngest,
    #[serde(deserialize_with = "string_like")]
    pub(super) events_exchange: String,
    pub(super) optouts: RawOptouts,
}

/// `[accounts.<name>]`: what differs per CC account.
#[derive(Debug, Clone, Deserialize, Default)]
pub(super) struct RawAccount {
    #[serde(default, deserialize_with = "string_like")]
    pub(super) default_list_ids: String,
    #[serde(default, deserialize_with = "string_like")]
    pub(super) weight: String,
}

impl Settings {
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
}

/// Environment values are typed by their look (`12345` is a number), but ids, prefixes and secrets
/// may well look like numbers: accept any scalar where a string is expected.
pub(super) fn string_like<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
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

pub(super) fn secret_like<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<SecretString, D::Error> {
    string_like(d).map(SecretString::from)
}

/// A secret that is off when empty.
pub(super) fn optional_secret<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SecretString>, D::Error> {
    let s = string_like(d)?;
    Ok((!s.trim().is_empty()).then(|| SecretString::from(s.trim().to_string())))
}

pub(super) fn env_provider() -> Env {
    // CCSYNC_CONFIG names a file, not a key.
    Env::prefixed("CCSYNC_").split("__").ignore(&["config"])
}

/// `worker.prefetch` → `CCSYNC_WORKER__PREFETCH`, the name an operator sets.
pub(super) fn env_name(path: &str) -> String {
    format!("CCSYNC_{}", path.to_ascii_uppercase().replace('.', "__"))
}

pub(super) fn empty_is_none<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()))
}

/// A duration written as a whole number of milliseconds (keys ending in `_ms`).
pub(super) fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A duration written as a whole number of seconds (keys ending in `_secs`).
pub(super) fn secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// An http(s) URL, or `None` when empty; a bad one fails the load under its key's name.
pub(super) fn optional_http_url<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<url::Url>, D::Error> {
    let s = string_like(d)?;
    match s.trim() {
        "" => Ok(None),
        u => check_url_problem(u, &["http", "https"])
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

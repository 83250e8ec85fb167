//! `[ingest]`: the webhook endpoint's settings and their validation.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

use super::load::{secret_like, string_like};
use super::validate::{check_url, parse_list_ids, rename_key};
use super::{ConfigError, invalid};

/// `[ingest]` as written; validated into [`IngestSettings`].
#[derive(Debug, Deserialize)]
pub(super) struct RawIngest {
    pub(super) addr: String,
    #[serde(deserialize_with = "secret_like")]
    pub(super) secrets: SecretString,
    #[serde(deserialize_with = "secret_like")]
    pub(super) shopify_secret: SecretString,
    #[serde(deserialize_with = "string_like")]
    pub(super) shopify_accounts: String,
    #[serde(deserialize_with = "string_like")]
    pub(super) shopify_list_ids: String,
    #[serde(deserialize_with = "string_like")]
    pub(super) shopify_tags_field: String,
    pub(super) max_body_bytes: usize,
    pub(super) max_lines: usize,
    pub(super) rate_per_second: u32,
    pub(super) signature_tolerance_secs: u64,
    pub(super) publish_timeout_ms: u64,
    pub(super) retry_after_secs: u64,
    pub(super) publish_channels: usize,
    #[serde(default, deserialize_with = "string_like")]
    pub(super) public_url: String,
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
    /// `CCSYNC_INGEST__RETRY_AFTER_SECS`: the Retry-After of a 503 or 429 (at least 1 s).
    pub retry_after: Duration,
    pub publish_channels: usize,
    /// `CCSYNC_INGEST__PUBLIC_URL`: where customers and CC reach `ccsync ingest` (a path prefix
    /// is kept). Connect links are built on it and CC redirects to `<public URL>/oauth/callback`.
    /// `None`: no connect links.
    pub public_url: Option<url::Url>,
}

impl IngestSettings {
    /// `[ingest]` for `config check`: secrets shown only as how many there are.
    pub(super) fn redacted(&self) -> String {
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
            self.retry_after.as_secs(),
            self.publish_channels,
            self.public_url.as_ref().map(url::Url::as_str).unwrap_or(""),
        )
    }
}

pub(super) fn validate_ingest(raw: RawIngest) -> Result<IngestSettings, ConfigError> {
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
        retry_after: Duration::from_secs(raw.retry_after_secs.max(1)),
        publish_channels: raw.publish_channels,
    })
}

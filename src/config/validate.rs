//! Validation: the raw document becomes [`Settings`] whose URLs, list ids and keys are known
//! good, or a [`ConfigError`] naming the key.

use std::time::Duration;

use secrecy::ExposeSecret;
use uuid::Uuid;

use super::connections::{tls_files, validate_redis};
use super::ingest::validate_ingest;
use super::load::Raw;
use super::sections::validate_optouts;
use super::{AccountSettings, ConfigError, LogFormat, Settings, TokenKey, invalid};

impl Settings {
    pub(super) fn validate(raw: Raw) -> Result<Settings, ConfigError> {
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

    pub(super) fn check_numbers(&self) -> Result<(), ConfigError> {
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
        if w.linger_min > w.linger_max {
            return Err(invalid(
                "CCSYNC_WORKER__LINGER_MIN_MS",
                "must not exceed worker.linger_max_ms",
            ));
        }
        if w.max_hold >= Duration::from_secs(1800) {
            return Err(invalid(
                "CCSYNC_WORKER__MAX_HOLD_SECS",
                "must stay below RabbitMQ's 30-minute consumer timeout (1800 s)",
            ));
        }
        if w.request_timeout.is_zero()
            || w.request_timeout >= w.max_hold.max(Duration::from_secs(1))
        {
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
        if w.claim_lease.is_zero() {
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
        if r.jitter_allowance.is_zero() || r.jitter_allowance >= Duration::from_secs(1) {
            return Err(invalid(
                "CCSYNC_RATELIMIT__JITTER_ALLOWANCE_MS",
                "must be 1..=999 (0 leaves no margin for network jitter)",
            ));
        }
        if r.redis_timeout.is_zero() {
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
}

/// The same problem, reported under another key.
pub(super) fn rename_key(e: ConfigError, key: &str) -> ConfigError {
    match e {
        ConfigError::Invalid { problem, .. } => invalid(key, problem),
        other => other,
    }
}

pub(super) fn check_url(key: &str, value: &str, schemes: &[&str]) -> Result<url::Url, ConfigError> {
    check_url_problem(value, schemes).map_err(|problem| invalid(key, problem))
}

/// `value` parsed as a URL of one of `schemes`, or the problem (for the key's error line).
pub(super) fn check_url_problem(value: &str, schemes: &[&str]) -> Result<url::Url, String> {
    let u = url::Url::parse(value).map_err(|e| format!("is not a URL ({e})"))?;
    if !schemes.contains(&u.scheme()) {
        return Err(format!(
            "scheme '{}' is not one of {}",
            u.scheme(),
            schemes.join(", ")
        ));
    }
    Ok(u)
}

pub(super) fn parse_list_ids(s: &str) -> Result<Vec<Uuid>, ConfigError> {
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

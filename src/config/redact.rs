//! What `config check` prints: warnings and the effective configuration, secrets masked.

use uuid::Uuid;

use super::connections::mask_url;
use super::{AuthSettings, OptoutSettings, RateLimitSettings, Settings, WorkerSettings};

impl Settings {
    /// Configuration problems that do not stop the program but that an operator should hear of.
    pub(crate) fn warnings(&self) -> Vec<String> {
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

    /// The effective configuration with every secret masked, for `config check`.
    pub(crate) fn redacted(&self) -> String {
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
}

// `config check` prints these sections with `{:#?}`: each duration under its key's name, in its
// key's unit, exactly as written in the configuration.

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("scope", &self.scope)
            .field("refresh_before_secs", &self.refresh_before.as_secs())
            .field("lock_lease_ms", &ms(self.lock_lease))
            .field("wait_bound_secs", &self.wait_bound.as_secs())
            .field("keepalive_secs", &self.keepalive.as_secs())
            .field(
                "jwks_url",
                &self.jwks_url.as_ref().map_or("", url::Url::as_str),
            )
            .field("invite_secret", &self.invite_secret)
            .finish()
    }
}

impl std::fmt::Debug for RateLimitSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitSettings")
            .field("per_second", &self.per_second)
            .field("daily_quota", &self.daily_quota)
            .field("daily_reserve", &self.daily_reserve)
            .field("token_per_second", &self.token_per_second)
            .field("expected_replicas", &self.expected_replicas)
            .field("jitter_allowance_ms", &ms(self.jitter_allowance))
            .field("throttle_cooldown_ms", &ms(self.throttle_cooldown))
            .field("redis_timeout_ms", &ms(self.redis_timeout))
            .finish()
    }
}

impl std::fmt::Debug for WorkerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSettings")
            .field("prefetch", &self.prefetch)
            .field("batch_max_contacts", &self.batch_max_contacts)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("linger_min_ms", &ms(self.linger_min))
            .field("linger_max_ms", &ms(self.linger_max))
            .field("max_activities_in_flight", &self.max_activities_in_flight)
            .field("max_hold_secs", &self.max_hold.as_secs())
            .field("request_timeout_secs", &self.request_timeout.as_secs())
            .field("poll_initial_ms", &ms(self.poll_initial))
            .field("poll_max_ms", &ms(self.poll_max))
            .field("shutdown_deadline_secs", &self.shutdown_deadline.as_secs())
            .field("create_custom_fields", &self.create_custom_fields)
            .field(
                "custom_fields_refresh_secs",
                &self.custom_fields_refresh.as_secs(),
            )
            .field("max_redeliveries", &self.max_redeliveries)
            .field("claim_lease_secs", &self.claim_lease.as_secs())
            .field("max_held_bytes", &self.max_held_bytes)
            .finish()
    }
}

impl std::fmt::Debug for OptoutSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptoutSettings")
            .field("enabled", &self.enabled)
            .field("poll_secs", &self.poll.as_secs())
            .field("backfill_from", &self.backfill_from)
            .finish()
    }
}

/// Whole milliseconds, as `_ms` keys are written.
fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

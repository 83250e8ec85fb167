//! The settings a world's processes get (`CCSYNC_*` pairs), its names, its token sets and what
//! the simulator stored.

use std::collections::BTreeMap;

use ccsync::auth::cli::store_new_set;
use ccsync::auth::store::Store;
use ccsync::auth::{AccessToken, RefreshMode, RefreshToken};
use ccsync::config::{ConfigError, Settings};
use ccsync_sim::{Sim, SimContact};
use uuid::Uuid;

/// 12 random hex digits, for queue names and Redis key prefixes of one world.
pub fn short_id() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Broker and Redis URLs: the caller's `CCSYNC_AMQP_URL` / `CCSYNC_REDIS_URL` when set (none:
/// the defaults of `config/default.toml`).
pub fn service_env() -> Vec<(String, String)> {
    ["CCSYNC_AMQP_URL", "CCSYNC_REDIS_URL"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// The pairs that point a ccsync process at `sim` as OAuth client `client_id`, with Redis keys
/// under `prefix` and text logs.
pub fn sim_env(sim: &Sim, client_id: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("CCSYNC_API_BASE_URL", sim.api_base_url()),
        ("CCSYNC_AUTH_BASE_URL", sim.auth_base_url()),
        ("CCSYNC_CLIENT_ID", client_id.to_string()),
        ("CCSYNC_REDIS__KEY_PREFIX", prefix.to_string()),
        ("CCSYNC_LOG_FORMAT", "text".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Settings as a process with these `CCSYNC_*` variables (and no others) loads them.
pub fn settings_of(pairs: &[(String, String)]) -> Result<Settings, ConfigError> {
    Settings::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// What a finished `ccsync auth login` leaves behind: a fresh token set for `account` issued by
/// `sim` to `client_id`, stored in `store` as the next generation. Returns (generation, refresh
/// token).
pub async fn seed_tokens(
    sim: &Sim,
    store: &Store,
    client_id: &str,
    account: &str,
    mode: RefreshMode,
) -> Result<(u64, String), String> {
    let (access, refresh) = sim.issue_tokens(client_id, account);
    let generation = store_new_set(
        store,
        account,
        AccessToken::new(access),
        RefreshToken::new(refresh.clone()),
        None,
        mode,
    )
    .await
    .map_err(|e| format!("seeding the token set of {account}: {e}"))?;
    Ok((generation, refresh))
}

/// The simulator's store of the `default` account as email → contact.
pub fn store(sim: &Sim) -> BTreeMap<String, SimContact> {
    store_of(sim, "default")
}

/// One CC account's store in the simulator (each account has its own, as in CC).
pub fn store_of(sim: &Sim, account: &str) -> BTreeMap<String, SimContact> {
    sim.contacts_of(account)
        .into_iter()
        .map(|c| (c.email.clone(), c))
        .collect()
}

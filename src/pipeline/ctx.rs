//! What every sender shares: the CC client, the token source, the gate, the pacing, the ledger,
//! and the custom-field cache; and the two traits the production rooms implement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::cc::api::Api;
use crate::config::WorkerSettings;
use crate::ledger::Ledger;
use crate::ratelimit::Gate;

/// Why the worker must stop consuming for a while.
#[derive(Debug, Clone)]
pub enum Pause {
    /// The account's connection is dead: a human must run `ccsync auth login`.
    Auth { account: String },
    /// The daily quota is spent until 00:00 UTC.
    Quota { wait: Duration },
}

/// Failure to get an access token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// Re-authorization needed (`ccsync auth login`): pause.
    #[error("connection dead: {0}")]
    Dead(String),
    /// Transient (Redis, token endpoint): retry later.
    #[error("token unavailable: {0}")]
    Unavailable(String),
}

/// Where access tokens come from (the auth room's `TokenProvider` in production).
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    async fn access_token(&self, account: &str) -> Result<SecretString, TokenError>;
    /// CC refused `rejected` with a 401: refresh unless someone already did.
    async fn token_rejected(
        &self,
        account: &str,
        rejected: &SecretString,
    ) -> Result<SecretString, TokenError>;
    /// Returns once the account has a usable token set again.
    async fn wait_until_alive(&self, account: &str);
}

/// How long a batch may linger (the rate limiter's budget-aware pacing in production).
#[async_trait::async_trait]
pub trait Pacing: Send + Sync {
    async fn linger(&self) -> Duration;
}

/// Everything a sender needs; shared by all sender tasks.
pub struct Ctx {
    pub api: Api,
    pub tokens: Arc<dyn TokenSource>,
    pub gate: Arc<dyn Gate>,
    pub pacing: Option<Arc<dyn Pacing>>,
    /// The newest-event ledger; `None` only in tests that run one batch at a time.
    pub ledger: Option<Arc<Ledger>>,
    pub worker: WorkerSettings,
    /// Per account: CC custom-field name → id, and when it was fetched.
    pub(super) custom_fields: Mutex<HashMap<String, FieldIds>>,
}

/// CC custom-field name → id for one account, and when it was fetched.
pub(super) type FieldIds = (Instant, HashMap<String, String>);

impl Ctx {
    pub fn new(
        api: Api,
        tokens: Arc<dyn TokenSource>,
        gate: Arc<dyn Gate>,
        pacing: Option<Arc<dyn Pacing>>,
        ledger: Option<Arc<Ledger>>,
        worker: WorkerSettings,
    ) -> Ctx {
        Ctx {
            api,
            tokens,
            gate,
            pacing,
            ledger,
            worker,
            custom_fields: Mutex::new(HashMap::new()),
        }
    }

    /// The current linger, within the configured bounds.
    pub async fn linger(&self) -> Duration {
        let min = Duration::from_millis(self.worker.linger_min_ms);
        let max = Duration::from_millis(self.worker.linger_max_ms);
        match &self.pacing {
            Some(p) => p.linger().await.clamp(min, max),
            None => min,
        }
    }
}

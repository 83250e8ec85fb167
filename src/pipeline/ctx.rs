//! What every sender shares: the CC client, the token source, the gate, the pacing, the ledger,
//! and the custom-field cache; and the two traits the production rooms implement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::auth::AccessToken;
use crate::batch::Pace;
use crate::cc::api::Api;
use crate::config::WorkerSettings;
use crate::ledger::Ledger;
use crate::ratelimit::Gate;

/// Why the worker must stop consuming for a while (a dead account's connection is not one: its
/// messages are parked, and the `auth` series of `ccsync_paused` stays 0). A pause never blames a
/// message: what the worker holds goes back to the queue without counting toward any redelivery
/// limit.
#[derive(Debug, Clone)]
pub(crate) enum Pause {
    /// The daily quota is spent until 00:00 UTC.
    Quota { wait: Duration },
    /// CC is failing (5xx, timeouts) call after call: probe at a capped rate until it answers.
    Outage { account: String },
    /// CC answers 403 (scope, user privilege, app status): probe slowly until it stops.
    Forbidden { account: String },
    /// A configured default list (`CCSYNC_DEFAULT_LIST_IDS`) does not exist in the account.
    Config { account: String, list: uuid::Uuid },
}

impl Pause {
    /// The `account` label of `ccsync_paused`: empty for the whole key (quota).
    pub(crate) fn account(&self) -> &str {
        match self {
            Pause::Quota { .. } => "",
            Pause::Outage { account }
            | Pause::Forbidden { account }
            | Pause::Config { account, .. } => account,
        }
    }

    /// The `reason` label of `ccsync_paused`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Pause::Quota { .. } => "quota",
            Pause::Outage { .. } => "outage",
            Pause::Forbidden { .. } => "forbidden",
            Pause::Config { .. } => "config",
        }
    }
}

/// Transient CC failures in a row, across every call of this process: this many mean CC is
/// down (or unreachable), and the worker pauses and probes instead of retrying call by call.
/// With the backoff of [`super::call`] that is about 15 s of failures.
pub(crate) const OUTAGE_AFTER: u32 = 5;

/// The outage breaker: counts transient failures in a row; any answer from CC resets it.
#[derive(Debug, Default)]
pub(crate) struct Outage(std::sync::atomic::AtomicU32);

impl Outage {
    /// Count one failure; true when CC now counts as down.
    pub(crate) fn failed(&self) -> bool {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= OUTAGE_AFTER
    }
    /// CC answered.
    pub(crate) fn answered(&self) {
        self.0.store(0, std::sync::atomic::Ordering::Relaxed);
    }
    pub(crate) fn is_down(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) >= OUTAGE_AFTER
    }
}

/// Failure to get an access token.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum TokenError {
    /// Re-authorization needed (`ccsync auth login`): park the account's messages.
    #[error("connection dead: {0}")]
    Dead(String),
    /// No token set was ever stored for the account: nobody authorized it.
    #[error("no token set was ever stored for this account: {0}")]
    Unknown(String),
    /// Transient (Redis, token endpoint): retry later.
    #[error("token unavailable: {0}")]
    Unavailable(String),
}

/// Where access tokens come from (the auth room's `TokenProvider` in production).
#[async_trait::async_trait]
pub(crate) trait TokenSource: Send + Sync {
    async fn access_token(&self, account: &str) -> Result<AccessToken, TokenError>;
    /// CC refused `rejected` with a 401: refresh unless someone already did.
    async fn token_rejected(
        &self,
        account: &str,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError>;
    /// Returns once the account has a usable token set again.
    async fn wait_until_alive(&self, account: &str);
}

/// How long a batch may linger (the rate limiter's budget-aware pacing in production).
#[async_trait::async_trait]
pub(crate) trait Pacing: Send + Sync {
    async fn linger(&self) -> Duration;
    /// The plan the batcher releases every group against (issue 11: one schedule for all
    /// groups). By default every group waits [`Pacing::linger`].
    async fn pace(&self) -> Pace {
        Pace::fixed(self.linger().await)
    }
}

/// Everything a sender needs; shared by all sender tasks.
pub(crate) struct Ctx {
    pub api: Api,
    pub tokens: Arc<dyn TokenSource>,
    pub gate: Arc<dyn Gate>,
    pub pacing: Option<Arc<dyn Pacing>>,
    /// The newest-event ledger.
    pub ledger: Arc<Ledger>,
    pub worker: WorkerSettings,
    /// Per account: CC custom-field name → id, and when it was fetched.
    pub(super) custom_fields: Mutex<HashMap<String, FieldIds>>,
    /// Per account: the list ids CC has, and when they were fetched.
    pub(super) lists: Mutex<HashMap<String, ListIds>>,
    /// Whether CC counts as down (transient failures in a row).
    pub outage: Outage,
    /// Today's allowance of imports for finding the rows CC did not take.
    pub finding: Finding,
    /// Crash marks for redelivered messages.
    pub marks: Arc<crate::poison::Marks>,
    /// The configured default lists, per account (`[accounts.<name>] default_list_ids`, else
    /// `CCSYNC_DEFAULT_LIST_IDS`): a missing one is a configuration problem, not the message's.
    pub default_lists: crate::contact::DefaultLists,
    /// Per-account parking while an account's connection is dead.
    pub parking: Arc<crate::parking::Parking>,
    /// Accounts the configuration names (and `default`): their messages wait for a login even
    /// before any token set exists; a message for any other account without a token set is
    /// dead-lettered `unknown_account`.
    pub configured_accounts: std::collections::HashSet<String>,
    /// Turns at the gate between accounts: the key's fair shares (issue 13).
    pub turns: crate::ratelimit::FairTurns,
    /// Per-account weights of the fair shares (`[accounts.<name>] weight`; others weigh 1).
    pub weights: HashMap<String, f64>,
}

/// The Redis-backed rooms every sender shares: the ordering ledger, the crash marks and the
/// per-account parking.
pub(crate) struct Stores {
    pub ledger: Arc<Ledger>,
    pub marks: Arc<crate::poison::Marks>,
    pub parking: Arc<crate::parking::Parking>,
}

/// Imports (with their polls, about 4 requests each) one process may spend a UTC day finding the
/// rows CC did not take: 125 × 4 = 500 requests, 5% of a standard key's 10,000.
pub(crate) const FINDING_PER_DAY: u32 = 125;

/// The day's allowance of imports for finding rows (see [`FINDING_PER_DAY`]).
#[derive(Debug, Default)]
pub(crate) struct Finding(std::sync::Mutex<(String, u32)>);

impl Finding {
    /// Take `n` imports from today's allowance; false when it is spent.
    pub(crate) fn spend(&self, n: u32) -> bool {
        let today = crate::clock::utc_day(crate::clock::now_utc());
        let mut g = self.0.lock().expect("not poisoned");
        if g.0 != today {
            *g = (today, 0);
        }
        if g.1 + n > FINDING_PER_DAY {
            return false;
        }
        g.1 += n;
        true
    }
}

/// The list ids one account has in CC, and when they were fetched.
pub(super) type ListIds = (Instant, std::collections::HashSet<uuid::Uuid>);

/// CC custom-field name → id for one account, and when it was fetched.
pub(super) type FieldIds = (Instant, HashMap<String, String>);

impl Ctx {
    pub(crate) fn new(
        api: Api,
        tokens: Arc<dyn TokenSource>,
        gate: Arc<dyn Gate>,
        pacing: Option<Arc<dyn Pacing>>,
        stores: Stores,
        worker: WorkerSettings,
    ) -> Ctx {
        let Stores {
            ledger,
            marks,
            parking,
        } = stores;
        Ctx {
            api,
            tokens,
            gate,
            pacing,
            ledger,
            worker,
            custom_fields: Mutex::new(HashMap::new()),
            lists: Mutex::new(HashMap::new()),
            outage: Outage::default(),
            finding: Finding::default(),
            marks,
            default_lists: Default::default(),
            parking,
            configured_accounts: ["default".to_string()].into_iter().collect(),
            turns: crate::ratelimit::FairTurns::new(HashMap::new()),
            weights: HashMap::new(),
        }
    }

    /// The default lists of `account`: its own, else the global ones.
    pub(crate) fn defaults_for(&self, account: &str) -> &[uuid::Uuid] {
        self.default_lists.for_account(account)
    }

    /// The batcher's plan, its linger bounds within the configured ones.
    pub(crate) async fn pace(&self) -> Pace {
        let min = self.worker.linger_min;
        let max = self.worker.linger_max.max(min);
        match &self.pacing {
            Some(p) => {
                let pace = p.pace().await;
                let pmin = pace.min.clamp(min, max);
                Pace {
                    min: pmin,
                    max: pace.max.clamp(pmin, max),
                    ..pace
                }
            }
            None => Pace::fixed(min),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_rows_has_a_daily_allowance() {
        let f = Finding::default();
        let mut spent = 0;
        while f.spend(2) {
            spent += 2;
        }
        assert_eq!(spent, FINDING_PER_DAY - FINDING_PER_DAY % 2);
        assert!(!f.spend(2));
        assert_eq!(f.spend(1), FINDING_PER_DAY % 2 == 1);
    }

    #[test]
    fn the_outage_breaker_opens_after_failures_in_a_row_and_any_answer_closes_it() {
        let o = Outage::default();
        for _ in 1..OUTAGE_AFTER {
            assert!(!o.failed());
        }
        o.answered();
        for _ in 1..OUTAGE_AFTER {
            assert!(!o.failed());
        }
        assert!(o.failed());
        assert!(o.is_down());
        o.answered();
        assert!(!o.is_down());
    }
}

//! Shared state of one simulator: its clock, fault switches, request log and the locks around
//! the OAuth, limit and contact stores. Every lock is a `std::sync::Mutex` held for a few
//! statements and never across an `.await`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::config::{Faults, LostMode, LostResponse, SimConfig};
use super::jwt::SigningKey;
use super::limits::Limits;
use super::store::{Store, Stores};
use super::tokens::AuthState;

/// One request as the simulator saw it (what CC would have seen).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RequestRecord {
    /// Arrival order, from 0.
    pub seq: u64,
    /// Simulator clock at arrival.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Real milliseconds since the simulator started, at arrival.
    pub real_ms: u64,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The client: Basic user or `client_id` parameter on OAuth calls, the token's `cid` on API
    /// calls; `None` when it could not be told (e.g. a 401 for an unknown token).
    pub client_id: Option<String>,
    /// The CC account of an API call (its token's `platform_user_id`), as CC would see it.
    #[serde(default)]
    pub account: Option<String>,
    /// `grant_type` of token-endpoint calls.
    pub grant_type: Option<String>,
    /// HTTP status sent; `None` when no response was sent (dropped, hanging, or still running).
    pub status: Option<u16>,
    /// OAuth `error` or CC `error_key` of an error response.
    pub error: Option<String>,
    /// The fault applied, if any: `error` (injected 503, or a 5xx on an activity poll), `hang`,
    /// `drop`, `lost_hang`, `forbidden` (403), `conflict` (sign_up_form 409), `not_found`
    /// (activity-poll 404).
    pub fault: Option<String>,
}

/// The simulator clock: real time plus an offset that only ever grows ([`Clock::advance`]).
/// Token expiry, refresh-token idle expiry, device codes, the sliding rate windows and the daily
/// quota all run on it, so tests move time instead of sleeping. Activity processing runs on real
/// time (it is short and tests poll for it).
#[derive(Debug)]
pub struct Clock {
    frozen: bool,
    start: Instant,
    start_wall: OffsetDateTime,
    offset: Mutex<Duration>,
}

impl Clock {
    fn new(frozen: bool) -> Self {
        Self {
            frozen,
            start: Instant::now(),
            start_wall: OffsetDateTime::now_utc(),
            offset: Mutex::new(Duration::ZERO),
        }
    }
    /// Monotonic simulator time since start (real elapsed + offset; only the offset when frozen).
    pub fn mono(&self) -> Duration {
        let real = if self.frozen {
            Duration::ZERO
        } else {
            self.start.elapsed()
        };
        real + *lock(&self.offset)
    }
    /// Simulator wall clock (UTC).
    pub fn now(&self) -> OffsetDateTime {
        self.start_wall + self.mono()
    }
    pub fn advance(&self, by: Duration) {
        *lock(&self.offset) += by;
    }
    pub fn offset(&self) -> Duration {
        *lock(&self.offset)
    }
    pub fn real_elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Lock a mutex, recovering from poisoning (a panicking test thread must not wedge the sim).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything one simulator shares between its handlers and its handle.
#[derive(Debug)]
pub struct Shared {
    pub cfg: SimConfig,
    pub clock: Clock,
    pub key: &'static SigningKey,
    pub faults: Mutex<Faults>,
    pub auth: Mutex<AuthState>,
    pub limits: Mutex<Limits>,
    /// One store per CC account (`store.rs`); lock it through [`Shared::with_store`] where one
    /// account is meant.
    pub stores: Mutex<Stores>,
    pub log: Mutex<Vec<RequestRecord>>,
    pub rng: Mutex<StdRng>,
    /// Cancelled on shutdown: hanging requests give up, the server drains.
    pub shutdown: CancellationToken,
    pub base_url: String,
    /// The CC user signed in at the simulated browser: `GET /authorize` without the sim-only
    /// `account` parameter approves for this account, as CC's page approves for whoever is signed
    /// in ([`crate::sim::Sim::sign_in`], `POST /_sim/sign_in`).
    pub signed_in: Mutex<String>,
}

impl Shared {
    pub fn new(cfg: SimConfig, key: &'static SigningKey, base_url: String) -> Self {
        let rng = match cfg.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self {
            stores: Mutex::new(Stores::default()),
            auth: Mutex::new(AuthState::default()),
            limits: Mutex::new(Limits::default()),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            rng: Mutex::new(rng),
            clock: Clock::new(cfg.freeze_clock),
            shutdown: CancellationToken::new(),
            cfg,
            key,
            base_url,
            signed_in: Mutex::new(super::store::DEFAULT_ACCOUNT.to_string()),
        }
    }

    /// Run `f` on `account`'s store (created if new) after settling its due activities.
    pub fn with_store<R>(&self, account: &str, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut all = lock(&self.stores);
        let s = all.account(account);
        super::activity::settle(s);
        f(s)
    }

    /// Run `f` on `account`'s store after settling it, or on an empty store if the account has
    /// none (reads never create a store).
    pub fn read_store<R>(&self, account: &str, f: impl FnOnce(&Store) -> R) -> R {
        let mut all = lock(&self.stores);
        match all.settled(account) {
            Some(s) => f(s),
            None => f(&Store::default()),
        }
    }

    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// True with probability `p` (exactly false at 0, exactly true at 1).
    pub fn chance(&self, p: f64) -> bool {
        if p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            lock(&self.rng).random_bool(p)
        }
    }

    pub fn random_below(&self, max_inclusive: u64) -> u64 {
        if max_inclusive == 0 {
            0
        } else {
            lock(&self.rng).random_range(0..=max_inclusive)
        }
    }

    /// Take one use of a lost-response switch; returns the mode when this response is to be lost.
    pub fn take_lost(
        &self,
        which: fn(&mut Faults) -> &mut Option<LostResponse>,
    ) -> Option<LostMode> {
        let mut f = lock(&self.faults);
        let slot = which(&mut f);
        let lr = (*slot)?;
        match lr.times {
            None => Some(lr.mode),
            Some(0) => {
                *slot = None;
                None
            }
            Some(n) => {
                *slot = if n <= 1 {
                    None
                } else {
                    Some(LostResponse {
                        times: Some(n - 1),
                        ..lr
                    })
                };
                Some(lr.mode)
            }
        }
    }

    /// Append a record at request arrival; returns its index.
    pub fn log_arrival(&self, method: &str, path: &str) -> u64 {
        let mut log = lock(&self.log);
        let seq = log.len() as u64;
        let rec = RequestRecord {
            seq,
            at: self.clock.now(),
            real_ms: self.clock.real_elapsed().as_millis() as u64,
            method: method.to_owned(),
            path: path.to_owned(),
            client_id: None,
            account: None,
            grant_type: None,
            status: None,
            error: None,
            fault: None,
        };
        log.push(rec);
        seq
    }

    /// Update the record `seq` in place.
    pub fn log_update(&self, seq: u64, f: impl FnOnce(&mut RequestRecord)) {
        // `seq` is the record's index: it is assigned as the log's length under the lock.
        if let Some(r) = lock(&self.log).get_mut(seq as usize) {
            f(r);
        }
    }
}

//! The in-memory cache behind the hot path: what this process knows about each account
//! ([`Cached`]: nothing yet, a live set, or dead), the per-account single-flight guard, and the
//! registry of the accounts this process follows.
//!
//! Its own file because it is shared state, not a step of the protocol: the hot path (the parent
//! module), `refresh`, `background` and `state` all read and write it through these few methods.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::TokenProvider;
use crate::auth::tokenset::TokenSet;

/// What this process knows about one account.
#[derive(Clone)]
pub(super) enum Cached {
    /// Nothing loaded yet.
    Empty,
    Live(TokenSet),
    /// Dead at `generation`; `checked` rate-limits the hot path's look at Redis for a revival.
    Dead {
        generation: u64,
        reason: String,
        checked: Instant,
    },
}

pub(super) struct Account {
    pub(super) name: String,
    pub(super) cache: RwLock<Cached>,
    /// Single-flight: the task holding this runs the refresh protocol; the others wait for it.
    pub(super) flight: tokio::sync::Mutex<()>,
}

impl Account {
    pub(super) fn snapshot(&self) -> Cached {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub(super) fn set(&self, c: Cached) {
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = c;
    }
    pub(super) fn live(&self) -> Option<TokenSet> {
        match self.snapshot() {
            Cached::Live(s) => Some(s),
            _ => None,
        }
    }
    pub(super) fn generation(&self) -> u64 {
        match self.snapshot() {
            Cached::Empty => 0,
            Cached::Live(s) => s.generation,
            Cached::Dead { generation, .. } => generation,
        }
    }
}

impl TokenProvider {
    pub(super) fn account(&self, name: &str) -> Arc<Account> {
        let mut m = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Account {
                    name: name.to_string(),
                    cache: RwLock::new(Cached::Empty),
                    flight: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// The accounts this process holds a live token set for (every account with one in Redis,
    /// once [`TokenProvider::discover`] ran), sorted: the accounts the opt-out feed polls.
    pub(crate) fn live_accounts(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .all_accounts()
            .into_iter()
            .filter(|a| matches!(a.snapshot(), Cached::Live(_)))
            .map(|a| a.name.clone())
            .collect();
        v.sort();
        v
    }

    pub(super) fn all_accounts(&self) -> Vec<Arc<Account>> {
        let m = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        m.values().cloned().collect()
    }
}

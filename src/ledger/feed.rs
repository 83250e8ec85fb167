//! The opt-out feed's state in Redis (issue 15, item 3): which replica polls (a lease with a
//! fencing number) and, per account, how far the feed got (its cursor). The feed itself lives in
//! [`crate::pipeline::optouts`]; this is its Redis room, beside the ledger facts it feeds.
//!
//! Keys (`{feed}` is a hash tag, so every key of one deployment sits in one Redis Cluster slot
//! and the scripts may touch several):
//! * `<prefix>:optouts:{feed}:lease`: the holder's owner id, `SET NX PX`, renewed every third of
//!   the lease while it polls ([`FeedStore::try_lease`], [`FeedStore::renew`]);
//! * `<prefix>:optouts:{feed}:fence`: a counter bumped at every acquisition: the holder's fencing
//!   number;
//! * `<prefix>:optouts:{feed}:cursor:<account>`: a hash with `at` (CC's `opt_out_date` of the
//!   newest opt-out published, as CC wrote it), `ties` (SHA-256 prefixes of the addresses
//!   published with exactly that date, comma-separated: never an address in clear), `polled`
//!   (unix ms when the last complete poll started) and `fence` (of the holder that wrote it).
//!   No TTL: a lost cursor would replay or skip opt-outs.
//!
//! Why a fencing number on top of the owner check: a holder that stalls past its lease (a long
//! GC-free pause is rare in Rust, a frozen VM is not) may wake up after another replica took the
//! lease and moved the cursor. [`FeedStore::advance`] checks, in one script, that the lease is
//! still the caller's **and** that no newer holder (a higher fence) wrote the cursor, so a stale
//! holder can publish duplicates (consumers dedupe on the event id) but can never move a cursor
//! back or forward behind the current holder's back.

use super::{Ledger, LedgerError};
use crate::config::Settings;
use crate::redis::{Conn, Redis};

/// `SET lease owner NX PX ms`; on success the new fencing number, else 0.
const ACQUIRE: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"#;

/// Extend the lease only while it is still ours.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#;

/// Release the lease only while it is still ours.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// KEYS: lease, cursor. ARGV: owner, fence, at, ties, polled. Writes the cursor only while the
/// lease is the caller's and no holder with a higher fence wrote it; 1 when written.
const ADVANCE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[2], 'fence') or '0') > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], 'at', ARGV[3], 'ties', ARGV[4], 'polled', ARGV[5], 'fence', ARGV[2])
return 1
"#;

/// A held feed lease.
#[derive(Debug, Clone)]
pub(crate) struct FeedLease {
    /// Random per acquisition: only this holder can renew, release or write under it.
    pub owner: String,
    /// The fencing number of this acquisition (strictly higher than every earlier holder's).
    pub fence: u64,
}

/// One account's feed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FeedCursor {
    /// CC's `opt_out_date` of the newest opt-out published, exactly as CC wrote it (the next
    /// poll sends it back as `optout_after`).
    pub at: String,
    /// [`FeedStore::tie`] of every address published with exactly the date `at`.
    pub ties: Vec<String>,
    /// Unix ms when the last complete poll started (the next is due a poll interval later).
    pub polled_ms: i64,
}

/// The feed's lease and cursors.
pub(crate) struct FeedStore {
    pool: Redis,
    prefix: String,
}

impl FeedStore {
    pub(crate) fn connect(settings: &Settings) -> Result<FeedStore, LedgerError> {
        let pool = Redis::from_settings(settings).map_err(|e| LedgerError(e.to_string()))?;
        Ok(FeedStore {
            pool,
            prefix: format!("{}:optouts:{{feed}}", settings.redis.key_prefix),
        })
    }

    /// How an address is kept in a cursor's tie set: the ledger's hash of account and address
    /// (lower-cased), never the address.
    pub(crate) fn tie(account: &str, email: &str) -> String {
        Ledger::hash(account, &email.to_lowercase())
    }

    fn lease_key(&self) -> String {
        format!("{}:lease", self.prefix)
    }

    fn cursor_key(&self, account: &str) -> String {
        format!("{}:cursor:{account}", self.prefix)
    }

    async fn conn(&self) -> Result<Conn, LedgerError> {
        self.pool
            .get()
            .await
            .map_err(|e| LedgerError(e.to_string()))
    }

    /// Try once to become the replica that polls. `None`: another holds the lease.
    pub(crate) async fn try_lease(&self, lease_ms: u64) -> Result<Option<FeedLease>, LedgerError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let fence: u64 = redis::Script::new(ACQUIRE)
            .key(self.lease_key())
            .key(format!("{}:fence", self.prefix))
            .arg(&owner)
            .arg(lease_ms.max(1))
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        Ok((fence > 0).then_some(FeedLease { owner, fence }))
    }

    /// Push the lease out. `false`: it is lost (expired, and maybe someone else holds it).
    pub(crate) async fn renew(
        &self,
        lease: &FeedLease,
        lease_ms: u64,
    ) -> Result<bool, LedgerError> {
        let n: i64 = redis::Script::new(RENEW)
            .key(self.lease_key())
            .arg(&lease.owner)
            .arg(lease_ms.max(1))
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        Ok(n == 1)
    }

    /// Give the lease up (on shutdown: another replica takes over at once, not a lease later).
    pub(crate) async fn release(&self, lease: &FeedLease) -> Result<(), LedgerError> {
        let _: i64 = redis::Script::new(RELEASE)
            .key(self.lease_key())
            .arg(&lease.owner)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        Ok(())
    }

    /// `account`'s cursor; `None` before the feed first ran for it.
    pub(crate) async fn cursor(&self, account: &str) -> Result<Option<FeedCursor>, LedgerError> {
        let (at, ties, polled): (Option<String>, Option<String>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.cursor_key(account))
            .arg("at")
            .arg("ties")
            .arg("polled")
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        Ok(at.map(|at| FeedCursor {
            at,
            ties: ties
                .unwrap_or_default()
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            polled_ms: polled.unwrap_or(0),
        }))
    }

    /// Move `account`'s cursor, only while `lease` holds (see the module docs). `false`: the
    /// lease is lost and nothing was written; stop polling.
    pub(crate) async fn advance(
        &self,
        lease: &FeedLease,
        account: &str,
        cursor: &FeedCursor,
    ) -> Result<bool, LedgerError> {
        let n: i64 = redis::Script::new(ADVANCE)
            .key(self.lease_key())
            .key(self.cursor_key(account))
            .arg(&lease.owner)
            .arg(lease.fence)
            .arg(&cursor.at)
            .arg(cursor.ties.join(","))
            .arg(cursor.polled_ms)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> FeedStore {
        let prefix = format!("test-{}", uuid::Uuid::new_v4());
        let s = Settings::from_pairs([("CCSYNC_REDIS__KEY_PREFIX", prefix.as_str())]).unwrap();
        FeedStore::connect(&s).unwrap()
    }

    /// Drop what a test wrote under its own prefix (the cursor and the fence have no TTL).
    async fn cleanup(s: &FeedStore) {
        let mut c = s.conn().await.unwrap();
        let _: i64 = redis::cmd("DEL")
            .arg(s.lease_key())
            .arg(format!("{}:fence", s.prefix))
            .arg(s.cursor_key("default"))
            .query_async(&mut c)
            .await
            .unwrap();
    }

    fn cursor(at: &str) -> FeedCursor {
        FeedCursor {
            at: at.into(),
            ties: vec!["aa".into(), "bb".into()],
            polled_ms: 7,
        }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_with_rising_fences_and_only_the_holder_moves_the_cursor() {
        let s = store();
        let a = s.try_lease(10_000).await.unwrap().expect("free lease");
        assert!(s.try_lease(10_000).await.unwrap().is_none(), "held by a");
        assert!(s.renew(&a, 10_000).await.unwrap());
        assert_eq!(s.cursor("default").await.unwrap(), None);
        assert!(s.advance(&a, "default", &cursor("t1")).await.unwrap());
        assert_eq!(s.cursor("default").await.unwrap(), Some(cursor("t1")));
        s.release(&a).await.unwrap();
        // The next holder fences the first out: a stale `a` can neither renew nor write.
        let b = s.try_lease(10_000).await.unwrap().expect("released");
        assert!(b.fence > a.fence);
        assert!(!s.renew(&a, 10_000).await.unwrap());
        assert!(!s.advance(&a, "default", &cursor("stale")).await.unwrap());
        assert!(s.advance(&b, "default", &cursor("t2")).await.unwrap());
        assert_eq!(s.cursor("default").await.unwrap().unwrap().at, "t2");
        // Other accounts have their own cursor.
        assert_eq!(s.cursor("acme").await.unwrap(), None);
        s.release(&b).await.unwrap();
        cleanup(&s).await;
    }

    #[tokio::test]
    async fn a_lower_fence_never_overwrites_a_newer_holders_cursor() {
        let s = store();
        let a = s.try_lease(10_000).await.unwrap().unwrap();
        s.release(&a).await.unwrap();
        let b = s.try_lease(10_000).await.unwrap().unwrap();
        assert!(s.advance(&b, "default", &cursor("b")).await.unwrap());
        s.release(&b).await.unwrap();
        // `a` (lower fence) somehow holds the lease key again with its owner id: the fence
        // written by `b` still refuses it.
        let stale = FeedLease {
            owner: a.owner.clone(),
            fence: a.fence,
        };
        let mut c = s.conn().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg(s.lease_key())
            .arg(&a.owner)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(!s.advance(&stale, "default", &cursor("a")).await.unwrap());
        assert_eq!(s.cursor("default").await.unwrap().unwrap().at, "b");
        cleanup(&s).await;
    }

    #[tokio::test]
    async fn an_expired_lease_is_free_again() {
        let s = store();
        let a = s.try_lease(50).await.unwrap().unwrap();
        let mut n = 0;
        let b = loop {
            if let Some(b) = s.try_lease(10_000).await.unwrap() {
                break b;
            }
            n += 1;
            assert!(n < 200, "the 50 ms lease never expired");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(b.fence > a.fence);
        assert!(!s.renew(&a, 10_000).await.unwrap());
        cleanup(&s).await;
    }
}

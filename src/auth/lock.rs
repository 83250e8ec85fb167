//! The refresh lock: a lease in Redis (`SET key owner NX PX lease`), released only by its owner
//! (compare-and-delete in Lua) — DESIGN §3.3.
//!
//! The lease is a liveness device, not a safety one: a holder that stalls past its lease can lose
//! the lock to another replica, and it is the generation compare-and-set in
//! [`super::store::Store::compare_and_set`] that keeps such a holder from overwriting the newer
//! set. The lock only keeps the *common* case down to one refresh per expiry.

use super::store::{Store, StoreError};

/// Delete the lock only if it still holds our owner id.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Extend the lease only if we still own it.
const EXTEND: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#;

/// A held lock. Release it explicitly with [`LeaseLock::release`]; if the process dies the lease
/// runs out on its own.
#[derive(Debug)]
pub struct LeaseLock {
    key: String,
    /// Random per acquisition, so a holder can never release a lock someone else took after its
    /// lease expired.
    pub owner: String,
}

impl LeaseLock {
    /// Try once. `None`: someone else holds it.
    pub async fn try_acquire(
        store: &Store,
        account: &str,
        lease_ms: u64,
    ) -> Result<Option<LeaseLock>, StoreError> {
        let key = store.lock_key(account);
        let owner = uuid::Uuid::new_v4().to_string();
        let mut c = store.conn().await?;
        let ok: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(lease_ms.max(1))
            .query_async(&mut c)
            .await?;
        Ok(ok.map(|_| LeaseLock { key, owner }))
    }

    /// Push the lease out (only while we still own it). `false`: the lease is lost.
    pub(crate) async fn extend(&self, store: &Store, lease_ms: u64) -> Result<bool, StoreError> {
        let mut c = store.conn().await?;
        let n: i64 = redis::Script::new(EXTEND)
            .key(&self.key)
            .arg(&self.owner)
            .arg(lease_ms.max(1))
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Release if still ours. `false`: the lease ran out and maybe someone else holds it now.
    pub async fn release(self, store: &Store) -> Result<bool, StoreError> {
        let mut c = store.conn().await?;
        let n: i64 = redis::Script::new(RELEASE)
            .key(&self.key)
            .arg(&self.owner)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// The current holder's owner id, for `auth status`.
    pub async fn holder(store: &Store, account: &str) -> Result<Option<(String, i64)>, StoreError> {
        let mut c = store.conn().await?;
        let key = store.lock_key(account);
        let (owner, ttl): (Option<String>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut c)
            .await?;
        Ok(owner.map(|o| (o, ttl)))
    }
}

//! Two small keys beside the token sets: the change counter that tells running replicas a login
//! stored a set (so they follow a new account within seconds, not at their next full `SCAN`), and
//! the single-use markers of connect links (issue 14).

use redis::AsyncCommands;

use super::{Store, StoreError};

impl Store {
    /// `{prefix}:auth:changes`: bumped by every login, import, connect link and logout.
    pub(crate) fn changes_key(&self) -> String {
        format!("{}:auth:changes", self.prefix)
    }

    /// `{prefix}:connect:{{<link id>}}:used`: a connect link's single-use marker.
    pub(crate) fn connect_key(&self, link_id: &str) -> String {
        format!("{}:connect:{{{link_id}}}:used", self.prefix)
    }

    /// Tell running replicas that the set of token-set records changed.
    pub(crate) async fn bump_changes(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = c.incr(self.changes_key(), 1).await?;
        Ok(())
    }

    /// The change counter (0 before the first login under this prefix).
    pub(crate) async fn changes(&self) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let n: Option<u64> = c.get(self.changes_key()).await?;
        Ok(n.unwrap_or(0))
    }

    /// Claim a connect link for one callback: `SET NX` with `ttl_secs` (at least 1), so two
    /// callbacks of one link cannot both store a set, and the marker outlives every way back in.
    /// `false`: the link was already used (or is being used right now).
    pub(crate) async fn claim_connect(
        &self,
        link_id: &str,
        account: &str,
        ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.connect_key(link_id))
            .arg(account)
            .arg("NX")
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async(&mut c)
            .await?;
        Ok(set.is_some())
    }

    /// Whether a connect link was used (or is being used right now).
    pub(crate) async fn connect_used(&self, link_id: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        Ok(c.exists(self.connect_key(link_id)).await?)
    }

    /// Give a claimed link back after a callback that stored nothing (the customer may open the
    /// link again while it is valid).
    pub(crate) async fn release_connect(&self, link_id: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = c.del(self.connect_key(link_id)).await?;
        Ok(())
    }
}

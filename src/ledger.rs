//! The newest-event ledger shared by all replicas (DESIGN §2 "the newest event wins, across
//! batches and replicas"). A Redis room, like `auth` and `ratelimit`.
//!
//! Per (account, email) it keeps two keys, named by a SHA-256 of account and email (Redis never
//! holds an address in clear):
//! * `…:newest:<h>`: the newest `occurred_at` (ms) already applied or in flight, with a TTL
//!   (`LEDGER_TTL`, longer than any redelivery cycle);
//! * `…:fly:<h>`: the id of the import currently carrying this email, as a lease that expires on
//!   its own (the worker's hold bound) if a replica dies.
//!
//! Before an import, a sender *claims* its contacts in one atomic Lua call. Each contact gets:
//! * `Fresh`: newest so far (ties: the later delivery wins) → send fields and lists;
//! * `Stale`: an event newer than this one was already applied or is in flight → its field
//!   values are dropped, its list memberships still go (imports never remove a list);
//! * `Busy`: another import carrying this email is in flight → not sent now; the sender retries the
//!   claim after its current import settles, so no two imports with the same email are ever in
//!   flight at once, and no replica waits while holding claims (no deadlock).
//!
//! The alternative, partitioning the queue by email with a consistent-hash exchange, would change
//! the publishing contract (default exchange, routing key = queue), so ccsync does not use it.

use std::time::Duration;

use aws_lc_rs::digest;
use deadpool_redis::{Config, Pool, Runtime};
use secrecy::ExposeSecret;

use crate::config::Settings;

/// How long the ledger remembers an email's newest event.
pub const LEDGER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The verdict for one contact of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fresh,
    Stale,
    Busy,
}

/// Redis unavailable: the caller retries later (it never sends unclaimed contacts).
#[derive(Debug, thiserror::Error)]
#[error("ordering ledger unavailable (Redis): {0}")]
pub struct LedgerError(String);

pub struct Ledger {
    pool: Pool,
    prefix: String,
    lease: Duration,
}

const CLAIM: &str = r#"
local out = {}
local n = #KEYS / 2
for i = 1, n do
  local nk, fk = KEYS[2*i-1], KEYS[2*i]
  local occ = tonumber(ARGV[3+i])
  local fly = redis.call('GET', fk)
  if fly and fly ~= ARGV[1] then
    out[i] = 0
  else
    redis.call('SET', fk, ARGV[1], 'PX', ARGV[3])
    local newest = tonumber(redis.call('GET', nk) or '-1')
    if occ < newest then
      out[i] = 2
    else
      redis.call('SET', nk, ARGV[3+i], 'PX', ARGV[2])
      out[i] = 1
    end
  end
end
return out
"#;

const RELEASE: &str = r#"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
"#;

impl Ledger {
    pub fn connect(settings: &Settings) -> Result<Ledger, LedgerError> {
        let pool = Config::from_url(settings.redis_url.expose_secret())
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| LedgerError(e.to_string()))?;
        Ok(Ledger {
            pool,
            prefix: format!("{}:ledger", settings.redis.key_prefix),
            lease: Duration::from_secs(settings.worker.max_hold_secs + 60),
        })
    }

    fn hash(account: &str, email: &str) -> String {
        let d = digest::digest(&digest::SHA256, format!("{account}\n{email}").as_bytes());
        d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Claim `(account, email, occurred_at ms)` items for the import `owner`.
    pub async fn claim(
        &self,
        owner: &str,
        items: &[(&str, &str, i64)],
    ) -> Result<Vec<Verdict>, LedgerError> {
        let mut out = Vec::with_capacity(items.len());
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        let script = redis::Script::new(CLAIM);
        // Keep each script call small so Redis is never blocked for long.
        for chunk in items.chunks(500) {
            let mut inv = script.prepare_invoke();
            for (account, email, _) in chunk {
                let h = Self::hash(account, email);
                inv.key(format!("{}:newest:{h}", self.prefix));
                inv.key(format!("{}:fly:{h}", self.prefix));
            }
            inv.arg(owner)
                .arg(LEDGER_TTL.as_millis() as u64)
                .arg(self.lease.as_millis() as u64);
            for (_, _, occ) in chunk {
                inv.arg(*occ);
            }
            let codes: Vec<i64> = inv
                .invoke_async(&mut *conn)
                .await
                .map_err(|e| LedgerError(e.to_string()))?;
            out.extend(codes.into_iter().map(|c| match c {
                1 => Verdict::Fresh,
                2 => Verdict::Stale,
                _ => Verdict::Busy,
            }));
        }
        Ok(out)
    }

    /// Release the in-flight leases `owner` holds on these emails (after settlement).
    pub async fn release(&self, owner: &str, items: &[(&str, &str)]) -> Result<(), LedgerError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        let script = redis::Script::new(RELEASE);
        for chunk in items.chunks(500) {
            let mut inv = script.prepare_invoke();
            for (account, email) in chunk {
                inv.key(format!(
                    "{}:fly:{}",
                    self.prefix,
                    Self::hash(account, email)
                ));
            }
            inv.arg(owner);
            let _: i64 = inv
                .invoke_async(&mut *conn)
                .await
                .map_err(|e| LedgerError(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        let prefix = format!("test-{}", uuid::Uuid::new_v4());
        let s = Settings::from_pairs([("CCSYNC_REDIS__KEY_PREFIX", prefix.as_str())]).unwrap();
        Ledger::connect(&s).unwrap()
    }

    #[tokio::test]
    async fn newest_wins_and_one_import_per_email_in_flight() {
        let l = ledger();
        let a = [("default", "a@x.co", 2_000)];
        assert_eq!(l.claim("imp1", &a).await.unwrap(), vec![Verdict::Fresh]);
        // Another import for the same email while imp1 is in flight: busy.
        let older = [("default", "a@x.co", 1_000)];
        assert_eq!(l.claim("imp2", &older).await.unwrap(), vec![Verdict::Busy]);
        // Other emails and other accounts are independent.
        let other = [("default", "b@x.co", 1_000), ("acme", "a@x.co", 1_000)];
        assert_eq!(
            l.claim("imp2", &other).await.unwrap(),
            vec![Verdict::Fresh, Verdict::Fresh]
        );
        l.release("imp1", &[("default", "a@x.co")]).await.unwrap();
        // The older event now loses its fields (stale) but may travel for its lists.
        assert_eq!(l.claim("imp2", &older).await.unwrap(), vec![Verdict::Stale]);
        l.release("imp2", &[("default", "a@x.co")]).await.unwrap();
        // Equal occurred_at: the later delivery wins.
        let same = [("default", "a@x.co", 2_000)];
        assert_eq!(l.claim("imp3", &same).await.unwrap(), vec![Verdict::Fresh]);
        // Releasing with the wrong owner does not free the lease.
        l.release("imp9", &[("default", "a@x.co")]).await.unwrap();
        assert_eq!(l.claim("imp4", &same).await.unwrap(), vec![Verdict::Busy]);
    }
}

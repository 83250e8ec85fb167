//! The newest-event ledger shared by all replicas (DESIGN §2 "the newest event wins, across
//! batches and replicas"). A Redis room, like `auth` and `ratelimit`.
//!
//! Per (account, email) it keeps two keys, named by a SHA-256 of account and email (Redis never
//! holds an address in clear):
//! * `…:f:<h>`: a hash field name → the newest `occurred_at` (ms) that set this field, applied or
//!   in flight, with a TTL (`LEDGER_TTL`, longer than any redelivery cycle). Fields are tracked one
//!   by one, so the outcome equals applying every event in `occurred_at` order whatever order the
//!   events arrive, batch or replica they travel in — the same field-by-field rule the batcher's
//!   coalescing uses inside one batch;
//! * `…:fly:<h>`: the id of the import currently carrying this email, as a short lease
//!   (`worker.claim_lease_secs`) that the sender renews every third of the lease for as long as
//!   its import is in flight ([`Ledger::renew`]), even past the worker's hold bound (the
//!   deliveries go back to the queue, the claim stays until CC settles the import), and that
//!   expires on its own if the replica dies, so a restarted or other replica takes the email over
//!   within seconds. (After such a death CC may still be processing the dead replica's import; the
//!   next import of those emails can then overlap it once — the price of not waiting a whole hold
//!   bound after every crash.)
//!
//! Before an import, a sender *claims* its contacts in one atomic Lua call. Each contact gets:
//! * `Go { stale }`: send it, without the fields in `stale` (a newer event already set them; ties
//!   go to the later delivery). List memberships always go (imports never remove a list).
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it, leaving out these fields (a newer event set them).
    Go { stale: Vec<String> },
    /// Another import carrying this email is in flight.
    Busy,
}

/// One contact to claim: account, email, and each field it sets with that field's own
/// `occurred_at` (Unix ms).
pub type Claim<'a> = (&'a str, &'a str, Vec<(String, i64)>);

/// Redis unavailable: the caller retries later (it never sends unclaimed contacts).
#[derive(Debug, thiserror::Error)]
#[error("ordering ledger unavailable (Redis): {0}")]
pub struct LedgerError(String);

pub struct Ledger {
    pool: Pool,
    prefix: String,
    lease: Duration,
}

/// KEYS: (fields hash, fly lease) per contact. ARGV: owner, ttl ms, lease ms, then per contact
/// its field names and, in the same order, each field's own `occurred_at` ms, both joined by
/// "\31". Returns per contact -1 (busy) or a string of '0'/'1' per field ('1' = this value is the
/// newest for that field).
const CLAIM: &str = r#"
local out = {}
local n = #KEYS / 2
for i = 1, n do
  local hk, fk = KEYS[2*i-1], KEYS[2*i]
  local names = ARGV[2+2*i]
  local times = ARGV[3+2*i]
  local fly = redis.call('GET', fk)
  if fly and fly ~= ARGV[1] then
    out[i] = -1
  else
    redis.call('SET', fk, ARGV[1], 'PX', ARGV[3])
    local mask = ''
    if names ~= '' then
      local ts = {}
      for t in string.gmatch(times, '[^\31]+') do ts[#ts+1] = t end
      local j = 0
      for name in string.gmatch(names, '[^\31]+') do
        j = j + 1
        local occ = tonumber(ts[j])
        local stored = tonumber(redis.call('HGET', hk, name) or '-1')
        if occ >= stored then
          redis.call('HSET', hk, name, ts[j])
          mask = mask .. '1'
        else
          mask = mask .. '0'
        end
      end
    end
    redis.call('PEXPIRE', hk, ARGV[2])
    out[i] = mask
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

const RENEW: &str = r#"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
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
            lease: Duration::from_secs(settings.worker.claim_lease_secs),
        })
    }

    /// How long a claim survives without renewal (`worker.claim_lease_secs`).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Forget every email this prefix's ledger remembers (a benchmark's or a test's own prefix
    /// when it is done: a 200,000-contact run leaves 200,000 keys for `LEDGER_TTL` otherwise).
    /// Incremental `SCAN` + `UNLINK`, so Redis keeps answering other clients meanwhile (one
    /// `KEYS` over millions of keys blocks it for seconds). Returns how many keys went.
    pub async fn forget_all(&self) -> Result<u64, LedgerError> {
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        let pattern = format!("{}:*", self.prefix);
        let (mut cursor, mut gone) = (0u64, 0u64);
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(|e| LedgerError(e.to_string()))?;
            if !keys.is_empty() {
                gone += redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<u64>(&mut c)
                    .await
                    .map_err(|e| LedgerError(e.to_string()))?;
            }
            if next == 0 {
                return Ok(gone);
            }
            cursor = next;
        }
    }

    fn hash(account: &str, email: &str) -> String {
        let d = digest::digest(&digest::SHA256, format!("{account}\n{email}").as_bytes());
        d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Claim contacts `(account, email, [(field name, that field's occurred_at ms)])` for the
    /// import `owner`. Each field is compared and recorded with its own time (a coalesced entry
    /// carries fields of several events).
    pub async fn claim(
        &self,
        owner: &str,
        items: &[Claim<'_>],
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
                inv.key(format!("{}:f:{h}", self.prefix));
                inv.key(format!("{}:fly:{h}", self.prefix));
            }
            inv.arg(owner)
                .arg(LEDGER_TTL.as_millis() as u64)
                .arg(self.lease.as_millis() as u64);
            for (_, _, fields) in chunk {
                let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
                let times: Vec<String> = fields.iter().map(|(_, t)| t.to_string()).collect();
                inv.arg(names.join("\u{1f}")).arg(times.join("\u{1f}"));
            }
            let replies: Vec<redis::Value> = inv
                .invoke_async(&mut *conn)
                .await
                .map_err(|e| LedgerError(e.to_string()))?;
            for ((_, _, fields), r) in chunk.iter().zip(replies) {
                out.push(match r {
                    redis::Value::Int(_) => Verdict::Busy,
                    redis::Value::BulkString(mask) => Verdict::Go {
                        stale: fields
                            .iter()
                            .zip(mask.iter())
                            .filter(|(_, m)| **m == b'0')
                            .map(|((n, _), _)| n.clone())
                            .collect(),
                    },
                    other => {
                        return Err(LedgerError(format!("unexpected ledger reply {other:?}")));
                    }
                });
            }
        }
        Ok(out)
    }

    /// Release the in-flight leases `owner` holds on these emails (after settlement).
    pub async fn release(&self, owner: &str, items: &[(&str, &str)]) -> Result<(), LedgerError> {
        self.per_fly(RELEASE, owner, items, None).await
    }

    /// Extend the in-flight leases `owner` holds (call every few seconds while importing).
    pub async fn renew(&self, owner: &str, items: &[(&str, &str)]) -> Result<(), LedgerError> {
        self.per_fly(RENEW, owner, items, Some(self.lease)).await
    }

    async fn per_fly(
        &self,
        lua: &str,
        owner: &str,
        items: &[(&str, &str)],
        lease: Option<Duration>,
    ) -> Result<(), LedgerError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        let script = redis::Script::new(lua);
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
            if let Some(l) = lease {
                inv.arg(l.as_millis() as u64);
            }
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

    fn go(stale: &[&str]) -> Verdict {
        Verdict::Go {
            stale: stale.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn at(ms: i64, n: &[&str]) -> Vec<(String, i64)> {
        n.iter().map(|s| (s.to_string(), ms)).collect()
    }

    #[tokio::test]
    async fn newest_wins_field_by_field_and_one_import_per_email_in_flight() {
        let l = ledger();
        let newer = [("default", "a@x.co", at(2_000, &["first_name"]))];
        assert_eq!(l.claim("imp1", &newer).await.unwrap(), vec![go(&[])]);
        // Another import for the same email while imp1 is in flight: busy.
        let older = [(
            "default",
            "a@x.co",
            at(1_000, &["first_name", "last_name"]),
        )];
        assert_eq!(l.claim("imp2", &older).await.unwrap(), vec![Verdict::Busy]);
        // Other emails and other accounts are independent.
        let other = [
            ("default", "b@x.co", at(1_000, &[])),
            ("acme", "a@x.co", at(1_000, &["first_name"])),
        ];
        assert_eq!(
            l.claim("imp2", &other).await.unwrap(),
            vec![go(&[]), go(&[])]
        );
        l.release("imp1", &[("default", "a@x.co")]).await.unwrap();
        // The older event loses the field the newer one set, keeps the one it alone sets.
        assert_eq!(
            l.claim("imp2", &older).await.unwrap(),
            vec![go(&["first_name"])]
        );
        l.release("imp2", &[("default", "a@x.co")]).await.unwrap();
        // Equal occurred_at: the later delivery wins.
        let same = [("default", "a@x.co", at(2_000, &["first_name"]))];
        assert_eq!(l.claim("imp3", &same).await.unwrap(), vec![go(&[])]);
        // Releasing (or renewing) with the wrong owner does not touch the lease.
        l.release("imp9", &[("default", "a@x.co")]).await.unwrap();
        l.renew("imp9", &[("default", "a@x.co")]).await.unwrap();
        assert_eq!(l.claim("imp4", &same).await.unwrap(), vec![Verdict::Busy]);
        l.renew("imp3", &[("default", "a@x.co")]).await.unwrap();
        assert_eq!(l.claim("imp4", &same).await.unwrap(), vec![Verdict::Busy]);
    }

    /// The three-event case of issue 11: replica A coalesced t1 {first, last} with t3 {first},
    /// replica B holds t2 {first, last}. Each field carries its own time, so in either claim order
    /// every field ends with its newest value: first_name from t3, last_name from t2.
    #[tokio::test]
    async fn a_coalesced_entry_claims_each_field_with_its_own_time() {
        let merged = vec![("first_name".to_string(), 3), ("last_name".to_string(), 1)];
        let middle = at(2, &["first_name", "last_name"]);
        for a_first in [true, false] {
            let l = ledger();
            let a = [("default", "x@x.co", merged.clone())];
            let b = [("default", "x@x.co", middle.clone())];
            let (first, second) = if a_first { (&a, &b) } else { (&b, &a) };
            let v1 = l.claim("one", first).await.unwrap();
            l.release("one", &[("default", "x@x.co")]).await.unwrap();
            let v2 = l.claim("two", second).await.unwrap();
            let (va, vb) = if a_first { (v1, v2) } else { (v2, v1) };
            if a_first {
                assert_eq!(va, vec![go(&[])]);
                assert_eq!(vb, vec![go(&["first_name"])], "B's last_name (t2) beats A's t1");
            } else {
                assert_eq!(vb, vec![go(&[])]);
                assert_eq!(va, vec![go(&["last_name"])], "A's t1 last_name is stale");
            }
            l.forget_all().await.unwrap();
        }
    }

    #[tokio::test]
    async fn forget_all_removes_this_prefix_only() {
        let (mine, other) = (ledger(), ledger());
        let items: Vec<String> = (0..2_500).map(|i| format!("p{i}@x.co")).collect();
        let claims: Vec<Claim> = items
            .iter()
            .map(|e| ("default", e.as_str(), at(1_000, &["first_name"])))
            .collect();
        mine.claim("imp1", &claims).await.unwrap();
        other.claim("imp1", &claims[..1]).await.unwrap();
        other
            .release("imp1", &[("default", "p0@x.co")])
            .await
            .unwrap();
        // Two keys per email (the field ledger and the in-flight lease), over several SCAN pages.
        assert_eq!(mine.forget_all().await.unwrap(), 5_000);
        assert_eq!(mine.forget_all().await.unwrap(), 0);
        // An older event: this prefix forgot the newer one (and the lease), the other did not.
        let older = [("default", "p0@x.co", at(0, &["first_name"]))];
        assert_eq!(mine.claim("imp2", &older).await.unwrap(), vec![go(&[])]);
        assert_eq!(
            other.claim("imp2", &older).await.unwrap(),
            vec![go(&["first_name"])]
        );
        mine.forget_all().await.unwrap();
        other.forget_all().await.unwrap();
    }
}

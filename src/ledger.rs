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
//!
//! # Consent (issue 15, DESIGN §5.1b)
//! The same claim carries the consent actions ([`Kind`]), so unsubscribes, list removals and
//! deletes are ordered against upserts by `occurred_at` exactly like fields are. Besides the
//! per-field times, the field hash keeps per list `+<list>` (the newest upsert that added it) and
//! `-<list>` (the newest removal), `!up` (the newest upsert) and `!in` (the newest explicit
//! consent sent through `sign_up_form`), all with the field hash's [`LEDGER_TTL`]. A third key,
//! `…:c:<h>`, written only by consent events, keeps two facts for [`CONSENT_TTL`] (much longer:
//! a dead letter replayed months later must still meet the opt-out it predates):
//! * `out`: the newest known opt-out (a `contact.unsubscribe`, or CC's own from the opt-out feed,
//!   [`Ledger::record_optout`]);
//! * `del`: the newest delete (or an unsubscribe of a contact CC did not have,
//!   [`Ledger::record_floor`]): nothing older may bring the contact back.
//!
//! The rules, each "newest `occurred_at` wins":
//! * an upsert older than `del` is superseded whole (not sent: it would revive the contact); its
//!   fields older than `del` are stale; a list removed (`-l`) after it is not re-added; an
//!   explicit one older than `out` must not go through `sign_up_form` (it would re-subscribe:
//!   reference §5.1) — its fields may still be imported;
//! * an unsubscribe older than `in` (the person opted in again later) or than `del` is
//!   superseded;
//! * a list removal older than `del` is superseded; a list re-added (`+l`) after it stays;
//! * a delete older than `up` (a newer upsert exists) is superseded.
//!
//! # The opt-out feed's state
//! [`FeedStore`] (`ledger/feed.rs`) keeps the feed's lease and per-account cursors; the feed
//! ([`crate::pipeline::optouts`]) raises `out` through [`Ledger::record_optout`].

mod feed;

pub use feed::{FeedCursor, FeedLease, FeedStore};

use std::time::Duration;

use aws_lc_rs::digest;

use crate::config::Settings;

/// How long the ledger remembers an email's newest event.
pub const LEDGER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long the consent facts (`out`, `del`) are kept after their last change: 400 days, beyond
/// a year of dead-letter retention and replays. One small hash per email that ever had a consent
/// event (upserts alone never create it).
pub const CONSENT_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// What an event does, for the ledger's rules (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Fields and lists; `explicit` goes through `sign_up_form`.
    Upsert {
        explicit: bool,
    },
    Unsubscribe,
    RemoveLists,
    Delete,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::Upsert { explicit: false } => "u",
            Kind::Upsert { explicit: true } => "e",
            Kind::Unsubscribe => "U",
            Kind::RemoveLists => "R",
            Kind::Delete => "D",
        }
    }
}

/// One event to claim (an entry of a batch: coalesced events of one kind).
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub account: &'a str,
    pub email: &'a str,
    pub kind: Kind,
    /// The newest `occurred_at` (Unix ms) of the events in the entry.
    pub occurred_at: i64,
    /// Each field it sets with that field's own `occurred_at` (upserts only).
    pub fields: Vec<(String, i64)>,
    /// The lists it adds (upsert) or removes (remove-lists).
    pub lists: &'a [uuid::Uuid],
}

/// The verdict for one event of [`Ledger::claim_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Another call carrying this email is in flight: try again after the current one settles.
    Busy,
    /// Claimed: send it as the [`Go`] says.
    Go(Go),
}

/// How to send a claimed event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Go {
    /// Fields a newer event (or a newer delete) already set: leave them out.
    pub stale_fields: Vec<String>,
    /// Upsert: lists removed by a newer removal (do not re-add). Remove-lists: lists a newer
    /// upsert added (do not remove).
    pub stale_lists: Vec<uuid::Uuid>,
    /// A newer event makes this one moot: settle it without a CC call.
    pub superseded: bool,
    /// An explicit upsert older than the newest known opt-out: never through `sign_up_form`.
    pub signup_blocked: bool,
}
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
    pool: crate::redis::Redis,
    prefix: String,
    lease: Duration,
    /// On Redis Cluster the keys carry a hash tag (see [`Ledger::key`]) and each script call
    /// takes the events of one tag only, so its keys share a slot.
    cluster: bool,
}

/// KEYS: (fields hash, fly lease, consent hash) per event. ARGV: owner, ttl ms, lease ms, consent
/// ttl ms, then per event five: kind code ([`Kind::code`]), field names and, in the same order,
/// each field's own `occurred_at` ms (both joined by "\31"), the event's `occurred_at` ms, its
/// list ids (joined by "\31"). Returns per event -1 (busy) or "<fields>|<lists>|<flag>": one
/// '0'/'1' per field and per list ('1' = go), flag 'X' (superseded), 'B' (sign-up blocked) or
/// empty. The rules are the module docs'.
const CLAIM: &str = r#"
local out = {}
local n = #KEYS / 3
local function num(key, f) return tonumber(redis.call('HGET', key, f) or '-1') end
local function split(s)
  local t = {}
  for x in string.gmatch(s, '[^\31]+') do t[#t+1] = x end
  return t
end
for i = 1, n do
  local hk, fk, ck = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local b = 4 + 5*(i-1)
  local kind, names, times = ARGV[b+1], split(ARGV[b+2]), split(ARGV[b+3])
  local occ, lists = tonumber(ARGV[b+4]), split(ARGV[b+5])
  local fly = redis.call('GET', fk)
  if fly and fly ~= ARGV[1] then
    out[i] = -1
  else
    redis.call('SET', fk, ARGV[1], 'PX', ARGV[3])
    local del = num(ck, 'del')
    local fm, lm, flag = '', '', ''
    if kind == 'u' or kind == 'e' then
      if occ < del then
        flag = 'X'
      else
        for j, name in ipairs(names) do
          local t = tonumber(times[j])
          local floor = math.max(num(hk, name), del)
          if t >= floor then
            redis.call('HSET', hk, name, times[j])
            fm = fm .. '1'
          else
            fm = fm .. '0'
          end
        end
        for _, l in ipairs(lists) do
          if num(hk, '-' .. l) > occ then
            lm = lm .. '0'
          else
            if occ > num(hk, '+' .. l) then redis.call('HSET', hk, '+' .. l, occ) end
            lm = lm .. '1'
          end
        end
        if kind == 'e' then
          if num(ck, 'out') > occ then
            flag = 'B'
          elseif occ > num(hk, '!in') then
            redis.call('HSET', hk, '!in', occ)
          end
        end
        if occ > num(hk, '!up') then redis.call('HSET', hk, '!up', occ) end
      end
    elseif kind == 'U' then
      if num(hk, '!in') > occ or del > occ then
        flag = 'X'
      elseif occ > num(ck, 'out') then
        redis.call('HSET', ck, 'out', occ)
      end
    elseif kind == 'R' then
      if del > occ then
        flag = 'X'
      else
        for _, l in ipairs(lists) do
          if num(hk, '+' .. l) > occ then
            lm = lm .. '0'
          else
            if occ > num(hk, '-' .. l) then redis.call('HSET', hk, '-' .. l, occ) end
            lm = lm .. '1'
          end
        end
      end
    elseif kind == 'D' then
      if num(hk, '!up') > occ then
        flag = 'X'
      elseif occ > del then
        redis.call('HSET', ck, 'del', occ)
      end
    end
    if redis.call('EXISTS', hk) == 1 then redis.call('PEXPIRE', hk, ARGV[2]) end
    if redis.call('EXISTS', ck) == 1 then redis.call('PEXPIRE', ck, ARGV[4]) end
    out[i] = fm .. '|' .. lm .. '|' .. flag
  end
end
return out
"#;

/// KEYS: the consent hash. ARGV: fact name, time ms, ttl ms. Raises the fact to the time.
const RAISE: &str = r#"
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1') then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
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
        let pool =
            crate::redis::Redis::from_settings(settings).map_err(|e| LedgerError(e.to_string()))?;
        Ok(Ledger {
            cluster: pool.is_cluster(),
            pool,
            prefix: format!("{}:ledger", settings.redis.key_prefix),
            lease: settings.worker.claim_lease,
        })
    }

    /// The key `<prefix>:<part>:<h>` of an email's hash `h` (`part`: `f`, `fly` or `c`). On Redis
    /// Cluster it is `<prefix>:{<first two hex digits of h>}:<part>:<h>`: the tag puts an email's
    /// three keys in one slot and spreads the emails over 256 slots (so over every master),
    /// while a claim of a 40,000-contact import still takes at most 256 script calls (one per
    /// tag, see [`Ledger::groups`]). One server keeps the untagged names, so an existing
    /// deployment keeps its ledger.
    fn key(&self, part: &str, h: &str) -> String {
        if self.cluster {
            format!("{}:{{{}}}:{part}:{h}", self.prefix, &h[..2])
        } else {
            format!("{}:{part}:{h}", self.prefix)
        }
    }

    /// The indices of `hashes` in script-call groups of at most 500 (so Redis is never blocked
    /// for long): in order on one server, per hash tag on a cluster (a script's keys must share
    /// a slot).
    fn groups(&self, hashes: &[String]) -> Vec<Vec<usize>> {
        let all: Vec<usize> = (0..hashes.len()).collect();
        if !self.cluster {
            return all.chunks(500).map(<[usize]>::to_vec).collect();
        }
        let mut by_tag: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, h) in hashes.iter().enumerate() {
            by_tag.entry(&h[..2]).or_default().push(i);
        }
        by_tag
            .into_values()
            .flat_map(|v| v.chunks(500).map(<[usize]>::to_vec).collect::<Vec<_>>())
            .collect()
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
        self.pool
            .unlink_matching(&format!("{}:*", self.prefix))
            .await
            .map_err(|e| LedgerError(e.to_string()))
    }

    fn hash(account: &str, email: &str) -> String {
        let d = digest::digest(&digest::SHA256, format!("{account}\n{email}").as_bytes());
        d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Claim contacts `(account, email, [(field name, that field's occurred_at ms)])` for the
    /// import `owner` (implicit upserts without lists: [`Ledger::claim_events`] for the rest).
    /// Each field is compared and recorded with its own time (a coalesced entry carries fields of
    /// several events).
    pub async fn claim(
        &self,
        owner: &str,
        items: &[Claim<'_>],
    ) -> Result<Vec<Verdict>, LedgerError> {
        let events: Vec<Event> = items
            .iter()
            .map(|(account, email, fields)| Event {
                account,
                email,
                kind: Kind::Upsert { explicit: false },
                occurred_at: fields.iter().map(|(_, t)| *t).max().unwrap_or(0),
                fields: fields.clone(),
                lists: &[],
            })
            .collect();
        Ok(self
            .claim_events(owner, &events)
            .await?
            .into_iter()
            .map(|o| match o {
                Outcome::Busy => Verdict::Busy,
                Outcome::Go(g) => Verdict::Go {
                    stale: g.stale_fields,
                },
            })
            .collect())
    }

    /// Claim events of any [`Kind`] for the call `owner` (an import, an activity, a run of
    /// look-ups and PUTs): one atomic script per 500 events applies the module's rules.
    pub async fn claim_events(
        &self,
        owner: &str,
        items: &[Event<'_>],
    ) -> Result<Vec<Outcome>, LedgerError> {
        let mut out: Vec<Option<Outcome>> = vec![None; items.len()];
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        let script = redis::Script::new(CLAIM);
        let hashes: Vec<String> = items
            .iter()
            .map(|e| Self::hash(e.account, e.email))
            .collect();
        for group in self.groups(&hashes) {
            let chunk: Vec<&Event> = group.iter().map(|&i| &items[i]).collect();
            let mut inv = script.prepare_invoke();
            for &i in &group {
                let h = &hashes[i];
                inv.key(self.key("f", h));
                inv.key(self.key("fly", h));
                inv.key(self.key("c", h));
            }
            inv.arg(owner)
                .arg(LEDGER_TTL.as_millis() as u64)
                .arg(self.lease.as_millis() as u64)
                .arg(CONSENT_TTL.as_millis() as u64);
            for e in &chunk {
                let names: Vec<&str> = e.fields.iter().map(|(n, _)| n.as_str()).collect();
                let times: Vec<String> = e.fields.iter().map(|(_, t)| t.to_string()).collect();
                let lists: Vec<String> = e.lists.iter().map(uuid::Uuid::to_string).collect();
                inv.arg(e.kind.code())
                    .arg(names.join("\u{1f}"))
                    .arg(times.join("\u{1f}"))
                    .arg(e.occurred_at)
                    .arg(lists.join("\u{1f}"));
            }
            let replies: Vec<redis::Value> = inv
                .invoke_async(&mut conn)
                .await
                .map_err(|e| LedgerError(e.to_string()))?;
            for ((&i, e), r) in group.iter().zip(&chunk).zip(replies) {
                out[i] = Some(match r {
                    redis::Value::Int(_) => Outcome::Busy,
                    redis::Value::BulkString(reply) => Outcome::Go(parse_go(e, &reply)?),
                    other => {
                        return Err(LedgerError(format!("unexpected ledger reply {other:?}")));
                    }
                });
            }
        }
        out.into_iter()
            .map(|o| o.ok_or_else(|| LedgerError("an event got no ledger reply".into())))
            .collect()
    }

    /// CC's opt-out feed saw `email` unsubscribe at `at_ms`: an explicit upsert older than that
    /// never goes through `sign_up_form`.
    pub async fn record_optout(
        &self,
        account: &str,
        email: &str,
        at_ms: i64,
    ) -> Result<(), LedgerError> {
        self.raise(account, email, "out", at_ms).await
    }

    /// Nothing older than `at_ms` may bring `email` back into CC (an unsubscribe found no contact
    /// in CC: an older import must not create it with implicit permission).
    pub async fn record_floor(
        &self,
        account: &str,
        email: &str,
        at_ms: i64,
    ) -> Result<(), LedgerError> {
        self.raise(account, email, "del", at_ms).await
    }

    async fn raise(
        &self,
        account: &str,
        email: &str,
        fact: &str,
        at_ms: i64,
    ) -> Result<(), LedgerError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        let _: i64 = redis::Script::new(RAISE)
            .key(self.key("c", &Self::hash(account, email)))
            .arg(fact)
            .arg(at_ms)
            .arg(CONSENT_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        Ok(())
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
        let hashes: Vec<String> = items.iter().map(|(a, e)| Self::hash(a, e)).collect();
        for group in self.groups(&hashes) {
            let mut inv = script.prepare_invoke();
            for i in group {
                inv.key(self.key("fly", &hashes[i]));
            }
            inv.arg(owner);
            if let Some(l) = lease {
                inv.arg(l.as_millis() as u64);
            }
            let _: i64 = inv
                .invoke_async(&mut conn)
                .await
                .map_err(|e| LedgerError(e.to_string()))?;
        }
        Ok(())
    }
}

/// Read one "<fields>|<lists>|<flag>" reply of [`CLAIM`] for `e`.
fn parse_go(e: &Event<'_>, reply: &[u8]) -> Result<Go, LedgerError> {
    let text =
        std::str::from_utf8(reply).map_err(|_| LedgerError("ledger reply not UTF-8".into()))?;
    let mut parts = text.splitn(3, '|');
    let (fm, lm, flag) = match (parts.next(), parts.next(), parts.next()) {
        (Some(f), Some(l), Some(x)) => (f.as_bytes(), l.as_bytes(), x),
        _ => return Err(LedgerError(format!("unexpected ledger reply {text:?}"))),
    };
    Ok(Go {
        stale_fields: e
            .fields
            .iter()
            .zip(fm.iter())
            .filter(|(_, m)| **m == b'0')
            .map(|((n, _), _)| n.clone())
            .collect(),
        stale_lists: e
            .lists
            .iter()
            .zip(lm.iter())
            .filter(|(_, m)| **m == b'0')
            .map(|(l, _)| *l)
            .collect(),
        superseded: flag == "X",
        signup_blocked: flag == "B",
    })
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
        let older = [("default", "a@x.co", at(1_000, &["first_name", "last_name"]))];
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
                assert_eq!(
                    vb,
                    vec![go(&["first_name"])],
                    "B's last_name (t2) beats A's t1"
                );
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

    fn ev<'a>(email: &'a str, kind: Kind, t: i64, lists: &'a [uuid::Uuid]) -> Event<'a> {
        let fields = match kind {
            Kind::Upsert { .. } => at(t, &["first_name"]),
            _ => Vec::new(),
        };
        Event {
            account: "default",
            email,
            kind,
            occurred_at: t,
            fields,
            lists,
        }
    }

    async fn one(l: &Ledger, e: Event<'_>) -> Go {
        let owner = uuid::Uuid::new_v4().to_string();
        let out = l
            .claim_events(&owner, std::slice::from_ref(&e))
            .await
            .unwrap();
        l.release(&owner, &[(e.account, e.email)]).await.unwrap();
        match out.into_iter().next().unwrap() {
            Outcome::Go(g) => g,
            Outcome::Busy => panic!("busy"),
        }
    }

    /// Issue 15: an upsert older than a known unsubscribe never re-subscribes (its fields still
    /// go); one newer does; an unsubscribe older than a newer sign-up is moot.
    #[tokio::test]
    async fn an_explicit_upsert_older_than_an_opt_out_is_blocked_from_sign_up() {
        let l = ledger();
        let explicit = Kind::Upsert { explicit: true };
        assert!(
            !one(&l, ev("a@x.co", Kind::Unsubscribe, 2_000, &[]))
                .await
                .superseded
        );
        let old = one(&l, ev("a@x.co", explicit, 1_000, &[])).await;
        assert!(old.signup_blocked && !old.superseded && old.stale_fields.is_empty());
        let new = one(&l, ev("a@x.co", explicit, 3_000, &[])).await;
        assert!(!new.signup_blocked);
        // The sign-up at 3,000 is newer than an unsubscribe at 2,500 arriving late.
        assert!(
            one(&l, ev("a@x.co", Kind::Unsubscribe, 2_500, &[]))
                .await
                .superseded
        );
        // CC's feed: an opt-out at 4,000 blocks sign-ups from before it.
        l.record_optout("default", "a@x.co", 4_000).await.unwrap();
        assert!(
            one(&l, ev("a@x.co", explicit, 3_500, &[]))
                .await
                .signup_blocked
        );
        assert!(
            !one(&l, ev("a@x.co", explicit, 4_500, &[]))
                .await
                .signup_blocked
        );
        l.forget_all().await.unwrap();
    }

    #[tokio::test]
    async fn deletes_and_list_removals_are_ordered_against_upserts() {
        let l = ledger();
        let up = Kind::Upsert { explicit: false };
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        // Delete at 2,000: an upsert from before is superseded whole, one after goes.
        assert!(
            !one(&l, ev("d@x.co", Kind::Delete, 2_000, &[]))
                .await
                .superseded
        );
        assert!(one(&l, ev("d@x.co", up, 1_000, &[a])).await.superseded);
        let after = one(&l, ev("d@x.co", up, 3_000, &[a])).await;
        assert!(!after.superseded && after.stale_fields.is_empty());
        // A delete older than that upsert is moot.
        assert!(
            one(&l, ev("d@x.co", Kind::Delete, 2_500, &[]))
                .await
                .superseded
        );
        // A floor (unsubscribe of a contact CC lacks) acts like a delete for older upserts.
        l.record_floor("default", "f@x.co", 5_000).await.unwrap();
        assert!(one(&l, ev("f@x.co", up, 4_000, &[])).await.superseded);
        // Lists: removal of a and b at 2,000 after an upsert added a at 1,000 and b at 3,000.
        one(&l, ev("r@x.co", up, 1_000, &[a])).await;
        one(&l, ev("r@x.co", up, 3_000, &[b])).await;
        let rm = one(&l, ev("r@x.co", Kind::RemoveLists, 2_000, &[a, b])).await;
        assert_eq!(rm.stale_lists, vec![b], "b was re-added after the removal");
        // An older upsert naming a does not re-add it; one naming b still does.
        let older = one(&l, ev("r@x.co", up, 1_500, &[a, b])).await;
        assert_eq!(older.stale_lists, vec![a]);
        // Consent facts live in their own key only for emails with consent events.
        // d: fields + consent; f: consent only; r: fields only.
        assert_eq!(l.forget_all().await.unwrap(), 2 + 1 + 1);
    }
}

//! The token set in Redis: one hash per account, written only through Lua compare-and-set scripts.
//!
//! # Key layout (all under `{prefix}` = `settings.redis.key_prefix`)
//!
//! | key | type | content |
//! |---|---|---|
//! | `{prefix}:auth:{{account}}:set` | hash | `gen` (generation, clear), `blob` (the token set: `aes256gcm:` + base64(nonce ‖ ciphertext ‖ tag), or `plain:` + JSON when no key is configured), `dead` + `dead_at` when the connection was declared dead |
//! | `{prefix}:auth:{{account}}:lock` | string, PX lease | the refresh lock holder's owner id (uuid) |
//! | `{prefix}:auth:{{account}}:inflight` | hash | refresh-in-flight marker: `gen` being refreshed, `fp` (refresh-token fingerprint, never the token), `owner`, `started_at` |
//! | `{prefix}:auth:changes` | integer | bumped by every login, import, connect link and logout: replicas poll it (one `GET` a second) to follow a new account within seconds (`store/signals.rs`) |
//! | `{prefix}:connect:{{link id}}:used` | string, EX | a connect link's single-use marker (the account), kept as long as the link or its OAuth state could still come back (`store/signals.rs`) |
//!
//! The account sits in a Redis Cluster hash tag (`{default}`) so an account's keys share a slot and
//! the Lua scripts that touch two of them also work on a cluster.
//!
//! Why a hash with the generation in clear: the compare-and-set must run inside Redis (Lua) and
//! cannot decrypt. The generation is not secret; it is also bound into the ciphertext as AEAD
//! associated data together with the account, so a blob cannot be replayed under another
//! generation or account without failing authentication.
//!
//! Why "dead" lives in the set: one replica that gets `invalid_grant` tells every other replica,
//! so none of them burns another token-endpoint call on the same dead refresh token (no retry
//! storm). A new `auth login` writes generation + 1 without the field, which is the revival signal.

use redis::AsyncCommands;

use crate::redis::{Conn, Redis, RedisConnError};

mod crypto;
mod signals;

use super::tokenset::TokenSet;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Redis unreachable or erroring: transient, retry later.
    #[error("redis: {0}")]
    Redis(String),
    /// The stored set cannot be read with this configuration (wrong or missing encryption key,
    /// corrupt data): re-authorize (`ccsync auth login`) or fix `CCSYNC_TOKEN_ENCRYPTION_KEY`.
    #[error("stored token set unreadable: {0}")]
    Unreadable(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Redis(e.to_string())
    }
}

impl From<RedisConnError> for StoreError {
    fn from(e: RedisConnError) -> Self {
        StoreError::Redis(e.to_string())
    }
}

/// What Redis holds for an account.
#[derive(Debug, Clone)]
pub enum Stored {
    /// No set at all (never logged in, or Redis lost its data).
    Absent,
    /// Declared dead (or logged out) at this generation.
    Dead {
        generation: u64,
        reason: String,
    },
    Live(TokenSet),
}

impl Stored {
    pub fn generation(&self) -> u64 {
        match self {
            Stored::Absent => 0,
            Stored::Dead { generation, .. } => *generation,
            Stored::Live(s) => s.generation,
        }
    }
}

/// The refresh-in-flight marker (DESIGN §3.5). Holds the refresh token's fingerprint, never the
/// token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub generation: u64,
    pub fingerprint: String,
    pub owner: String,
    pub started_at: i64,
}

/// Write `blob` as generation ARGV[2] if the stored generation is ARGV[1] or the set is absent
/// (Redis lost its data: the writer holds the newest set). Clears an in-flight marker that refers
/// to a generation at or below ARGV[1] (it is resolved by this write). Returns 1 when written.
const CAS_WRITE: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'gen')
if cur and tonumber(cur) ~= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'blob', ARGV[3])
local mg = redis.call('HGET', KEYS[2], 'gen')
if mg and tonumber(mg) <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[2]) end
return 1
"#;

/// Write back a set held in memory when Redis has none or an older generation (DESIGN §3:
/// "the highest generation wins"). Returns 1 when written.
const RESTORE: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'gen')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'blob', ARGV[2])
return 1
"#;

/// Declare generation ARGV[1] dead with reason ARGV[2] (only if it is still the current one).
const MARK_DEAD: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'gen')
if not cur or tonumber(cur) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'dead', ARGV[2], 'dead_at', ARGV[3])
return 1
"#;

/// Logout: replace the set by a tombstone at generation + 1 (so no replica "restores" the old set
/// from memory) and drop the marker. Returns the tombstone's generation.
const TOMBSTONE: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
-- %d: an integer string (a Lua number could be formatted in exponent form)
local nxt = string.format('%d', cur + 1)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'gen', nxt, 'dead', ARGV[1], 'dead_at', ARGV[2])
redis.call('DEL', KEYS[2])
return cur + 1
"#;

/// Delete the marker only if it is still the one this owner wrote.
const CLEAR_MARKER: &str = r#"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// The Redis side of the token set. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Redis,
    prefix: String,
    /// AES-256-GCM key; `None` stores the set in clear (`config check` warns).
    key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .field("encrypted", &self.key.is_some())
            .finish()
    }
}

impl Store {
    /// A store on the Redis `settings` name (one server, cluster or Sentinel; see
    /// [`crate::redis`]), whose bounded waits turn a dead Redis into [`StoreError::Redis`]
    /// quickly instead of hanging callers. No connection is made yet.
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Store, StoreError> {
        Ok(Store {
            pool: Redis::from_settings(settings)?,
            prefix: settings.redis.key_prefix.clone(),
            key: settings.token_encryption_key.as_ref().map(|k| k.0),
        })
    }

    /// A store on `redis` under `prefix`, sealing with `key` (`None`: clear text).
    pub fn new(redis: Redis, prefix: &str, key: Option<[u8; 32]>) -> Store {
        Store {
            pool: redis,
            prefix: prefix.to_string(),
            key,
        }
    }

    /// The connector this store draws from (start-up checks, tests).
    pub(crate) fn redis(&self) -> &Redis {
        &self.pool
    }

    pub fn set_key(&self, account: &str) -> String {
        format!("{}:auth:{{{account}}}:set", self.prefix)
    }
    pub(crate) fn lock_key(&self, account: &str) -> String {
        format!("{}:auth:{{{account}}}:lock", self.prefix)
    }
    pub(crate) fn marker_key(&self, account: &str) -> String {
        format!("{}:auth:{{{account}}}:inflight", self.prefix)
    }

    pub(crate) async fn conn(&self) -> Result<Conn, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// The stored generation only (cheap: waiters and the background task poll this).
    pub async fn generation(&self, account: &str) -> Result<Option<u64>, StoreError> {
        let mut c = self.conn().await?;
        let g: Option<u64> = c.hget(self.set_key(account), "gen").await?;
        Ok(g)
    }

    pub async fn load(&self, account: &str) -> Result<Stored, StoreError> {
        let mut c = self.conn().await?;
        let (generation, blob, dead): (Option<u64>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(self.set_key(account))
                .arg("gen")
                .arg("blob")
                .arg("dead")
                .query_async(&mut c)
                .await?;
        let Some(generation) = generation else {
            return Ok(Stored::Absent);
        };
        if let Some(reason) = dead {
            return Ok(Stored::Dead { generation, reason });
        }
        let Some(blob) = blob else {
            return Ok(Stored::Dead {
                generation,
                reason: "token set record has no data".into(),
            });
        };
        Ok(Stored::Live(self.open(account, generation, &blob)?))
    }

    /// Write `set` (whose `generation` must be `expected + 1`) if the stored generation is still
    /// `expected` (or the record is absent). `false`: someone else wrote first — re-read.
    pub async fn compare_and_set(
        &self,
        account: &str,
        expected: u64,
        set: &TokenSet,
    ) -> Result<bool, StoreError> {
        debug_assert!(set.generation > expected);
        let blob = self.seal(account, set)?;
        let mut c = self.conn().await?;
        let n: i64 = redis::Script::new(CAS_WRITE)
            .key(self.set_key(account))
            .key(self.marker_key(account))
            .arg(expected)
            .arg(set.generation)
            .arg(blob)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Write back a set held in memory if Redis has none or an older generation.
    pub async fn restore(&self, account: &str, set: &TokenSet) -> Result<bool, StoreError> {
        let blob = self.seal(account, set)?;
        let mut c = self.conn().await?;
        let n: i64 = redis::Script::new(RESTORE)
            .key(self.set_key(account))
            .arg(set.generation)
            .arg(blob)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    pub async fn mark_dead(
        &self,
        account: &str,
        generation: u64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let n: i64 = redis::Script::new(MARK_DEAD)
            .key(self.set_key(account))
            .arg(generation)
            .arg(reason)
            .arg(crate::clock::now_unix())
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// `auth logout`: a tombstone one generation up. Returns its generation.
    pub async fn tombstone(&self, account: &str, reason: &str) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let g: u64 = redis::Script::new(TOMBSTONE)
            .key(self.set_key(account))
            .key(self.marker_key(account))
            .arg(reason)
            .arg(crate::clock::now_unix())
            .invoke_async(&mut c)
            .await?;
        Ok(g)
    }

    pub async fn write_marker(&self, account: &str, m: &Marker) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let key = self.marker_key(account);
        redis::pipe()
            .atomic()
            .del(&key)
            .hset_multiple(
                &key,
                &[
                    ("gen", m.generation.to_string()),
                    ("fp", m.fingerprint.clone()),
                    ("owner", m.owner.clone()),
                    ("started_at", m.started_at.to_string()),
                ],
            )
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    pub async fn read_marker(&self, account: &str) -> Result<Option<Marker>, StoreError> {
        let mut c = self.conn().await?;
        let (g, fp, owner, started): (Option<u64>, Option<String>, Option<String>, Option<i64>) =
            redis::cmd("HMGET")
                .arg(self.marker_key(account))
                .arg("gen")
                .arg("fp")
                .arg("owner")
                .arg("started_at")
                .query_async(&mut c)
                .await?;
        Ok(g.map(|generation| Marker {
            generation,
            fingerprint: fp.unwrap_or_default(),
            owner: owner.unwrap_or_default(),
            started_at: started.unwrap_or_default(),
        }))
    }

    pub async fn clear_marker(&self, account: &str, owner: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = redis::Script::new(CLEAR_MARKER)
            .key(self.marker_key(account))
            .arg(owner)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Every account with a token-set record under this prefix (live, dead or logged out),
    /// sorted. `SCAN`, not `KEYS`, so a large Redis is not blocked; for `config check`.
    pub async fn accounts(&self) -> Result<Vec<String>, StoreError> {
        // Glob metacharacters in the prefix are escaped so it matches literally.
        let mut pat = String::new();
        for ch in self.prefix.chars() {
            if "*?[]\\".contains(ch) {
                pat.push('\\');
            }
            pat.push(ch);
        }
        pat.push_str(":auth:{*}:set");
        let head = format!("{}:auth:{{", self.prefix);
        // On a cluster the sets lie on every master: the connector scans each.
        let mut out: Vec<String> = self
            .pool
            .keys_matching(&pat)
            .await?
            .into_iter()
            .filter_map(|k| {
                k.strip_prefix(&head)?
                    .strip_suffix("}:set")
                    .map(str::to_owned)
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The raw `blob` field, for tests that check what Redis really holds.
    pub async fn raw_blob(&self, account: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        Ok(c.hget(self.set_key(account), "blob").await?)
    }

    /// Delete every auth key of an account (tests simulate Redis losing its data with this).
    pub async fn wipe(&self, account: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = c
            .del(&[
                self.set_key(account),
                self.lock_key(account),
                self.marker_key(account),
            ])
            .await?;
        Ok(())
    }
}

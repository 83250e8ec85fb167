//! Crash marks: which messages a worker was reading when it died (DESIGN §2 "an outage is not
//! poison"). A Redis room, like `ledger`.
//!
//! A delivery's redelivery count cannot tell poison from bad luck: when a worker dies, every
//! delivery it held comes back with its count raised, though almost none of them caused it
//! (issue 11: 23 SIGKILLs over a 20,000-message backlog dead-lettered 102 valid messages). And
//! since every other give-back is a blameless re-publish (the count starts again), a raised
//! count only ever means "a worker died (or lost the broker) while holding it".
//!
//! So a redelivered message is read under a mark: [`Marks::begin`] counts one unfinished
//! reading of its body in Redis before the worker decodes it, [`Marks::end`] takes it back once
//! the message is decoded. A message that kills the worker as it is read leaves its mark behind,
//! each time; an innocent one is marked for the few microseconds of its decode, so a kill at a
//! random moment almost never lands inside. When a body's unfinished readings reach
//! `worker.max_redeliveries`, the worker dead-letters it unread (`crashes_worker`).
//!
//! Keys: `<prefix>:crash:<sha-256 of the body, 16 bytes hex>`, a counter with a day's TTL (a
//! message that stops killing workers is forgotten).

use std::time::Duration;

use aws_lc_rs::digest;

use crate::config::Settings;

/// How long an unfinished reading is remembered.
pub(crate) const MARK_TTL: Duration = Duration::from_secs(24 * 3600);

/// Redis unavailable: the caller reads the message without a mark (it never blocks on this).
#[derive(Debug, thiserror::Error)]
#[error("crash marks unavailable (Redis): {0}")]
pub(crate) struct MarkError(String);

pub(crate) struct Marks {
    pool: crate::redis::Redis,
    prefix: String,
}

const BEGIN: &str = r#"
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n - 1
"#;

const END: &str = r#"
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
"#;

impl Marks {
    pub(crate) fn connect(settings: &Settings) -> Result<Marks, MarkError> {
        let pool =
            crate::redis::Redis::from_settings(settings).map_err(|e| MarkError(e.to_string()))?;
        Ok(Marks {
            pool,
            prefix: format!("{}:crash", settings.redis.key_prefix),
        })
    }

    fn key(&self, body: &[u8]) -> String {
        let d = digest::digest(&digest::SHA256, body);
        let hex: String = d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{}:{hex}", self.prefix)
    }

    /// Mark one reading of `body` as started; returns how many earlier readings never finished
    /// (a worker died during them).
    pub(crate) async fn begin(&self, body: &[u8]) -> Result<u32, MarkError> {
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| MarkError(e.to_string()))?;
        let n: i64 = redis::Script::new(BEGIN)
            .key(self.key(body))
            .arg(MARK_TTL.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(|e| MarkError(e.to_string()))?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    /// The reading of `body` finished (decoded, or dead-lettered for a reason of its own).
    pub(crate) async fn end(&self, body: &[u8]) -> Result<(), MarkError> {
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| MarkError(e.to_string()))?;
        let _: i64 = redis::Script::new(END)
            .key(self.key(body))
            .invoke_async(&mut c)
            .await
            .map_err(|e| MarkError(e.to_string()))?;
        Ok(())
    }

    /// Forget a body's marks (after it was dead-lettered as poison).
    pub(crate) async fn forget(&self, body: &[u8]) -> Result<(), MarkError> {
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| MarkError(e.to_string()))?;
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(body))
            .query_async(&mut c)
            .await
            .map_err(|e| MarkError(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks() -> Marks {
        let prefix = format!("test-{}", uuid::Uuid::new_v4());
        let s = Settings::from_pairs([("CCSYNC_REDIS__KEY_PREFIX", prefix.as_str())]).unwrap();
        Marks::connect(&s).unwrap()
    }

    #[tokio::test]
    async fn unfinished_readings_add_up_and_finished_ones_leave_nothing() {
        let m = marks();
        let (poison, fine) = (b"poison".as_slice(), b"fine".as_slice());
        // A reading that finishes leaves no mark, however often it happens.
        for _ in 0..3 {
            assert_eq!(m.begin(fine).await.unwrap(), 0);
            m.end(fine).await.unwrap();
        }
        // Readings that never finish (the worker died) add up, per body.
        assert_eq!(m.begin(poison).await.unwrap(), 0);
        assert_eq!(m.begin(poison).await.unwrap(), 1);
        assert_eq!(m.begin(poison).await.unwrap(), 2);
        assert_eq!(m.begin(fine).await.unwrap(), 0);
        m.forget(poison).await.unwrap();
        assert_eq!(m.begin(poison).await.unwrap(), 0);
        m.forget(poison).await.unwrap();
        m.end(fine).await.unwrap();
    }
}

//! Claims: what an event may send ([`Ledger::claim_events`]), the consent facts the opt-out
//! feed and unsubscribes raise, and the in-flight leases (release, renew).

use std::time::Duration;

use super::rules::{CLAIM, LET_GO, RAISE};
use super::{CONSENT_TTL, LEDGER_TTL, Ledger, LedgerError};

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

impl Ledger {
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
    pub(crate) async fn claim_events(
        &self,
        owner: &str,
        items: &[Event<'_>],
    ) -> Result<Vec<Outcome>, LedgerError> {
        let mut out: Vec<Option<Outcome>> = vec![None; items.len()];
        let mut conn = self.conn().await?;
        let script = redis::Script::new(CLAIM);
        let hashes: Vec<String> = items
            .iter()
            .map(|e| Self::hash(e.account, e.email))
            .collect();
        for group in self.groups(&hashes) {
            let chunk: Vec<&Event> = group.iter().map(|&i| &items[i]).collect();
            let mut inv = script.prepare_invoke();
            // A group's emails share one tag on a cluster, so one liveness key serves them.
            let live = self.live_prefix(&hashes[group[0]]);
            inv.key(format!("{live}{owner}"));
            for &i in &group {
                let h = &hashes[i];
                inv.key(self.key("f", h));
                inv.key(self.key("c", h));
            }
            inv.arg(owner)
                .arg(LEDGER_TTL.as_millis() as u64)
                .arg(self.lease.as_millis() as u64)
                .arg(CONSENT_TTL.as_millis() as u64)
                .arg(&live);
            for e in &chunk {
                inv.arg(e.kind.code())
                    .arg(e.occurred_at)
                    .arg(e.fields.len());
                for (name, _) in &e.fields {
                    inv.arg(name.as_str());
                }
                for (_, t) in &e.fields {
                    inv.arg(*t);
                }
                inv.arg(e.lists.len());
                for l in e.lists {
                    inv.arg(
                        l.hyphenated()
                            .encode_lower(&mut uuid::Uuid::encode_buffer())
                            as &str,
                    );
                }
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
    pub(crate) async fn record_optout(
        &self,
        account: &str,
        email: &str,
        at_ms: i64,
    ) -> Result<(), LedgerError> {
        self.raise(account, email, "out", at_ms).await
    }

    /// Nothing older than `at_ms` may bring `email` back into CC (an unsubscribe found no contact
    /// in CC: an older import must not create it with implicit permission).
    pub(crate) async fn record_floor(
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
        let mut conn = self.conn().await?;
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

    async fn conn(&self) -> Result<crate::redis::Conn, LedgerError> {
        self.pool
            .get()
            .await
            .map_err(|e| LedgerError(e.to_string()))
    }

    /// End `owner`'s claim: every email it holds on the tags of `items` (on one server: every
    /// email it holds) is free again, in one `DEL` of its liveness key (one per tag on a
    /// cluster), however many emails the import carried. The `!fly` fields left behind name an
    /// owner without a liveness key, which the next claim treats as free. An owner's claim ends
    /// once: the sender claims each round of a batch under a new owner.
    pub async fn release(&self, owner: &str, items: &[(&str, &str)]) -> Result<(), LedgerError> {
        self.on_live_keys("DEL", owner, items, None).await
    }

    /// Let go of these emails only, while `owner` keeps the rest of its claim (the entries a
    /// newer event made moot, settled without a call while the others are sent).
    pub async fn let_go(&self, owner: &str, items: &[(&str, &str)]) -> Result<(), LedgerError> {
        let mut conn = self.conn().await?;
        let script = redis::Script::new(LET_GO);
        let hashes: Vec<String> = items.iter().map(|(a, e)| Self::hash(a, e)).collect();
        for group in self.groups(&hashes) {
            let mut inv = script.prepare_invoke();
            for i in group {
                inv.key(self.key("f", &hashes[i]));
            }
            inv.arg(owner);
            let _: i64 = inv
                .invoke_async(&mut conn)
                .await
                .map_err(|e| LedgerError(e.to_string()))?;
        }
        Ok(())
    }

    /// Extend `owner`'s claim by another lease (a `PEXPIRE` of its liveness key, one per tag on
    /// a cluster; a key already expired stays gone: that claim is lost). The sender calls it
    /// every third of the lease while its import is in flight, and while it follows an import
    /// whose deliveries were requeued (`pipeline::sender`).
    pub(crate) async fn renew(
        &self,
        owner: &str,
        items: &[(&str, &str)],
    ) -> Result<(), LedgerError> {
        self.on_live_keys("PEXPIRE", owner, items, Some(self.lease))
            .await
    }

    async fn on_live_keys(
        &self,
        command: &str,
        owner: &str,
        items: &[(&str, &str)],
        lease: Option<Duration>,
    ) -> Result<(), LedgerError> {
        let mut conn = self.conn().await?;
        let hashes: Vec<String> = if self.cluster {
            items.iter().map(|(a, e)| Self::hash(a, e)).collect()
        } else {
            Vec::new()
        };
        // One command per key: on a cluster each key has a slot of its own.
        for key in self.live_keys(owner, &hashes) {
            let mut cmd = redis::cmd(command);
            cmd.arg(&key);
            if let Some(l) = lease {
                cmd.arg(l.as_millis() as u64);
            }
            let _: i64 = cmd
                .query_async(&mut conn)
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

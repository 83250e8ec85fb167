//! What the feed publishes and where its cursor stands: the `contact.unsubscribed` event of one
//! opt-out, and the [`Position`] of a poll (see the module docs of [`super`]).

use std::collections::HashSet;

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ROUTING_KEY;
use crate::cc::api::OptOut;
use crate::ledger::{FeedCursor, FeedStore};

/// The `contact.unsubscribed` event for one opt-out: its id and JSON body (DESIGN §5.1b). The id
/// is derived from account, address (lower-cased) and opt-out time, so the same opt-out always
/// carries the same id, however often it is published.
pub(crate) fn event(account: &str, o: &OptOut, at: OffsetDateTime) -> (String, Vec<u8>) {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!(
            "contact.unsubscribed\n{account}\n{}\n{}",
            o.email.to_lowercase(),
            at.unix_timestamp_nanos()
        )
        .as_bytes(),
    );
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    let id = uuid::Builder::from_custom_bytes(b).into_uuid().to_string();
    let body = json!({
        "type": ROUTING_KEY,
        "version": 1,
        "id": id,
        "occurred_at": o.opt_out_date,
        "account": account,
        "contact": {"email": o.email},
        "source": "constant_contact",
        "opt_out_source": o.source,
        "reason": o.reason,
    });
    (id, serde_json::to_vec(&body).expect("serializes"))
}

/// Where one poll stands: the newest opt-out date published so far (starting at the cursor) and
/// the addresses published with exactly that date; pure, so the tie rules are unit-tested.
#[derive(Debug, Clone)]
pub(crate) struct Position {
    /// The newest opt-out time published (or the cursor's).
    pub newest: OffsetDateTime,
    /// That time as CC wrote it (sent back as `optout_after`).
    raw: String,
    /// [`FeedStore::tie`] of the addresses published with exactly `newest`.
    ties: HashSet<String>,
    /// The cursor's time and ties, which this poll must not publish again.
    start: (OffsetDateTime, HashSet<String>),
    /// (tie, time) of everything this poll published: pages may repeat a contact.
    seen: HashSet<(String, i128)>,
}

impl Position {
    /// `None` when the cursor's time is not RFC 3339.
    pub(crate) fn new(c: &FeedCursor) -> Option<Position> {
        let at = OffsetDateTime::parse(&c.at, &Rfc3339).ok()?;
        let ties: HashSet<String> = c.ties.iter().cloned().collect();
        Some(Position {
            newest: at,
            raw: c.at.clone(),
            ties: ties.clone(),
            start: (at, ties),
            seen: HashSet::new(),
        })
    }

    /// The opt-outs of a page to publish, with their parsed times: not published by an earlier
    /// poll (at the cursor's exact date and among its ties) nor earlier in this one. An opt-out
    /// whose date CC wrote unreadably cannot be placed and is skipped with a warning.
    pub(crate) fn fresh(&self, account: &str, page: Vec<OptOut>) -> Vec<(OptOut, OffsetDateTime)> {
        let mut out = Vec::new();
        let mut in_page = HashSet::new();
        for o in page {
            let Ok(at) = OffsetDateTime::parse(&o.opt_out_date, &Rfc3339) else {
                tracing::warn!(account, date = %o.opt_out_date, "opt-out feed: CC returned an opt-out date that is not RFC 3339; skipped");
                continue;
            };
            let tie = FeedStore::tie(account, &o.email);
            if at == self.start.0 && self.start.1.contains(&tie) {
                continue;
            }
            let key = (tie, at.unix_timestamp_nanos());
            if self.seen.contains(&key) || !in_page.insert(key) {
                continue;
            }
            out.push((o, at));
        }
        out
    }

    /// `o`, dated `at`, was published (confirmed). The cursor keeps CC's spelling of the newest
    /// date: sent back as `optout_after`, it has exactly the precision CC compares with.
    pub(crate) fn note(&mut self, account: &str, o: &OptOut, at: OffsetDateTime) {
        let tie = FeedStore::tie(account, &o.email);
        self.seen.insert((tie.clone(), at.unix_timestamp_nanos()));
        if at > self.newest {
            self.newest = at;
            self.raw = o.opt_out_date.clone();
            self.ties.clear();
        }
        if at == self.newest {
            self.ties.insert(tie);
        }
    }

    /// The cursor after a complete poll that started at `polled_ms`.
    pub(crate) fn cursor(&self, polled_ms: i64) -> FeedCursor {
        let mut ties: Vec<String> = self.ties.iter().cloned().collect();
        ties.sort();
        FeedCursor {
            at: self.raw.clone(),
            ties,
            polled_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn o(email: &str, at: &str) -> OptOut {
        OptOut {
            email: email.into(),
            opt_out_date: at.into(),
            source: Some("Contact".into()),
            reason: None,
        }
    }

    const T0: &str = "2026-11-23T10:00:00Z";
    const T1: &str = "2026-11-23T10:00:01Z";

    /// One poll: publish what [`Position::fresh`] returns, note it, return the next cursor.
    fn poll(c: &FeedCursor, pages: Vec<Vec<OptOut>>) -> (Vec<String>, FeedCursor) {
        let mut pos = Position::new(c).unwrap();
        let mut out = Vec::new();
        for page in pages {
            for (x, at) in pos.fresh("default", page) {
                out.push(x.email.clone());
                pos.note("default", &x, at);
            }
        }
        (out, pos.cursor(1))
    }

    fn start(at: &str) -> FeedCursor {
        FeedCursor {
            at: at.into(),
            ties: vec![],
            polled_ms: 0,
        }
    }

    #[test]
    fn the_cursor_moves_to_the_newest_date_of_the_whole_poll_whatever_the_page_order() {
        // CC lists in no documented order: the newest date may come on the first page.
        let (out, c) = poll(
            &start(T0),
            vec![
                vec![o("z@x.co", T1)],
                vec![o("a@x.co", "2026-11-23T10:00:00.500Z")],
            ],
        );
        assert_eq!(out, ["z@x.co", "a@x.co"]);
        assert_eq!(c.at, T1, "CC's spelling of the newest date");
        assert_eq!(c.ties, vec![FeedStore::tie("default", "z@x.co")]);
    }

    #[test]
    fn equal_dates_at_the_cursor_are_neither_lost_nor_published_again() {
        let (out, c) = poll(&start(T0), vec![vec![o("a@x.co", T1), o("b@x.co", T1)]]);
        assert_eq!(out.len(), 2);
        assert_eq!(c.ties.len(), 2);
        // CC compares coarser than it prints (or returns equal dates again): the two come back
        // with a third address at the same date, which was not visible before.
        let (out, c2) = poll(
            &c,
            vec![vec![o("a@x.co", T1), o("B@x.co", T1), o("c@x.co", T1)]],
        );
        assert_eq!(out, ["c@x.co"], "only the new one, case-insensitively");
        assert_eq!(c2.at, T1);
        assert_eq!(c2.ties.len(), 3);
        // Nothing new: nothing published, the cursor stays (no endless repeat).
        let (out, c3) = poll(&c2, vec![vec![o("a@x.co", T1), o("c@x.co", T1)]]);
        assert!(out.is_empty());
        assert_eq!((c3.at.as_str(), c3.ties.len()), (T1, 3));
    }

    #[test]
    fn an_address_that_opts_out_again_later_is_published_again() {
        let (_, c) = poll(&start(T0), vec![vec![o("a@x.co", T1)]]);
        let later = "2026-11-24T08:00:00Z";
        let (out, c2) = poll(&c, vec![vec![o("a@x.co", later)]]);
        assert_eq!(out, ["a@x.co"]);
        assert_eq!(c2.at, later);
    }

    #[test]
    fn pages_that_repeat_a_contact_publish_it_once() {
        let (out, _) = poll(
            &start(T0),
            vec![
                vec![o("a@x.co", T1), o("a@x.co", T1)],
                vec![o("a@x.co", T1)],
            ],
        );
        assert_eq!(out, ["a@x.co"]);
    }

    #[test]
    fn an_unreadable_date_is_skipped_and_does_not_move_the_cursor() {
        let (out, c) = poll(&start(T0), vec![vec![o("a@x.co", "yesterday")]]);
        assert!(out.is_empty());
        assert_eq!(c, start(T0).clone_with_polled(1));
    }

    #[test]
    fn the_event_id_is_the_same_for_the_same_opt_out_and_differs_otherwise() {
        let at = OffsetDateTime::parse(T1, &Rfc3339).unwrap();
        let (id, body) = event("default", &o("Ada@x.co", T1), at);
        assert_eq!(id, event("default", &o("ada@x.co", T1), at).0);
        assert_ne!(id, event("acme", &o("ada@x.co", T1), at).0);
        let later = at + Duration::from_secs(1);
        assert_ne!(id, event("default", &o("ada@x.co", T1), later).0);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "contact.unsubscribed");
        assert_eq!(v["version"], 1);
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["occurred_at"], T1);
        assert_eq!(v["account"], "default");
        assert_eq!(v["contact"]["email"], "Ada@x.co");
        assert_eq!(v["source"], "constant_contact");
        assert_eq!(v["opt_out_source"], "Contact");
        assert!(v["reason"].is_null());
        assert!(uuid::Uuid::parse_str(&id).is_ok());
    }

    impl FeedCursor {
        fn clone_with_polled(&self, polled_ms: i64) -> FeedCursor {
            FeedCursor {
                polled_ms,
                ..self.clone()
            }
        }
    }
}

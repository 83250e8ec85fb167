//! `ccsync publish FILE`: NDJSON messages or a CSV of contacts into the queue, the way upstream
//! systems publish (default exchange, routing key = queue, persistent, `application/json`), with
//! publisher confirms.
//!
//! Streams: the file is read line by line (CSV record by record), and at most
//! [`CONFIRM_WINDOW`] publishes wait for their confirms at once, so a 1,000,000-row file runs in
//! constant memory. Every row is validated locally with the worker's own rules
//! ([`crate::contact::decode`]) first; invalid rows are skipped and reported (line number and
//! reason, never the email), not published.
//!
//! CSV (DESIGN §5.1): a header row with `email`, `first_name`, `last_name`, `job_title`,
//! `company_name`, `phone`, `birthday_month`, `birthday_day`, `anniversary`, `street`, `city`,
//! `state`, `postal_code`, `country`, `list_ids` (separated by `;`), `consent`, and `cf:NAME`
//! columns for custom fields. Each row becomes a `contact.upsert` message with a fresh UUIDv7 id
//! and `occurred_at` = now. An optional `action` column names another type per row
//! (`upsert`, `unsubscribe`, `remove_lists`, `delete`: `contact.<action>`, issue 15), with an
//! optional `reason` column for unsubscribes; `list_ids` are the lists a `remove_lists` row
//! leaves. NDJSON lines may be any message type the worker reads.

use std::collections::VecDeque;
use std::io::BufRead;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::queue::{Publisher, QueueError};

/// Publishes awaiting their confirm at once.
pub const CONFIRM_WINDOW: usize = 1_000;

/// A publish waiting for the broker's confirm.
type Confirm = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), QueueError>> + Send>>;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    /// From the file name: `.csv` is CSV, anything else NDJSON.
    pub(crate) fn detect(path: &str) -> Format {
        if path.to_ascii_lowercase().ends_with(".csv") {
            Format::Csv
        } else {
            Format::Ndjson
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot read the input: {0}")]
    Read(String),
    #[error("CSV header: {0}")]
    Header(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What happened, for the final summary.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub published: u64,
    pub skipped: u64,
    /// The first few skipped rows: (line number, reason code, detail).
    pub first_skips: Vec<(u64, String, String)>,
}

/// Options for one run.
pub struct Options<'a> {
    pub queue: &'a str,
    pub account: &'a str,
    /// The lists a message naming none goes to, per account (as the worker checks it).
    pub default_lists: &'a crate::contact::DefaultLists,
    /// Called after each row with (rows done, bytes read) for progress display.
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
}

/// Publish every valid row of `input`.
pub async fn publish(
    publisher: &Publisher,
    input: Box<dyn BufRead + Send>,
    format: Format,
    opts: &Options<'_>,
) -> Result<Summary, PublishError> {
    let mut summary = Summary::default();
    let mut pending = VecDeque::new();
    let mut bytes = 0u64;
    let mut rows = 0u64;
    let handle = |line_no: u64, msg: Result<Vec<u8>, (String, String)>, summary: &mut Summary| {
        let body = match msg {
            Ok(b) => b,
            Err((code, detail)) => {
                summary.skipped += 1;
                if summary.first_skips.len() < 20 {
                    summary.first_skips.push((line_no, code, detail));
                }
                return None;
            }
        };
        match opts.default_lists.decode(&body) {
            Ok(_) => Some(body),
            Err(r) => {
                summary.skipped += 1;
                if summary.first_skips.len() < 20 {
                    summary
                        .first_skips
                        .push((line_no, r.code.to_string(), r.detail));
                }
                None
            }
        }
    };
    match format {
        Format::Ndjson => {
            for (i, line) in input.lines().enumerate() {
                let line = line.map_err(|e| PublishError::Read(e.to_string()))?;
                bytes += line.len() as u64 + 1;
                if line.trim().is_empty() {
                    continue;
                }
                rows += 1;
                if let Some(body) = handle(i as u64 + 1, Ok(line.into_bytes()), &mut summary) {
                    send(publisher, opts.queue, body, &mut pending, &mut summary).await?;
                }
                (opts.progress)(rows, bytes);
            }
        }
        Format::Csv => {
            let mut rdr = csv::ReaderBuilder::new().flexible(false).from_reader(input);
            let headers = rdr
                .headers()
                .map_err(|e| PublishError::Header(e.to_string()))?
                .clone();
            check_headers(&headers)?;
            for (i, rec) in rdr.records().enumerate() {
                let line_no = i as u64 + 2;
                let msg = match rec {
                    Ok(r) => {
                        bytes = r.position().map_or(bytes, |p| p.byte());
                        Ok(csv_message(&headers, &r, opts.account))
                    }
                    Err(e) => Err(("invalid_csv".to_string(), e.to_string())),
                };
                rows += 1;
                if let Some(body) = handle(line_no, msg, &mut summary) {
                    send(publisher, opts.queue, body, &mut pending, &mut summary).await?;
                }
                (opts.progress)(rows, bytes);
            }
        }
    }
    while let Some(c) = pending.pop_front() {
        c.await?;
    }
    Ok(summary)
}

async fn send(
    publisher: &Publisher,
    queue: &str,
    body: Vec<u8>,
    pending: &mut VecDeque<Confirm>,
    summary: &mut Summary,
) -> Result<(), QueueError> {
    let confirm = publisher.send("", queue, &body, Default::default()).await?;
    pending.push_back(Box::pin(confirm));
    summary.published += 1;
    if pending.len() >= CONFIRM_WINDOW
        && let Some(c) = pending.pop_front()
    {
        c.await?;
    }
    Ok(())
}

const KNOWN: &[&str] = &[
    "email",
    "first_name",
    "last_name",
    "job_title",
    "company_name",
    "phone",
    "birthday_month",
    "birthday_day",
    "anniversary",
    "street",
    "city",
    "state",
    "postal_code",
    "country",
    "list_ids",
    "consent",
    "action",
    "reason",
];

fn check_headers(h: &csv::StringRecord) -> Result<(), PublishError> {
    if !h.iter().any(|c| c == "email") {
        return Err(PublishError::Header("no `email` column".into()));
    }
    for c in h.iter() {
        if !KNOWN.contains(&c) && !c.starts_with("cf:") {
            return Err(PublishError::Header(format!(
                "unknown column `{c}` (known: {}, and cf:NAME)",
                KNOWN.join(", ")
            )));
        }
    }
    Ok(())
}

/// One CSV record as a `contact.upsert` message body.
pub(crate) fn csv_message(h: &csv::StringRecord, r: &csv::StringRecord, account: &str) -> Vec<u8> {
    let mut contact = Map::new();
    let mut address = Map::new();
    let mut custom = Map::new();
    let mut consent = "implicit".to_string();
    let mut kind = "contact.upsert".to_string();
    let mut reason = None;
    for (col, val) in h.iter().zip(r.iter()) {
        if val.is_empty() {
            continue;
        }
        match col {
            "birthday_month" | "birthday_day" => {
                // Keep a non-number as text: validation then reports it as a wrong type.
                let v = val
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(val));
                contact.insert(col.into(), v);
            }
            "street" | "city" | "state" | "postal_code" | "country" => {
                address.insert(col.into(), Value::from(val));
            }
            "list_ids" => {
                let ids: Vec<Value> = val
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Value::from)
                    .collect();
                contact.insert("list_ids".into(), Value::Array(ids));
            }
            "consent" => consent = val.to_string(),
            // An unknown action becomes an unknown type: validation reports the row.
            "action" => kind = format!("contact.{}", val.trim()),
            "reason" => reason = Some(val.to_string()),
            c if c.starts_with("cf:") => {
                custom.insert(c[3..].to_string(), Value::from(val));
            }
            c => {
                contact.insert(c.into(), Value::from(val));
            }
        }
    }
    if !address.is_empty() {
        contact.insert("address".into(), Value::Object(address));
    }
    if !custom.is_empty() {
        contact.insert("custom_fields".into(), Value::Object(custom));
    }
    let now = crate::clock::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut m = json!({
        "type": kind,
        "version": 1,
        "id": Uuid::now_v7().to_string(),
        "occurred_at": now,
        "account": account,
        "consent": consent,
        "contact": contact,
    });
    if let Some(r) = reason {
        m["reason"] = Value::from(r);
    }
    serde_json::to_vec(&m).expect("JSON of strings serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact;

    #[test]
    fn csv_rows_become_valid_messages() {
        let data = "email,first_name,postal_code,list_ids,cf:tier,birthday_month,birthday_day\n\
                    ada@example.com,Ada,N1,c2a2b8b4-0000-4000-8000-000000000001;c2a2b8b4-0000-4000-8000-000000000002,gold,12,10\n";
        let mut rdr = csv::Reader::from_reader(data.as_bytes());
        let h = rdr.headers().unwrap().clone();
        let r = rdr.records().next().unwrap().unwrap();
        let body = csv_message(&h, &r, "default");
        let c = contact::decode(&body, &[]).unwrap();
        assert_eq!(c.email, "ada@example.com");
        assert_eq!(c.fields.address().postal_code.as_deref(), Some("N1"));
        assert_eq!(c.fields.custom_fields["tier"], "gold");
        assert_eq!(c.list_ids.len(), 2);
        assert_eq!(c.fields.birthday, Some((12, 10)));
    }

    /// Issue 15: an `action` column names the message type per row.
    #[test]
    fn csv_action_column_names_the_message_type() {
        let data = "email,action,reason,list_ids\n\
                    a@example.com,unsubscribe,moved away,\n\
                    b@example.com,remove_lists,,c2a2b8b4-0000-4000-8000-000000000001\n\
                    c@example.com,delete,,\n\
                    d@example.com,,,\n\
                    e@example.com,merge,,\n";
        let mut rdr = csv::Reader::from_reader(data.as_bytes());
        let h = rdr.headers().unwrap().clone();
        let decoded: Vec<_> = rdr
            .records()
            .map(|r| {
                contact::decode(
                    &csv_message(&h, &r.unwrap(), "default"),
                    &[uuid::Uuid::nil()],
                )
            })
            .collect();
        let action = |i: usize| decoded[i].as_ref().map(|c| c.action).ok();
        assert_eq!(action(0), Some(contact::Action::Unsubscribe));
        let a = decoded[0].as_ref().unwrap();
        assert_eq!(a.reason.as_deref().map(|r| &**r), Some("moved away"));
        assert_eq!(action(1), Some(contact::Action::RemoveLists));
        assert_eq!(action(2), Some(contact::Action::Delete));
        assert_eq!(action(3), Some(contact::Action::Upsert));
        assert_eq!(decoded[4].as_ref().unwrap_err().code, "unknown_type");
    }

    #[test]
    fn unknown_columns_are_refused() {
        let h = csv::StringRecord::from(vec!["email", "favourite_colour"]);
        assert!(check_headers(&h).is_err());
        let h = csv::StringRecord::from(vec!["first_name"]);
        assert!(check_headers(&h).is_err());
    }
}

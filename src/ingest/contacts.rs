//! `POST /v1/contacts` bodies, pure: one message (JSON) or many (NDJSON), each validated by the
//! worker's own decoder ([`crate::contact::decode`]), all or nothing.

use serde::Serialize;

use crate::contact::DefaultLists;

/// How the body is framed, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `application/json` (or no content type): the body is one message.
    Json,
    /// `application/x-ndjson` (also `application/ndjson`, `application/jsonl`): one message per
    /// line; blank lines are ignored.
    Ndjson,
}

impl Framing {
    /// `None` for a content type this endpoint does not read (answered 415).
    pub(crate) fn from_content_type(ct: Option<&str>) -> Option<Framing> {
        let Some(ct) = ct else {
            return Some(Framing::Json);
        };
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "" | "application/json" => Some(Framing::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Some(Framing::Ndjson),
            _ => None,
        }
    }
}

/// One invalid line, as the 400 reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct LineError {
    /// 1-based line of the body (1 for a JSON body).
    pub line: usize,
    /// The decoder's reason code (the worker's dead-letter reason for the same message).
    pub code: crate::contact::Reason,
    pub detail: String,
}

/// Why a body is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Some lines are invalid: nothing is published.
    Invalid(Vec<LineError>),
    /// More messages than `ingest.max_lines`.
    TooManyLines { lines: usize, max: usize },
    /// No message at all.
    Empty,
}

/// Messages ready to publish: each body exactly as the sender wrote it, with its id.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub ids: Vec<String>,
    pub bodies: Vec<Vec<u8>>,
}

/// Split and validate a body. Lines are checked with `default_lists`, as the worker would.
pub(crate) fn parse(
    body: &[u8],
    framing: Framing,
    default_lists: &DefaultLists,
    max_lines: usize,
) -> Result<Batch, Refused> {
    let lines: Vec<(usize, &[u8])> = match framing {
        Framing::Json => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(Refused::Empty);
            }
            vec![(1, body)]
        }
        Framing::Ndjson => body
            .split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .collect(),
    };
    if lines.is_empty() {
        return Err(Refused::Empty);
    }
    if lines.len() > max_lines {
        return Err(Refused::TooManyLines {
            lines: lines.len(),
            max: max_lines,
        });
    }
    let mut batch = Batch::default();
    let mut errors = Vec::new();
    for (line, bytes) in lines {
        match default_lists.decode(bytes) {
            Ok(c) => {
                batch.ids.push(c.id.to_string());
                batch.bodies.push(bytes.to_vec());
            }
            Err(r) => errors.push(LineError {
                line,
                code: r.code,
                detail: r.detail,
            }),
        }
    }
    if errors.is_empty() {
        Ok(batch)
    } else {
        Err(Refused::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn msg(id: &str, email: &str) -> String {
        format!(
            r#"{{"type":"contact.upsert","version":1,"id":"{id}","occurred_at":"2026-01-01T00:00:00Z","contact":{{"email":"{email}"}}}}"#
        )
    }

    fn lists() -> DefaultLists {
        DefaultLists::global(vec![Uuid::from_u128(1)])
    }

    #[test]
    fn content_types_pick_the_framing() {
        assert_eq!(Framing::from_content_type(None), Some(Framing::Json));
        assert_eq!(
            Framing::from_content_type(Some("application/json; charset=utf-8")),
            Some(Framing::Json)
        );
        assert_eq!(
            Framing::from_content_type(Some("Application/X-NDJSON")),
            Some(Framing::Ndjson)
        );
        assert_eq!(Framing::from_content_type(Some("text/csv")), None);
    }

    #[test]
    fn ndjson_lines_keep_their_bytes_and_ids() {
        let body = format!(
            "{}\r\n\n{}\n",
            msg("a", "a@example.com"),
            msg("b", "b@example.com")
        );
        let b = parse(body.as_bytes(), Framing::Ndjson, &lists(), 10).unwrap();
        assert_eq!(b.ids, ["a", "b"]);
        assert_eq!(b.bodies[0], msg("a", "a@example.com").as_bytes());
        assert_eq!(b.bodies[1], msg("b", "b@example.com").as_bytes());
    }

    #[test]
    fn one_bad_line_refuses_the_batch_and_names_the_line() {
        let body = format!(
            "{}\n{}\nnot json\n",
            msg("a", "a@example.com"),
            msg("b", "nope")
        );
        let Err(Refused::Invalid(e)) = parse(body.as_bytes(), Framing::Ndjson, &lists(), 10) else {
            panic!("refused")
        };
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].line, e[0].code.as_str()), (2, "invalid_email"));
        assert_eq!((e[1].line, e[1].code.as_str()), (3, "invalid_json"));
    }

    #[test]
    fn limits_and_empty_bodies() {
        let body = format!(
            "{}\n{}\n",
            msg("a", "a@example.com"),
            msg("b", "b@example.com")
        );
        assert_eq!(
            parse(body.as_bytes(), Framing::Ndjson, &lists(), 1).unwrap_err(),
            Refused::TooManyLines { lines: 2, max: 1 }
        );
        assert_eq!(
            parse(b" \n", Framing::Ndjson, &lists(), 1).unwrap_err(),
            Refused::Empty
        );
        assert_eq!(
            parse(b"", Framing::Json, &lists(), 1).unwrap_err(),
            Refused::Empty
        );
        // A JSON body with two messages is not NDJSON: refused by the decoder.
        assert!(matches!(
            parse(body.as_bytes(), Framing::Json, &lists(), 10),
            Err(Refused::Invalid(_))
        ));
        // No lists anywhere: refused as the worker would dead-letter it.
        let Err(Refused::Invalid(e)) = parse(
            msg("a", "a@example.com").as_bytes(),
            Framing::Json,
            &DefaultLists::default(),
            10,
        ) else {
            panic!("refused")
        };
        assert_eq!(e[0].code, "no_lists");
    }

    /// Issue 13: each CC account has its own list ids. A message for an account with its own
    /// default lists and none of its own is taken, as the worker takes it; another account
    /// without lists anywhere is still refused.
    #[test]
    fn an_accounts_own_default_lists_count() {
        let mut lists = DefaultLists::default();
        lists
            .accounts
            .insert("shop-b".to_string(), vec![Uuid::from_u128(2)]);
        let for_b =
            msg("a", "a@example.com").replace(r#""contact""#, r#""account":"shop-b","contact""#);
        let b = parse(for_b.as_bytes(), Framing::Json, &lists, 10).unwrap();
        assert_eq!(b.ids, ["a"]);
        let for_c = for_b.replace("shop-b", "shop-c");
        let Err(Refused::Invalid(e)) = parse(for_c.as_bytes(), Framing::Json, &lists, 10) else {
            panic!("refused")
        };
        assert_eq!(e[0].code, "no_lists");
    }
}

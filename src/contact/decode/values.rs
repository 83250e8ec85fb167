//! Single values of a message: the email, text fields within CC's limits, small numbers, CC's
//! date forms, and the rejections that name them.

use super::*;

pub(super) fn parse_email(raw: &str) -> Result<String, Rejection> {
    let e = raw.trim().to_lowercase();
    if e.chars().count() > MAX_EMAIL_CHARS {
        return Err(Rejection::new(
            Reason::EmailTooLong,
            format!(
                "contact.email has {} characters; CC's import and sign-up form accept at most {MAX_EMAIL_CHARS}",
                e.chars().count()
            ),
        ));
    }
    // email_address implements RFC 5322's addr-spec; CC also needs a dotted domain.
    let ok = email_address::EmailAddress::parse_with_options(
        &e,
        email_address::Options::default().without_display_text(),
    )
    .is_ok()
        && e.rsplit_once('@').is_some_and(|(_, d)| {
            d.contains('.') && !d.starts_with('.') && !d.ends_with('.') && !d.starts_with('[')
        });
    if !ok {
        return Err(Rejection::new(
            Reason::InvalidEmail,
            "contact.email is not a valid email address",
        ));
    }
    Ok(e)
}

/// A text field of [`Field`], within its [`Field::max_chars`].
pub(super) fn field_text(
    m: &serde_json::Map<String, Value>,
    field: Field,
) -> Result<Option<Box<str>>, Rejection> {
    text_field(m, field.as_str(), field.max_chars().unwrap_or(usize::MAX))
}

pub(super) fn text_field(
    m: &serde_json::Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<Option<Box<str>>, Rejection> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.chars().count() > max {
                return Err(Rejection::new(
                    Reason::FieldTooLong,
                    format!("contact.{name} is longer than CC's {max} characters"),
                ));
            }
            if s.contains(|ch: char| ch.is_control()) {
                return Err(Rejection::new(
                    Reason::InvalidField,
                    format!("contact.{name} contains control characters"),
                ));
            }
            Ok(Some(s.into()))
        }
        Some(_) => Err(wrong_type(&format!("contact.{name}"), "a string")),
    }
}

pub(super) fn small_int(
    m: &serde_json::Map<String, Value>,
    name: &str,
    lo: u8,
    hi: u8,
) -> Result<Option<u8>, Rejection> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|v| (lo as u64..=hi as u64).contains(v))
            .map(|v| Some(v as u8))
            .ok_or_else(|| {
                Rejection::new(
                    Reason::InvalidField,
                    format!("contact.{name} must be between {lo} and {hi}"),
                )
            }),
        Some(_) => Err(wrong_type(&format!("contact.{name}"), "a number")),
    }
}

/// CC's accepted date shapes: MM/DD/YYYY, M/D/YYYY, YYYY/MM/DD, YYYY/M/D, YYYY-MM-DD, YYYY-M-D,
/// M-D-YYYY (Swagger `anniversary`).
pub(super) fn valid_cc_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split(['/', '-']).collect();
    if parts.len() != 3 || !parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())) {
        return false;
    }
    let n = |p: &str| p.parse::<u32>().ok();
    let (y, m, d) = if parts[0].len() == 4 {
        (n(parts[0]), n(parts[1]), n(parts[2]))
    } else if parts[2].len() == 4 {
        (n(parts[2]), n(parts[0]), n(parts[1]))
    } else {
        return false;
    };
    matches!((y, m, d), (Some(y), Some(m), Some(d)) if (1800..=2200).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d))
}

pub(super) fn missing(field: &str) -> Rejection {
    Rejection::new(Reason::MissingField, format!("{field} is required"))
}

pub(super) fn wrong_type(field: &str, expected: &str) -> Rejection {
    Rejection::new(Reason::WrongType, format!("{field} must be {expected}"))
}

pub(super) fn prefix(section: &'static str) -> impl Fn(Rejection) -> Rejection {
    move |r| Rejection {
        code: r.code,
        detail: r
            .detail
            .replacen("contact.", &format!("contact.{section}."), 1),
    }
}

pub(super) fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

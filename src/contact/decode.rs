//! Decoding a message body into a [`Contact`], with a [`Rejection`] for everything CC would refuse.

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::*;

mod consent;
mod values;

use consent::consent_action;
use values::*;

#[derive(Deserialize)]
struct EnvelopeDto {
    #[serde(rename = "type")]
    kind: Option<Value>,
    version: Option<Value>,
    id: Option<Value>,
    occurred_at: Option<Value>,
    account: Option<Value>,
    consent: Option<Value>,
    reason: Option<Value>,
    contact: Option<Value>,
}

/// The lists a message naming none goes to, per CC account: each account has its own list ids
/// (`[accounts.<name>] default_list_ids`), else the global `CCSYNC_DEFAULT_LIST_IDS`. The
/// worker, `ccsync publish` and `ccsync ingest` check a message against the same ones.
#[derive(Debug, Clone, Default)]
pub struct DefaultLists {
    pub global: Vec<Uuid>,
    pub accounts: std::collections::HashMap<String, Vec<Uuid>>,
}

impl DefaultLists {
    /// The same lists for every account.
    pub fn global(lists: Vec<Uuid>) -> DefaultLists {
        DefaultLists {
            global: lists,
            accounts: Default::default(),
        }
    }

    /// `account`'s own default lists, else the global ones.
    pub fn for_account(&self, account: &str) -> &[Uuid] {
        match self.accounts.get(account) {
            Some(l) if !l.is_empty() => l,
            _ => &self.global,
        }
    }

    /// [`decode_for`] with these lists.
    pub fn decode(&self, body: &[u8]) -> Result<Contact, Rejection> {
        decode_for(body, &|a| self.for_account(a))
    }
}

/// Decode and validate one message body. `default_lists` apply when the message names none.
pub fn decode(body: &[u8], default_lists: &[Uuid]) -> Result<Contact, Rejection> {
    decode_for(body, &|_| default_lists)
}

/// [`decode`] with default lists per CC account (each account has its own list ids):
/// `default_lists(account)` applies when the message names none.
pub fn decode_for<'a>(
    body: &[u8],
    default_lists: &dyn Fn(&str) -> &'a [Uuid],
) -> Result<Contact, Rejection> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(Rejection::new(
            Reason::MessageTooLarge,
            format!(
                "message is {} bytes; at most {MAX_MESSAGE_BYTES} are accepted for one contact",
                body.len()
            ),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        Rejection::new(
            Reason::InvalidJson,
            format!("message is not valid UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    // serde_json refuses nesting deeper than 128 levels, so a deeply nested body is an error here,
    // not a stack overflow.
    let dto: EnvelopeDto = serde_json::from_str(text).map_err(|e| {
        let what = if e.is_data() {
            "message is not a JSON object"
        } else {
            "message is not valid JSON"
        };
        Rejection::new(Reason::InvalidJson, format!("{what}: {e}"))
    })?;

    let action = match dto.kind {
        Some(Value::String(ref t)) if Action::from_type(t).is_some() => {
            Action::from_type(t).expect("checked")
        }
        Some(Value::String(t)) => {
            return Err(Rejection::new(
                Reason::UnknownType,
                format!(
                    "type '{}' is not one of contact.upsert, contact.unsubscribe, contact.remove_lists, contact.delete",
                    truncate(&t, 40)
                ),
            ));
        }
        Some(_) => return Err(wrong_type("type", "a string")),
        None => return Err(missing("type")),
    };
    match dto.version {
        Some(Value::Number(ref n)) if n.as_u64() == Some(1) => {}
        Some(Value::Number(n)) => {
            return Err(Rejection::new(
                Reason::UnsupportedVersion,
                format!("version {n} is not supported (this worker reads version 1)"),
            ));
        }
        Some(_) => return Err(wrong_type("version", "the number 1")),
        None => return Err(missing("version")),
    }
    let id = match dto.id {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => s,
        Some(Value::String(_)) => {
            return Err(Rejection::new(
                Reason::InvalidField,
                "id must be 1 to 200 characters",
            ));
        }
        Some(_) => return Err(wrong_type("id", "a string")),
        None => return Err(missing("id")),
    };
    let occurred_at = match dto.occurred_at {
        Some(Value::String(s)) => OffsetDateTime::parse(&s, &Rfc3339).map_err(|_| {
            Rejection::new(
                Reason::InvalidField,
                "occurred_at is not an RFC 3339 timestamp",
            )
        })?,
        Some(_) => return Err(wrong_type("occurred_at", "an RFC 3339 string")),
        None => return Err(missing("occurred_at")),
    };
    let account = match dto.account {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(s)) if valid_account(&s) => s,
        Some(Value::String(_)) => {
            return Err(Rejection::new(
                Reason::InvalidField,
                "account must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        Some(_) => return Err(wrong_type("account", "a string")),
    };
    let consent = match dto.consent {
        None | Some(Value::Null) => Consent::Implicit,
        Some(Value::String(s)) if s == "implicit" => Consent::Implicit,
        Some(Value::String(s)) if s == "explicit" => Consent::Explicit,
        Some(Value::String(_)) => {
            return Err(Rejection::new(
                Reason::InvalidField,
                "consent must be implicit or explicit",
            ));
        }
        Some(_) => return Err(wrong_type("consent", "a string")),
    };
    let c = match dto.contact {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(wrong_type("contact", "an object")),
        None => return Err(missing("contact")),
    };
    let email = match c.get("email") {
        Some(Value::String(s)) => parse_email(s)?,
        Some(Value::Null) | None => return Err(missing("contact.email")),
        Some(_) => return Err(wrong_type("contact.email", "a string")),
    };
    if action != Action::Upsert {
        return consent_action(action, id, occurred_at, account, email, dto.reason, &c);
    }
    let mut fields = Fields {
        first_name: field_text(&c, Field::FirstName)?,
        last_name: field_text(&c, Field::LastName)?,
        job_title: field_text(&c, Field::JobTitle)?,
        company_name: field_text(&c, Field::CompanyName)?,
        phone: field_text(&c, Field::Phone)?,
        anniversary: field_text(&c, Field::Anniversary)?,
        ..Fields::default()
    };
    if let Some(a) = &fields.anniversary
        && !valid_cc_date(a)
    {
        return Err(Rejection::new(
            Reason::InvalidField,
            "contact.anniversary must be a date such as 2020-06-01 or 06/01/2020",
        ));
    }
    let month = small_int(&c, "birthday_month", 1, 12)?;
    let day = small_int(&c, "birthday_day", 1, 31)?;
    fields.birthday = match (month, day) {
        (Some(m), Some(d)) => Some((m, d)),
        (None, None) => None,
        _ => {
            return Err(Rejection::new(
                Reason::InvalidField,
                "contact.birthday_month and contact.birthday_day must be given together",
            ));
        }
    };
    match c.get("address") {
        None | Some(Value::Null) => {}
        Some(Value::Object(a)) => {
            let address = Address {
                street: field_text(a, Field::Street).map_err(prefix("address"))?,
                city: field_text(a, Field::City).map_err(prefix("address"))?,
                state: field_text(a, Field::State).map_err(prefix("address"))?,
                postal_code: field_text(a, Field::PostalCode).map_err(prefix("address"))?,
                country: field_text(a, Field::Country).map_err(prefix("address"))?,
            };
            // Boxed only when something is set: most messages carry no address, and an empty
            // one means the same as none.
            if !address.is_empty() {
                fields.address = Some(Box::new(address));
            }
        }
        Some(_) => return Err(wrong_type("contact.address", "an object")),
    }
    match c.get("custom_fields") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if m.len() > 25 {
                return Err(Rejection::new(
                    Reason::FieldTooLong,
                    format!(
                        "contact.custom_fields has {} entries; CC accepts at most 25 per contact",
                        m.len()
                    ),
                ));
            }
            for (name, v) in m {
                if name.is_empty() || name.chars().count() > 50 || name.contains(char::is_control) {
                    return Err(Rejection::new(
                        Reason::InvalidField,
                        "custom field names must be 1 to 50 printable characters",
                    ));
                }
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(wrong_type(
                            "contact.custom_fields values",
                            "strings, numbers or booleans",
                        ));
                    }
                };
                if value.chars().count() > 255 {
                    return Err(Rejection::new(
                        Reason::FieldTooLong,
                        format!(
                            "custom field '{}' is longer than CC's 255 characters",
                            truncate(name, 50)
                        ),
                    ));
                }
                fields.custom_fields.insert(name.clone(), value);
            }
        }
        Some(_) => return Err(wrong_type("contact.custom_fields", "an object")),
    }
    let mut list_ids = match c.get("list_ids") {
        None | Some(Value::Null) => default_lists(&account).to_vec(),
        Some(Value::Array(a)) if a.is_empty() => default_lists(&account).to_vec(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| {
                        Rejection::new(Reason::InvalidField, "contact.list_ids must be list UUIDs")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(wrong_type("contact.list_ids", "an array of list UUIDs")),
    };
    list_ids.sort();
    list_ids.dedup();
    if list_ids.is_empty() {
        return Err(Rejection::new(
            Reason::NoLists,
            "the message names no list_ids and no default lists are configured (CCSYNC_DEFAULT_LIST_IDS)",
        ));
    }
    if list_ids.len() > 50 {
        return Err(Rejection::new(
            Reason::FieldTooLong,
            "contact.list_ids names more than CC's 50 lists",
        ));
    }
    Ok(Contact {
        action,
        reason: None,
        id: id.into_boxed_str(),
        occurred_at,
        stamps: None,
        account,
        consent,
        email,
        fields,
        list_ids,
    })
}

/// An account name messages may carry (`account`): 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn valid_account(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

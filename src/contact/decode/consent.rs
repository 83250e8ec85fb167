//! The consent actions (`contact.unsubscribe`, `.remove_lists`, `.delete`): what they carry
//! besides the email.

use super::*;

/// The consent actions (DESIGN §5.1b): an email, and for `contact.remove_lists` 1–50 list ids
/// (required: removing the configured defaults by omission would be a surprise), for
/// `contact.unsubscribe` an optional `reason` (≤ 255, CC's `opt_out_reason`). Other contact
/// fields are ignored, like unknown top-level fields.
pub(super) fn consent_action(
    action: Action,
    id: String,
    occurred_at: OffsetDateTime,
    account: String,
    email: String,
    reason: Option<Value>,
    c: &serde_json::Map<String, Value>,
) -> Result<Contact, Rejection> {
    let reason = match (action, reason) {
        (_, None | Some(Value::Null)) => None,
        (Action::Unsubscribe, Some(Value::String(r))) => {
            let r = r.trim();
            if r.chars().count() > MAX_REASON_CHARS {
                return Err(Rejection::new(
                    Reason::FieldTooLong,
                    format!("reason is longer than CC's {MAX_REASON_CHARS} characters"),
                ));
            }
            if r.contains(|ch: char| ch.is_control()) {
                return Err(Rejection::new(
                    Reason::InvalidField,
                    "reason contains control characters",
                ));
            }
            (!r.is_empty()).then(|| Box::new(r.into()))
        }
        (Action::Unsubscribe, Some(_)) => return Err(wrong_type("reason", "a string")),
        // Only an unsubscribe carries a reason; elsewhere it is an unknown field.
        (_, Some(_)) => None,
    };
    let mut list_ids = Vec::new();
    if action == Action::RemoveLists {
        list_ids = match c.get("list_ids") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .and_then(|s| Uuid::parse_str(s).ok())
                        .ok_or_else(|| {
                            Rejection::new(
                                Reason::InvalidField,
                                "contact.list_ids must be list UUIDs",
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) | Some(Value::Null) | None => {
                return Err(Rejection::new(
                    Reason::NoLists,
                    "contact.remove_lists needs contact.list_ids: the lists to remove the contact from",
                ));
            }
            Some(_) => return Err(wrong_type("contact.list_ids", "an array of list UUIDs")),
        };
        list_ids.sort();
        list_ids.dedup();
        if list_ids.len() > 50 {
            return Err(Rejection::new(
                Reason::FieldTooLong,
                "contact.list_ids names more than CC's 50 lists",
            ));
        }
    }
    Ok(Contact {
        action,
        reason,
        id: id.into_boxed_str(),
        occurred_at,
        stamps: None,
        account,
        consent: Consent::Implicit,
        email,
        fields: Fields::default(),
        list_ids,
    })
}

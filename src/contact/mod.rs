//! Message DTO → validated [`Contact`] (pure, no IO), and the merge rule for repeats.
//!
//! Parse, don't validate: a [`Contact`] can only be built by [`decode`], so every contact that
//! reaches the batcher has a syntactically valid email, fields within CC's length limits, at most 25
//! custom fields, and 1–50 list ids. Anything else is a [`Rejection`]: a short reason code (the
//! `x-ccsync-reason` header of the dead letter) and one human sentence. Rejections never name the
//! email address (it would land in logs); the dead letter keeps the original body.
//!
//! Limits come from CC's Swagger (reference §5.1, §6.1, §11): names, job title and company ≤ 50,
//! phone ≤ 25 (the strictest of the import (50) and sign-up-form (25) limits, so a contact can take
//! either path), street ≤ 255, city/state/postal code/country ≤ 50, custom field values ≤ 255,
//! ≤ 25 custom fields, birthday month 1–12 and day 1–31 given together. Email: CC allows 80
//! characters on `POST /contacts` but only 50 on both `contacts_json_import` and `sign_up_form`,
//! the two paths ccsync uses; a longer one would silently fail inside an import, so it is
//! dead-lettered as `email_too_long` (DESIGN §2).

use std::collections::BTreeMap;

use time::OffsetDateTime;
use uuid::Uuid;

/// Larger messages are dead-lettered unread: one contact is a few hundred bytes, and a 1 MB body is
/// a bug or an attack, not a contact.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The email length both CC write paths ccsync uses accept.
pub(crate) const MAX_EMAIL_CHARS: usize = 50;

/// Every reason a message is dead-lettered for: the `x-ccsync-reason` header and the `reason`
/// label of `ccsync_dead_letters_total` (a closed set: DESIGN §5). The decoder's reasons come
/// first, then those found on the way to CC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidJson,
    MessageTooLarge,
    UnknownType,
    UnsupportedVersion,
    MissingField,
    WrongType,
    InvalidEmail,
    EmailTooLong,
    FieldTooLong,
    InvalidField,
    NoLists,
    /// A custom field the message names does not exist in the CC account.
    UnknownCustomField,
    /// A list the message names does not exist in the CC account.
    UnknownList,
    /// CC refused the content (400 with its reason, or a row it skipped as correctable).
    RejectedByCc,
    /// No token set was ever stored for the message's account.
    UnknownAccount,
    /// The worker died reading it, `worker.max_redeliveries` times.
    CrashesWorker,
}

impl Reason {
    /// Every reason, in declaration order.
    pub(crate) const ALL: [Reason; 16] = [
        Reason::InvalidJson,
        Reason::MessageTooLarge,
        Reason::UnknownType,
        Reason::UnsupportedVersion,
        Reason::MissingField,
        Reason::WrongType,
        Reason::InvalidEmail,
        Reason::EmailTooLong,
        Reason::FieldTooLong,
        Reason::InvalidField,
        Reason::NoLists,
        Reason::UnknownCustomField,
        Reason::UnknownList,
        Reason::RejectedByCc,
        Reason::UnknownAccount,
        Reason::CrashesWorker,
    ];

    /// The code operators see (`x-ccsync-reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::MessageTooLarge => "message_too_large",
            Reason::UnknownType => "unknown_type",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::InvalidEmail => "invalid_email",
            Reason::EmailTooLong => "email_too_long",
            Reason::FieldTooLong => "field_too_long",
            Reason::InvalidField => "invalid_field",
            Reason::NoLists => "no_lists",
            Reason::UnknownCustomField => "unknown_custom_field",
            Reason::UnknownList => "unknown_list",
            Reason::RejectedByCc => "rejected_by_cc",
            Reason::UnknownAccount => "unknown_account",
            Reason::CrashesWorker => "crashes_worker",
        }
    }
}

#[cfg(test)]
#[test]
fn reason_codes_are_distinct_snake_case() {
    let codes: std::collections::HashSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(codes.len(), Reason::ALL.len());
    assert!(
        codes
            .iter()
            .all(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'))
    );
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why a message cannot be synced. Dead-letter it with its reason and one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Rejection {
    /// The `x-ccsync-reason` code.
    pub code: Reason,
    /// One human sentence for `x-ccsync-detail`.
    pub detail: String,
}

impl Rejection {
    pub(crate) fn new(code: Reason, detail: impl Into<String>) -> Rejection {
        Rejection {
            code,
            detail: detail.into(),
        }
    }
}

/// How the person agreed to hear from the business (DESIGN §2 "consent-safe by default").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Consent {
    /// Bulk import path; never upgrades permission.
    #[default]
    Implicit,
    /// The person opted in on a form: `sign_up_form`, which sets explicit permission.
    Explicit,
}

/// What a message asks of CC (its `type`, DESIGN §5.1 and §5.1b). Every kind passes the same
/// ordering ledger (`crate::ledger`), keyed by (account, email).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Action {
    /// `contact.upsert`: fields and list memberships (import, or `sign_up_form` for explicit
    /// consent).
    #[default]
    Upsert,
    /// `contact.unsubscribe`: CC's contact ends `permission_to_send = unsubscribed`.
    Unsubscribe,
    /// `contact.remove_lists`: the memberships of [`Contact::list_ids`] removed.
    RemoveLists,
    /// `contact.delete`: the contact deleted in CC (revivable there: an erasure request).
    Delete,
}

impl Action {
    /// The message `type` of this action.
    pub(crate) fn message_type(self) -> &'static str {
        match self {
            Action::Upsert => "contact.upsert",
            Action::Unsubscribe => "contact.unsubscribe",
            Action::RemoveLists => "contact.remove_lists",
            Action::Delete => "contact.delete",
        }
    }

    /// The action of a message `type`, if ccsync knows it.
    pub(crate) fn from_type(t: &str) -> Option<Action> {
        [
            Action::Upsert,
            Action::Unsubscribe,
            Action::RemoveLists,
            Action::Delete,
        ]
        .into_iter()
        .find(|a| a.message_type() == t)
    }
}

/// CC's limit on `opt_out_reason` (Swagger `EmailAddressPut`).
pub(crate) const MAX_REASON_CHARS: usize = 255;

/// A contact's postal address, in message terms.
///
/// Text is `Box<str>` rather than `String` (16 bytes a slot instead of 24; nothing edits it in
/// place): up to 65,535 decoded contacts are held at once (BENCHMARKS.md, figure 4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    pub street: Option<Box<str>>,
    pub city: Option<Box<str>>,
    pub state: Option<Box<str>>,
    pub postal_code: Option<Box<str>>,
    pub country: Option<Box<str>>,
}

/// What [`Fields::address`] lends when a contact has no address.
static NO_ADDRESS: Address = Address {
    street: None,
    city: None,
    state: None,
    postal_code: None,
    country: None,
};

impl Address {
    /// True when no address field is set.
    pub(crate) fn is_empty(&self) -> bool {
        self.street.is_none()
            && self.city.is_none()
            && self.state.is_none()
            && self.postal_code.is_none()
            && self.country.is_none()
    }
}

/// The contact fields a message may set. `None` = not sent (CC leaves the stored value alone);
/// merging takes the newer message's `Some` values.
///
/// Laid out for size, because up to 65,535 decoded contacts are held at once (one per unacked
/// delivery; BENCHMARKS.md, figure 4): text is `Option<Box<str>>` (16 bytes, not 24; it is
/// never edited in place) and the rarely sent address is boxed (8 bytes instead of 5 inline
/// slots).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pub first_name: Option<Box<str>>,
    pub last_name: Option<Box<str>>,
    pub job_title: Option<Box<str>>,
    pub company_name: Option<Box<str>>,
    pub phone: Option<Box<str>>,
    pub birthday: Option<(u8, u8)>,
    pub anniversary: Option<Box<str>>,
    /// `None` when the message sets no address field. Read it through [`Fields::address`].
    pub address: Option<Box<Address>>,
    /// CC custom-field *names* → values (sent as `cf:NAME`). An empty map allocates nothing.
    pub custom_fields: BTreeMap<String, String>,
}

/// A validated event (`contact.upsert`, `.unsubscribe`, `.remove_lists`, `.delete`), or several
/// of the same kind for the same email coalesced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// What the message asks: an upsert, or one of the consent actions. Only events of the same
    /// action (and lists) coalesce: they are different CC calls.
    pub action: Action,
    /// `contact.unsubscribe`'s optional `reason` (≤ 255 characters, CC's `opt_out_reason`).
    /// Boxed twice (a thin 8-byte slot): rare, and every held delivery pays for the slot.
    pub reason: Option<Box<Box<str>>>,
    /// The message id (for logs and dead letters): the newest merged event's.
    pub id: Box<str>,
    /// The newest `occurred_at` of the events merged into this contact.
    pub occurred_at: OffsetDateTime,
    /// Per-field `occurred_at` (Unix ms) of the event that supplied each field, for the fields
    /// whose time differs from `occurred_at` (only after a merge of events of different times).
    /// `None` for a single event: every field has `occurred_at`. Each field keeps its own time
    /// into the ordering ledger (DESIGN §2: "newest" is per field), so a merged entry never
    /// stamps an older value with a newer event's time.
    pub stamps: Option<Box<BTreeMap<Box<str>, i64>>>,
    pub account: String,
    pub consent: Consent,
    /// Lower-cased (CC matches emails case-insensitively); never logged above debug.
    pub email: String,
    pub fields: Fields,
    /// Sorted, de-duplicated, 1–50 lists (the message's, or the configured defaults). For
    /// `contact.remove_lists` the lists to leave (never the defaults); empty for unsubscribe and
    /// delete.
    pub list_ids: Vec<Uuid>,
}

impl Contact {
    /// Merge a repeat of the same (account, lists, email): field by field, the field with the
    /// later `occurred_at` winning (each field keeps the time of the event that supplied it, so
    /// merging merged contacts equals folding every event in `occurred_at` order); on a tie the
    /// later delivery (`other`) wins. Consent once given explicitly stays explicit.
    pub(crate) fn merge(&mut self, mut other: Contact) {
        let mut times: BTreeMap<Box<str>, i64> = self
            .field_stamps()
            .into_iter()
            .map(|(n, t)| (n.into_boxed_str(), t))
            .collect();
        for (name, t) in other.field_stamps() {
            if times.get(name.as_str()).is_none_or(|mine| t >= *mine) {
                self.fields.move_named(&mut other.fields, &name);
                times.insert(name.into_boxed_str(), t);
            }
        }
        self.fields.tidy_address();
        if other.occurred_at >= self.occurred_at {
            self.occurred_at = other.occurred_at;
            self.id = other.id;
            // An unsubscribe's reason is the newest one given.
            if other.reason.is_some() {
                self.reason = other.reason;
            }
        }
        let newest = unix_ms(self.occurred_at);
        times.retain(|_, t| *t != newest);
        self.stamps = (!times.is_empty()).then(|| Box::new(times));
        self.consent = self.consent.max(other.consent);
    }

    /// Each field this contact sets (names as in [`Fields::names`]) with the `occurred_at`
    /// (Unix ms) of the event that supplied it.
    pub(crate) fn field_stamps(&self) -> Vec<(String, i64)> {
        let own = unix_ms(self.occurred_at);
        self.fields
            .names()
            .into_iter()
            .map(|n| {
                let t = self
                    .stamps
                    .as_ref()
                    .and_then(|s| s.get(n.as_str()).copied())
                    .unwrap_or(own);
                (n, t)
            })
            .collect()
    }
}

/// Unix milliseconds, the ledger's unit.
pub(crate) fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

mod decode;
mod field;
pub use decode::{DefaultLists, decode, decode_for, valid_account};
pub(crate) use field::Field;

#[cfg(test)]
mod merge_tests;
#[cfg(test)]
mod tests;

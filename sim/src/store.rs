//! The accounts' data as CC would hold it: contact lists, custom fields, contacts, activities.
//!
//! **One [`Store`] per CC account** ([`Stores`]): every `/v3` call reads and writes the store of
//! the account its access token names (`platform_user_id`, set when the device flow or the
//! authorization code was approved, or by `Sim::issue_tokens(client, account)`). Another
//! account's contacts, lists, custom fields and activities are invisible: a list id of account A
//! named by B is unknown (400 like any unknown list), B's `GET /activities/{id}` of A's activity
//! is a 404. Rate limits and the daily quota stay per API key (`limits.rs`), as CC's are
//! (reference §4). A store is created empty the first time its account calls the API or is given
//! data through the handle or the admin API.
//!
//! Choices where the reference is silent:
//! - Contacts are keyed by email, matched **case-insensitively**; the address keeps the spelling of
//!   the call that created it.
//! - [`SimContact::fields`] uses the import's column names (`first_name`, `phone`, `street`,
//!   `zip`, …); `sign_up_form` fields are mapped onto them (`phone_number` → `phone`,
//!   `street_address.postal_code` → `zip`, …). Custom fields are stored as `cf:<name>`.
//! - List names and custom-field names are unique (a duplicate is a 409 conflict).
//! - Custom-field `name` = `label` with blanks replaced by underscores (Swagger `CustomField.name`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::activity::Activity;

/// A contact as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimContact {
    pub contact_id: Uuid,
    pub email: String,
    /// Import column names → values; custom fields as `cf:<name>`.
    pub fields: BTreeMap<String, String>,
    pub list_ids: BTreeSet<Uuid>,
    /// `implicit` (created by an import), `explicit` (sign-up form).
    pub permission_to_send: String,
    /// `Account` (import) or `Contact` (sign-up form).
    pub opt_in_source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// How many times a call wrote this contact (imports count once per activity).
    pub writes: u64,
    /// Who opted the contact out: `Contact` (the unsubscribe link in an email) or `Account` (a
    /// PUT with `permission_to_send: unsubscribed`); `None` while subscribed (Swagger
    /// `EmailAddressPut.opt_out_source`).
    #[serde(default)]
    pub opt_out_source: Option<String>,
    /// When it opted out (simulator clock); what `GET /contacts?optout_after=` filters on.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub opt_out_date: Option<OffsetDateTime>,
    #[serde(default)]
    pub opt_out_reason: Option<String>,
    /// Set by a `contact_delete` activity: the contact is hidden from `GET /contacts` (unless
    /// `status=all|deleted`) and lost its lists; a sign-up form, an import or a PUT revives it
    /// (reference §5.2, §5.3, §5.5).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub deleted_at: Option<OffsetDateTime>,
}

impl SimContact {
    /// Opt the contact out (`source` `Contact` for an email link, `Account` for a PUT).
    pub fn opt_out(&mut self, source: &str, reason: Option<String>, now: OffsetDateTime) {
        self.permission_to_send = "unsubscribed".into();
        self.opt_out_source = Some(source.to_owned());
        self.opt_out_date = Some(now);
        self.opt_out_reason = reason;
        self.updated_at = now;
        self.writes += 1;
    }

    /// Whether `GET /contacts` with this one `status` value lists the contact (Swagger: the
    /// default is every non-deleted contact; `active` leaves out unsubscribed ones too).
    pub fn has_status(&self, status: &str) -> bool {
        let deleted = self.deleted_at.is_some();
        match status {
            "all" => true,
            "deleted" => deleted,
            "active" => !deleted && self.permission_to_send != "unsubscribed",
            other => !deleted && self.permission_to_send == other,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ListRec {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub favorite: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct FieldRec {
    pub id: Uuid,
    pub label: String,
    pub name: String,
    pub kind: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// How a write reached the contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Import,
    SignUpForm,
}

/// CC's cap on custom fields per account (reference §5.6).
pub const MAX_CUSTOM_FIELDS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    Conflict,
    Limit,
}

/// The account every test helper means when none is named (`Sim::contacts()`, the admin API
/// without `?account=`, tokens issued without an account).
pub const DEFAULT_ACCOUNT: &str = "default";

/// Every account's [`Store`], by account (`platform_user_id`).
#[derive(Debug, Default)]
pub struct Stores {
    by_account: BTreeMap<String, Store>,
}

impl Stores {
    /// The store of `account`, created empty if it has none yet.
    pub fn account(&mut self, account: &str) -> &mut Store {
        self.by_account.entry(account.to_owned()).or_default()
    }

    /// The store of `account` with its due activities settled (`None`: no store yet).
    pub fn settled(&mut self, account: &str) -> Option<&mut Store> {
        let s = self.by_account.get_mut(account)?;
        super::activity::settle(s);
        Some(s)
    }

    /// Settle every account's due activities.
    pub fn settle_all(&mut self) {
        self.by_account
            .values_mut()
            .for_each(super::activity::settle);
    }

    /// Every account with a store, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Store)> {
        self.by_account.iter()
    }
}

/// One account's data.
#[derive(Debug, Default)]
pub struct Store {
    pub lists: Vec<ListRec>,
    pub fields: Vec<FieldRec>,
    /// lowercase email → contact.
    pub contacts: BTreeMap<String, SimContact>,
    /// In creation order.
    pub activities: Vec<Activity>,
}

impl Store {
    pub fn create_list(
        &mut self,
        name: &str,
        description: Option<String>,
        favorite: bool,
        now: OffsetDateTime,
    ) -> Result<Uuid, CreateError> {
        if self.lists.iter().any(|l| l.name == name) {
            return Err(CreateError::Conflict);
        }
        let id = Uuid::new_v4();
        self.lists.push(ListRec {
            id,
            name: name.into(),
            description,
            favorite,
            created_at: now,
            updated_at: now,
        });
        Ok(id)
    }

    pub fn create_field(
        &mut self,
        label: &str,
        kind: &str,
        now: OffsetDateTime,
    ) -> Result<Uuid, CreateError> {
        let name = label.trim().replace(' ', "_");
        if self
            .fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(&name))
        {
            return Err(CreateError::Conflict);
        }
        if self.fields.len() >= MAX_CUSTOM_FIELDS {
            return Err(CreateError::Limit);
        }
        let id = Uuid::new_v4();
        self.fields.push(FieldRec {
            id,
            label: label.into(),
            name,
            kind: kind.into(),
            created_at: now,
            updated_at: now,
        });
        Ok(id)
    }

    pub fn list_exists(&self, id: &Uuid) -> bool {
        self.lists.iter().any(|l| l.id == *id)
    }

    pub fn field_by_name(&self, name: &str) -> Option<&FieldRec> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn field_by_id(&self, id: &Uuid) -> Option<&FieldRec> {
        self.fields.iter().find(|f| f.id == *id)
    }

    pub fn contact(&self, email: &str) -> Option<&SimContact> {
        self.contacts.get(&email.to_lowercase())
    }

    /// The contact with this id, deleted ones included.
    pub fn contact_by_id_mut(&mut self, id: &Uuid) -> Option<&mut SimContact> {
        self.contacts.values_mut().find(|c| c.contact_id == *id)
    }

    /// Create or update a contact: only `fields` sent change, `lists` are added (never removed).
    /// Returns the contact id and whether it was created.
    pub fn upsert(
        &mut self,
        email: &str,
        fields: BTreeMap<String, String>,
        lists: &BTreeSet<Uuid>,
        source: Source,
        now: OffsetDateTime,
    ) -> (Uuid, bool) {
        let key = email.to_lowercase();
        let created = !self.contacts.contains_key(&key);
        let c = self.contacts.entry(key).or_insert_with(|| SimContact {
            contact_id: Uuid::new_v4(),
            email: email.to_owned(),
            fields: BTreeMap::new(),
            list_ids: BTreeSet::new(),
            // Import: new contacts get implicit permission, source Account (reference §6.1).
            permission_to_send: "implicit".into(),
            opt_in_source: "Account".into(),
            created_at: now,
            updated_at: now,
            writes: 0,
            opt_out_source: None,
            opt_out_date: None,
            opt_out_reason: None,
            deleted_at: None,
        });
        // Writing a deleted contact revives it (sign_up_form: "updating a deleted contact
        // restores it", reference §5.1; the import's create-or-update by email does the same).
        c.deleted_at = None;
        if source == Source::SignUpForm {
            // sign_up_form sets explicit permission, even for existing contacts, even for ones
            // that unsubscribed (reference §5.1, §8 point 6): the wrongful re-subscribe the
            // worker must never cause.
            c.permission_to_send = "explicit".into();
            c.opt_out_source = None;
            c.opt_out_date = None;
            c.opt_out_reason = None;
            if created {
                c.opt_in_source = "Contact".into();
            }
        }
        c.fields.extend(fields);
        c.list_ids.extend(lists.iter().copied());
        c.updated_at = now;
        c.writes += 1;
        (c.contact_id, created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_keep_apart_and_reads_create_nothing() {
        let mut all = Stores::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        let la = all.account("a").create_list("L", None, false, now).unwrap();
        // The same name in another account is no conflict, and its id differs.
        let lb = all.account("b").create_list("L", None, false, now).unwrap();
        assert_ne!(la, lb);
        assert!(all.account("a").list_exists(&la));
        assert!(!all.account("b").list_exists(&la));
        let none = BTreeSet::new();
        all.account("a")
            .upsert("x@example.com", BTreeMap::new(), &none, Source::Import, now);
        assert!(all.account("b").contact("X@example.com").is_none());
        assert!(all.settled("nobody").is_none(), "reads create no store");
        let names: Vec<&String> = all.iter().map(|(a, _)| a).collect();
        assert_eq!(names, ["a", "b"]);
    }
}

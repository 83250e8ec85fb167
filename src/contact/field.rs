//! The one list of contact fields (besides the email and custom fields): their names in
//! messages and in the ordering ledger, their length limits, and their columns in an import row.
//! Decoding ([`super::decode`]), merging ([`super::Contact::merge`], the ledger's per-field
//! newest-wins names) and the import row (`crate::cc::api::ImportRow`) all read it from here.

use super::{Address, Fields, NO_ADDRESS};

/// A contact field a message may set, in the order the import row writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Field {
    FirstName,
    LastName,
    JobTitle,
    CompanyName,
    Phone,
    /// `birthday_month` and `birthday_day`, given together.
    Birthday,
    Anniversary,
    Street,
    City,
    State,
    PostalCode,
    Country,
}

impl Field {
    /// Every field, in declaration order.
    pub(crate) const ALL: [Field; 12] = [
        Field::FirstName,
        Field::LastName,
        Field::JobTitle,
        Field::CompanyName,
        Field::Phone,
        Field::Birthday,
        Field::Anniversary,
        Field::Street,
        Field::City,
        Field::State,
        Field::PostalCode,
        Field::Country,
    ];

    /// The name in messages (`contact.first_name`, `contact.address.street`) and in the
    /// ordering ledger.
    pub const fn as_str(self) -> &'static str {
        match self {
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::JobTitle => "job_title",
            Field::CompanyName => "company_name",
            Field::Phone => "phone",
            Field::Birthday => "birthday",
            Field::Anniversary => "anniversary",
            Field::Street => "street",
            Field::City => "city",
            Field::State => "state",
            Field::PostalCode => "postal_code",
            Field::Country => "country",
        }
    }

    /// The field of this name (as in [`Field::as_str`]).
    pub(crate) fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// True for the fields of `contact.address`.
    pub(crate) const fn in_address(self) -> bool {
        matches!(
            self,
            Field::Street | Field::City | Field::State | Field::PostalCode | Field::Country
        )
    }

    /// The longest text CC takes (reference §5.1, §6.1): phone 25 is the strictest of the
    /// import (50) and sign-up-form (25) limits; `None` for the birthday (two small numbers).
    pub(crate) const fn max_chars(self) -> Option<usize> {
        match self {
            Field::Phone => Some(25),
            Field::Anniversary => Some(10),
            Field::Street => Some(255),
            Field::Birthday => None,
            _ => Some(50),
        }
    }

    /// The column of an import row (Swagger `JsonImportContact`) holding this text field; the
    /// birthday has two (`birthday_month`, `birthday_day`) and so none here.
    pub(crate) const fn import_column(self) -> Option<&'static str> {
        match self {
            Field::Birthday => None,
            Field::PostalCode => Some("zip"),
            f => Some(f.as_str()),
        }
    }

    /// This text field's value in `f` (`None` for the birthday).
    pub(crate) fn text(self, f: &Fields) -> Option<&Option<Box<str>>> {
        Some(match self {
            Field::FirstName => &f.first_name,
            Field::LastName => &f.last_name,
            Field::JobTitle => &f.job_title,
            Field::CompanyName => &f.company_name,
            Field::Phone => &f.phone,
            Field::Anniversary => &f.anniversary,
            Field::Birthday => return None,
            a => address_slot_ref(a, f.address()),
        })
    }

    /// True when `f` sets this field.
    pub(crate) fn is_set(self, f: &Fields) -> bool {
        match self {
            Field::Birthday => f.birthday.is_some(),
            t => t.text(f).is_some_and(Option::is_some),
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn address_slot_ref(field: Field, a: &Address) -> &Option<Box<str>> {
    match field {
        Field::Street => &a.street,
        Field::City => &a.city,
        Field::State => &a.state,
        Field::PostalCode => &a.postal_code,
        _ => &a.country,
    }
}

/// The slot of an address field in `a`.
fn address_slot(field: Field, a: &mut Address) -> &mut Option<Box<str>> {
    match field {
        Field::Street => &mut a.street,
        Field::City => &mut a.city,
        Field::State => &mut a.state,
        Field::PostalCode => &mut a.postal_code,
        _ => &mut a.country,
    }
}

/// The slot of a top-level text field in `f` (not the birthday, not an address field).
fn top_slot(field: Field, f: &mut Fields) -> &mut Option<Box<str>> {
    match field {
        Field::FirstName => &mut f.first_name,
        Field::LastName => &mut f.last_name,
        Field::JobTitle => &mut f.job_title,
        Field::CompanyName => &mut f.company_name,
        Field::Phone => &mut f.phone,
        _ => &mut f.anniversary,
    }
}

// Field-by-field operations on [`Fields`]: emptiness, the names the ledger compares, and
// dropping or moving named fields (what merging and the ledger's stale fields use).

impl Fields {
    /// The address, all `None` when the contact has none.
    pub(crate) fn address(&self) -> &Address {
        self.address.as_deref().unwrap_or(&NO_ADDRESS)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        // Compared field by field rather than with `Fields::default()` so an address box with
        // nothing in it still counts as empty.
        self.first_name.is_none()
            && self.last_name.is_none()
            && self.job_title.is_none()
            && self.company_name.is_none()
            && self.phone.is_none()
            && self.birthday.is_none()
            && self.anniversary.is_none()
            && self.address().is_empty()
            && self.custom_fields.is_empty()
    }

    /// Keep `address` `None` whenever no address field is set, so equal contents compare equal
    /// (and an emptied box is freed).
    pub(super) fn tidy_address(&mut self) {
        if self.address.as_deref().is_some_and(Address::is_empty) {
            self.address = None;
        }
    }

    /// The names of the fields this event sets ([`Field::as_str`]; custom fields as `cf:NAME`),
    /// for the per-field newest-wins ledger.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Field::ALL
            .into_iter()
            .filter(|f| f.is_set(self))
            .map(|f| f.as_str().to_string())
            .collect();
        out.extend(self.custom_fields.keys().map(|k| format!("cf:{k}")));
        out
    }

    /// Drop the named fields (names as in [`Fields::names`]): a newer event already set them.
    pub(crate) fn drop_named(&mut self, names: &[String]) {
        for n in names {
            match Field::parse(n) {
                Some(Field::Birthday) => self.birthday = None,
                Some(f) if f.in_address() => {
                    if let Some(a) = self.address.as_deref_mut() {
                        *address_slot(f, a) = None;
                    }
                }
                Some(f) => *top_slot(f, self) = None,
                None => {
                    if let Some(cf) = n.strip_prefix("cf:") {
                        self.custom_fields.remove(cf);
                    }
                }
            }
        }
        self.tidy_address();
    }

    /// Take the named field (names as in [`Fields::names`]) from `from`, replacing ours; the
    /// caller tidies the address afterwards.
    pub(crate) fn move_named(&mut self, from: &mut Fields, name: &str) {
        fn addr(f: &mut Fields) -> &mut Address {
            f.address.get_or_insert_with(Box::default)
        }
        match Field::parse(name) {
            Some(Field::Birthday) => self.birthday = from.birthday.take(),
            Some(f) if f.in_address() => {
                let v = address_slot(f, addr(from)).take();
                *address_slot(f, addr(self)) = v;
            }
            Some(f) => *top_slot(f, self) = top_slot(f, from).take(),
            None => {
                if let Some(cf) = name.strip_prefix("cf:")
                    && let Some(v) = from.custom_fields.remove(cf)
                {
                    self.custom_fields.insert(cf.to_string(), v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_parses_back_from_its_name_and_only_birthday_lacks_an_import_column() {
        for f in Field::ALL {
            assert_eq!(Field::parse(f.as_str()), Some(f));
            assert_eq!(f.import_column().is_none(), f == Field::Birthday);
        }
        assert_eq!(Field::PostalCode.import_column(), Some("zip"));
        assert_eq!(Field::parse("cf:x"), None);
    }
}

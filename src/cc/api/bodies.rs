//! Request bodies: the import row (and its exact size), the unsubscribe PUT and the sign-up
//! form, mapped from a validated [`Contact`].

use super::*;

fn put(m: &mut Map<String, Value>, key: &str, v: &Option<Box<str>>) {
    if let Some(v) = v {
        m.insert(key.to_string(), Value::String(v.to_string()));
    }
}

/// The bytes `c` adds to an import body: its row exactly as [`import_row`]
/// serializes it, plus the comma before the next row. Computed without serializing (it runs for
/// every delivery); control characters are counted at their longest escape (`\u00XX`), so this is
/// never below the real size. An exact count matters: batches fill up to `batch_max_bytes`
/// instead of stopping at an estimate (an earlier 2x-margin estimate stopped them
/// at about 45% of it, doubling the imports of a backlog; BENCHMARKS.md, figure 2). The sender
/// still halves any body that comes out larger than the limit.
pub(crate) fn import_row_len(c: &Contact) -> usize {
    fn string(v: &str) -> usize {
        2 + v.len()
            + v.bytes()
                .map(|b| match b {
                    b'"' | b'\\' => 1,
                    0..=0x1f => 5,
                    _ => 0,
                })
                .sum::<usize>()
    }
    fn digits(n: u8) -> usize {
        match n {
            0..=9 => 1,
            10..=99 => 2,
            _ => 3,
        }
    }
    let f = &c.fields;
    let (mut n, mut entries) = (0usize, 0usize);
    // `"key":value` is the key's length + 3 (two quotes and the colon) + the value's.
    let mut add = |key: usize, value: usize| {
        n += key + 3 + value;
        entries += 1;
    };
    add("email".len(), string(&c.email));
    for (k, v) in row_text_fields(f) {
        if let Some(v) = v {
            add(k.len(), string(v));
        }
    }
    if let Some((month, day)) = f.birthday {
        add("birthday_month".len(), digits(month));
        add("birthday_day".len(), digits(day));
    }
    for (name, value) in &f.custom_fields {
        // `cf:NAME`, escaped like any string (without its quotes).
        add(3 + string(name) - 2, string(value));
    }
    // Braces, the commas between entries, and the comma after the row.
    2 + n + entries.saturating_sub(1) + 1
}

/// The text columns of an import row (CC key, message field), from the one list of contact
/// fields ([`Field`]), shared by the serializer and the size count so the two can never disagree.
fn row_text_fields(
    f: &crate::contact::Fields,
) -> impl Iterator<Item = (&'static str, &Option<Box<str>>)> {
    Field::ALL
        .into_iter()
        .filter_map(move |field| Some((field.import_column()?, field.text(f)?)))
}

/// Bytes of an import body outside its rows: `{"import_data":[`, `],"list_ids":[…]}` with up to
/// 50 quoted list UUIDs (39 bytes each with the comma), rounded up. Batches leave this much room.
pub(crate) const IMPORT_ENVELOPE_MAX: usize = 4_096;

/// One `import_data` row (Swagger `JsonImportContact`), serialized from the contact as is.
pub(crate) struct ImportRow<'a>(pub &'a Contact);

impl serde::Serialize for ImportRow<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let c = self.0;
        let f = &c.fields;
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("email", &c.email)?;
        for (k, v) in row_text_fields(f) {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        if let Some((month, day)) = f.birthday {
            m.serialize_entry("birthday_month", &month)?;
            m.serialize_entry("birthday_day", &day)?;
        }
        for (name, value) in &f.custom_fields {
            m.serialize_entry(&format!("cf:{name}"), value)?;
        }
        m.end()
    }
}

/// The PUT body of [`Api::unsubscribe`] (Swagger `ContactPutRequest`).
pub(super) fn unsubscribe_body(c: &ContactRecord, reason: Option<&str>) -> Value {
    let mut m = c.top_level.clone();
    let mut email = Map::new();
    email.insert("address".into(), Value::String(c.address.clone()));
    email.insert("permission_to_send".into(), json!("unsubscribed"));
    if let Some(r) = reason {
        email.insert("opt_out_reason".into(), Value::String(r.to_string()));
    }
    m.insert("email_address".into(), Value::Object(email));
    m.insert("update_source".into(), json!("Account"));
    Value::Object(m)
}

/// The `sign_up_form` body (Swagger `ContactCreateOrUpdateInput`).
pub(super) fn sign_up_body(c: &Contact, custom_field_ids: &HashMap<String, String>) -> Value {
    let f = &c.fields;
    let mut m = Map::new();
    m.insert("email_address".into(), Value::String(c.email.clone()));
    m.insert("list_memberships".into(), json!(c.list_ids));
    put(&mut m, "first_name", &f.first_name);
    put(&mut m, "last_name", &f.last_name);
    put(&mut m, "job_title", &f.job_title);
    put(&mut m, "company_name", &f.company_name);
    put(&mut m, "phone_number", &f.phone);
    put(&mut m, "anniversary", &f.anniversary);
    if let Some((month, day)) = f.birthday {
        m.insert("birthday_month".into(), json!(month));
        m.insert("birthday_day".into(), json!(day));
    }
    let a = f.address();
    if !a.is_empty() {
        let mut addr = Map::new();
        addr.insert("kind".into(), json!("home"));
        put(&mut addr, "street", &a.street);
        put(&mut addr, "city", &a.city);
        put(&mut addr, "state", &a.state);
        put(&mut addr, "postal_code", &a.postal_code);
        put(&mut addr, "country", &a.country);
        m.insert("street_address".into(), Value::Object(addr));
    }
    let cfs: Vec<Value> = f
        .custom_fields
        .iter()
        .filter_map(|(name, value)| {
            custom_field_ids
                .get(name)
                .map(|id| json!({ "custom_field_id": id, "value": value }))
        })
        .collect();
    if !cfs.is_empty() {
        m.insert("custom_fields".into(), Value::Array(cfs));
    }
    Value::Object(m)
}

//! CC's Swagger 2.0 document (`reference/cc-v3-openapi.yaml`, embedded) turned into JSON-Schema
//! validators, for request bodies the simulator receives and for tests of the bodies it serves.
//!
//! **Conversion**: Swagger 2.0 schema objects are a subset of JSON Schema draft 4 plus a few
//! annotations (`readOnly`, `example`, `x-*`, `discriminator`) that draft 4 ignores. A validator
//! for definition `X` is compiled from `{"$ref": "#/definitions/X", "definitions": <all
//! definitions>}` with draft 4 and format checking on (unknown formats such as `uuid` under
//! draft 4 are ignored by the validator; handlers parse UUIDs themselves). Nothing is
//! hand-copied: every limit comes from the document.
//!
//! **Import rows**: `ContactsJsonImport` is validated as an envelope (its `import_data` items
//! relaxed to "object"), and every row separately against `JsonImportContact`; a row that fails
//! is a row error in the activity, not a 400 for the whole request (CC imports asynchronously and
//! reports per-row problems in `error_count`; see `import.rs`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use jsonschema::Validator;
use serde_json::{Value, json};

/// The Swagger document, embedded.
pub const SWAGGER_YAML: &str = include_str!("../../reference/cc-v3-openapi.yaml");

/// Synthetic definition: `ContactsJsonImport` with rows relaxed to objects.
pub const IMPORT_ENVELOPE: &str = "SimContactsJsonImportEnvelope";

static DOC: OnceLock<Result<Value, String>> = OnceLock::new();
static VALIDATORS: OnceLock<Mutex<HashMap<String, &'static Validator>>> = OnceLock::new();

/// The whole Swagger document as JSON.
pub fn document() -> Result<&'static Value, String> {
    DOC.get_or_init(|| {
        let mut doc: Value =
            serde_yaml::from_str(SWAGGER_YAML).map_err(|e| format!("Swagger YAML: {e}"))?;
        let defs = doc
            .get_mut("definitions")
            .and_then(Value::as_object_mut)
            .ok_or("Swagger document has no definitions")?;
        let mut envelope = defs
            .get("ContactsJsonImport")
            .cloned()
            .ok_or("no ContactsJsonImport definition")?;
        envelope["properties"]["import_data"]["items"] = json!({"type": "object"});
        defs.insert(IMPORT_ENVELOPE.into(), envelope);
        // Swagger quirk: `ListActivityRemoveContacts` declares `maxItems: 0` on its id arrays
        // while its descriptions (and reference §6.2) say up to 500 contact ids and 50 list or
        // tag ids; taken literally, no removal could name anything. The described limits apply.
        if let Some(r) = defs.get_mut("ListActivityRemoveContacts") {
            r["properties"]["source"]["properties"]["contact_ids"]["maxItems"] = json!(500);
            r["properties"]["source"]["properties"]["list_ids"]["maxItems"] = json!(50);
            r["properties"]["source"]["properties"]["tag_ids"]["maxItems"] = json!(50);
            r["properties"]["list_ids"]["maxItems"] = json!(50);
        }
        Ok(doc)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Parse the document once (called at simulator start so a broken document fails early).
pub fn preload() -> Result<(), String> {
    document().map(|_| ())
}

/// The compiled validator for definition `name` (compiled once per process, kept forever).
pub fn validator(name: &str) -> Result<&'static Validator, String> {
    let cache = VALIDATORS.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
        return Ok(v);
    }
    let doc = document()?;
    let defs = &doc["definitions"];
    if defs.get(name).is_none() {
        return Err(format!("no definition {name} in the Swagger document"));
    }
    let schema = json!({"$ref": format!("#/definitions/{name}"), "definitions": defs});
    let v = jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| format!("compiling {name}: {e}"))?;
    let v: &'static Validator = Box::leak(Box::new(v));
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_owned(), v);
    Ok(v)
}

/// Validate `instance` against definition `name`; the messages name the failing location.
pub fn check(name: &str, instance: &Value) -> Result<(), Vec<String>> {
    let v = validator(name).map_err(|e| vec![e])?;
    let errs: Vec<String> = v
        .iter_errors(instance)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{}: {e}", path.trim_start_matches('/').replace('/', "."))
            }
        })
        .collect();
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// The body schema name of a simulated operation (`consumes` JSON), from the document's paths.
pub fn body_definition(path: &str, method: &str) -> Option<String> {
    let doc = document().ok()?;
    let params = doc["paths"][path][method]["parameters"].as_array()?;
    let body = params.iter().find(|p| p["in"] == "body")?;
    body["schema"]["$ref"]
        .as_str()?
        .strip_prefix("#/definitions/")
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_envelope_and_rows_come_from_the_document() {
        assert_eq!(
            body_definition("/activities/contacts_json_import", "post").as_deref(),
            Some("ContactsJsonImport")
        );
        assert_eq!(
            body_definition("/contacts/sign_up_form", "post").as_deref(),
            Some("ContactCreateOrUpdateInput")
        );
        // The definitions the handlers validate against are the operations' own body schemas.
        assert_eq!(
            body_definition("/contact_lists", "post").as_deref(),
            Some("ListInput")
        );
        assert_eq!(
            body_definition("/contact_custom_fields", "post").as_deref(),
            Some("CustomFieldRequest")
        );
        assert_eq!(
            body_definition("/contacts/{contact_id}", "put").as_deref(),
            Some("ContactPutRequest")
        );
        assert_eq!(
            body_definition("/activities/contact_delete", "post").as_deref(),
            Some("ContactDelete")
        );
        assert_eq!(
            body_definition("/activities/remove_list_memberships", "post").as_deref(),
            Some("ListActivityRemoveContacts")
        );
        // The `maxItems: 0` quirk is replaced by the described limits.
        let ids: Vec<String> = (0..500).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        let l = uuid::Uuid::new_v4().to_string();
        let remove = json!({"source": {"contact_ids": ids}, "list_ids": [l]});
        assert!(check("ListActivityRemoveContacts", &remove).is_ok());
        let mut too_many = remove.clone();
        too_many["source"]["contact_ids"]
            .as_array_mut()
            .unwrap()
            .push(json!(l));
        assert!(check("ListActivityRemoveContacts", &too_many).is_err());
        let ok = json!({"import_data": [{"email": 5}], "list_ids": ["04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"]});
        assert!(check(IMPORT_ENVELOPE, &ok).is_ok());
        assert!(check("ContactsJsonImport", &ok).is_err());
        let no_lists = json!({"import_data": [], "list_ids": []});
        assert!(check(IMPORT_ENVELOPE, &no_lists).is_err());
        let long = json!({"email": "a".repeat(51)});
        let errs = check("JsonImportContact", &long).unwrap_err();
        assert!(errs[0].starts_with("email"), "{errs:?}");
    }
}

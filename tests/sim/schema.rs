//! Every body the simulator serves validates against the matching definition of CC's Swagger
//! document, loaded here from `reference/cc-v3-openapi.yaml` independently of the simulator's own
//! loader. The test is stricter than the document: every object schema that lists `properties`
//! gets `additionalProperties: false`, so a field CC does not define (or a misspelled one) fails.

use crate::sim_common;

use std::sync::OnceLock;

use ccsync::sim::{Faults, SimConfig};
use serde_json::{Value, json};
use sim_common::*;

fn close_objects(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, x) in m.iter_mut() {
                // `example` values are data, not schemas.
                if k != "example" {
                    close_objects(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

fn definitions() -> &'static Value {
    static D: OnceLock<Value> = OnceLock::new();
    D.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/reference/cc-v3-openapi.yaml");
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut defs = doc["definitions"].clone();
        close_objects(&mut defs);
        defs
    })
}

#[track_caller]
fn assert_valid(def: &str, body: &Value) {
    assert!(definitions().get(def).is_some(), "no definition {def}");
    let schema = json!({"$ref": format!("#/definitions/{def}"), "definitions": definitions()});
    let v = jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let errs: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errs.is_empty(),
        "{def} violations: {errs:?}\nbody: {body:#}"
    );
}

#[test]
fn the_strict_check_catches_wrong_and_invented_fields() {
    let v = |def: &str, b: Value| {
        let schema = json!({"$ref": format!("#/definitions/{def}"), "definitions": definitions()});
        jsonschema::draft4::options()
            .build(&schema)
            .unwrap()
            .is_valid(&b)
    };
    assert!(v(
        "ContactCreateOrUpdateResponse",
        json!({"contact_id": "ab7ab702-b935-11e9-8a58-fa163e6b01c1", "action": "created"})
    ));
    assert!(!v(
        "ContactCreateOrUpdateResponse",
        json!({"contact_id": 5})
    ));
    assert!(!v(
        "ContactCreateOrUpdateResponse",
        json!({"contact_id": "x", "actoin": "created"})
    ));
}

#[tokio::test]
async fn served_bodies_match_the_swagger() {
    let sim = sim(SimConfig {
        per_second: 1_000,
        processing: std::time::Duration::from_millis(300),
        ..fast()
    })
    .await;
    let api = Api::new(&sim);

    let (s, l) = api
        .post(
            "/contact_lists",
            &json!({"name": "Customers", "description": "d", "favorite": true}),
        )
        .await;
    assert_eq!(s, 201);
    assert_valid("ContactListPutPost", &l);
    let list = l["list_id"].as_str().unwrap().to_owned();
    let (s, f) = api
        .post(
            "/contact_custom_fields",
            &json!({"label": "tier", "type": "string"}),
        )
        .await;
    assert_eq!(s, 201);
    assert_valid("CustomField", &f);

    let rows = json!([
        {"email": "a@example.com", "first_name": "A", "last_name": "B", "job_title": "J", "company_name": "C",
         "phone": "555-0100", "work_phone": "555-0101", "street": "1 Main", "street2": "Apt 2", "city": "X",
         "state": "Y", "zip": "1", "country": "GB", "work_city": "Z", "birthday_month": 1, "birthday_day": 2,
         "anniversary": "2020-06-01", "cf:tier": "gold"},
        {"email": "bad-email"},
    ]);
    let (s, a) = api
        .post(
            "/activities/contacts_json_import",
            &json!({"list_ids": [list], "import_data": rows}),
        )
        .await;
    assert_eq!(s, 201);
    assert_valid("ActivityImport", &a);
    let id = a["activity_id"].as_str().unwrap().to_owned();
    let (_, early) = api.get(&format!("/activities/{id}")).await;
    assert_valid("Activity", &early);
    let done = api.wait_activity(&sim, &id).await;
    assert_eq!(done["state"], "completed");
    assert_valid("Activity", &done);

    sim.set_faults(Faults {
        activity_failure_rate: 1.0,
        ..Faults::default()
    });
    let (_, a2) = api
        .post(
            "/activities/contacts_json_import",
            &json!({"list_ids": [list], "import_data": [{"email": "f@example.com"}]}),
        )
        .await;
    let failed = api
        .wait_activity(&sim, a2["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(failed["state"], "failed");
    assert_valid("Activity", &failed);
    sim.set_faults(Faults::default());
    let (_, all) = api.get("/activities?limit=10").await;
    assert_eq!(all["activities"].as_array().unwrap().len(), 2);
    assert_valid("Activities", &all);

    let tier = f["custom_field_id"].clone();
    let (s, su) = api
        .post(
            "/contacts/sign_up_form",
            &json!({"email_address": "s@example.com", "first_name": "S", "phone_number": "555", "list_memberships": [list],
                    "custom_fields": [{"custom_field_id": tier, "value": "v"}], "birthday_month": 3, "birthday_day": 4,
                    "street_address": {"kind": "work", "street": "2 Side", "postal_code": "9"}}),
        )
        .await;
    assert_eq!(s, 201);
    assert_valid("ContactCreateOrUpdateResponse", &su);

    let (s, cs) = api
        .get("/contacts?include=custom_fields,list_memberships,phone_numbers,street_addresses,taggings,notes&include_count=true&limit=1")
        .await;
    assert_eq!(s, 200);
    assert_eq!(cs["contacts_count"], 2);
    assert!(
        cs["_links"]["next"]["href"]
            .as_str()
            .unwrap()
            .starts_with("/v3/contacts?")
    );
    assert_valid("Contacts", &cs);
    let (_, cs2) = api
        .get("/contacts?email=a%40example.com&include=custom_fields,phone_numbers,street_addresses")
        .await;
    assert_eq!(
        cs2["contacts"][0]["phone_numbers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_valid("Contacts", &cs2);

    let (_, ls) = api
        .get("/contact_lists?include_count=true&include_membership_count=all")
        .await;
    assert_eq!(ls["lists"][0]["membership_count"], 2);
    assert_valid("ContactListArray", &ls);
    let (_, fs) = api.get("/contact_custom_fields").await;
    assert_valid("CustomFields", &fs);

    // Error bodies: the array form and the 401 object form.
    let (s, e) = api
        .post("/contact_lists", &json!({"description": "no name"}))
        .await;
    assert_eq!(s, 400);
    assert_valid("APIErrorSchema", &e);
    let r = http()
        .get(format!("{}/contacts", sim.api_base_url()))
        .send()
        .await
        .unwrap();
    assert_valid("AuthorizationErrorSchema", &r.json().await.unwrap());
    sim.shutdown().await;
}

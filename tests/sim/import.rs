//! `contacts_json_import` over real HTTP: writes on completion, row errors, dedupe, the 4 MB cut.

use crate::sim_common;

use std::time::Duration;

use ccsync::sim::SimConfig;
use serde_json::{Value, json};
use sim_common::*;

fn roomy() -> SimConfig {
    SimConfig {
        per_second: 1_000,
        ..fast()
    }
}

#[tokio::test]
async fn import_writes_on_completion_with_row_errors_and_dedupe() {
    let sim = sim(SimConfig {
        processing: Duration::from_millis(400),
        ..roomy()
    })
    .await;
    let api = Api::new(&sim);
    let list = sim.create_list("Newsletter");
    sim.create_custom_field("tier");
    let (s, a) = api
        .post(
            "/activities/contacts_json_import",
            &json!({"list_ids": [list], "import_data": [
                {"email": "ada@example.com", "first_name": "Old", "cf:tier": "silver"},
                {"email": "ADA@example.com", "first_name": "Ada", "cf:tier": "gold", "birthday_month": 12, "birthday_day": 10},
                {"email": "bob@example.com", "cf:nope": "x"},
                {"email": "cy@example.com", "first_name": "x".repeat(51)},
                {"email": "not-an-email"},
                {"email": "dee@example.com", "favourite_colour": "red"},
            ]}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["state"], "initialized");
    let id = a["activity_id"].as_str().unwrap().to_owned();
    assert_eq!(a["_links"]["self"]["href"], format!("/v3/activities/{id}"));
    assert!(
        sim.contact("ada@example.com").is_none(),
        "nothing is written before completion"
    );

    let done = api.wait_activity(&sim, &id).await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["percent_done"], 100);
    let st = &done["status"];
    assert_eq!(st["items_total_count"], 6);
    assert_eq!(st["items_completed_count"], 6);
    assert_eq!(st["person_count"], 1);
    assert_eq!(st["error_count"], 3);
    assert_eq!(st["correctable_count"], 1);
    let errs = done["activity_errors"].as_array().unwrap();
    assert_eq!(errs.len(), 4);
    assert!(errs.iter().any(|e| {
        e.as_str()
            .unwrap()
            .contains("Custom field 'nope' does not exist")
    }));

    let c = sim.contact("Ada@Example.com").expect("written");
    assert_eq!(c.fields["first_name"], "Ada", "the last duplicate wins");
    assert_eq!(c.fields["cf:tier"], "gold");
    assert_eq!(c.permission_to_send, "implicit");
    assert!(c.list_ids.contains(&list));
    assert_eq!(c.writes, 1);
    assert_eq!(sim.contacts().len(), 1);

    // A second import only adds lists and only changes the fields it sends.
    let list2 = sim.create_list("VIP");
    let (_, a) = api
        .post("/activities/contacts_json_import", &json!({"list_ids": [list2], "import_data": [{"email": "ada@example.com", "last_name": "Lovelace"}]}))
        .await;
    api.wait_activity(&sim, a["activity_id"].as_str().unwrap())
        .await;
    let c = sim.contact("ada@example.com").unwrap();
    assert_eq!(
        (
            c.fields["first_name"].as_str(),
            c.fields["last_name"].as_str()
        ),
        ("Ada", "Lovelace")
    );
    assert_eq!(c.list_ids.len(), 2);
    assert_eq!(c.writes, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn oversized_import_keeps_only_rows_ending_within_4_000_000_bytes() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let list = sim.create_list("Big");
    let pad = "x".repeat(255);
    let rows: Vec<String> = (0..3_200)
        .map(|i| {
            json!({"email": format!("p{i}@example.com"), "street": pad, "street2": pad, "home_street": pad,
                   "work_street": pad, "other_street": pad})
            .to_string()
        })
        .collect();
    // Build the body by hand so the expected cut is computed independently of the simulator.
    let mut body = format!(r#"{{"list_ids":["{list}"],"import_data":["#);
    let mut expected = 0;
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r);
        if body.len() <= 4_000_000 {
            expected += 1;
        }
    }
    body.push_str("]}");
    assert!(body.len() > 4_000_000 && expected < rows.len() && expected > 0);
    let r = api
        .http
        .post(format!("{}/activities/contacts_json_import", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    let done = api
        .wait_activity(&sim, a["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(done["status"]["items_total_count"], expected as u64);
    assert_eq!(done["status"]["person_count"], expected as u64);
    assert_eq!(done["status"]["error_count"], 0);
    assert_eq!(sim.contacts().len(), expected);
    assert!(
        sim.contact(&format!("p{}@example.com", expected - 1))
            .is_some()
    );
    assert!(sim.contact(&format!("p{expected}@example.com")).is_none());
    sim.shutdown().await;
}

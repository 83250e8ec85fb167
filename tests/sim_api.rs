//! The simulator's `/v3` API over real HTTP: auth, limits, validation, imports, sign-up form.

mod sim_common;

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
async fn unauthorized_has_cc_body_and_header() {
    let sim = sim(fast()).await;
    let url = format!("{}/contact_lists", sim.api_base_url());
    let (at, _) = sim.issue_tokens(CLIENT, "default");
    let cases: Vec<Option<String>> = vec![None, Some("garbage".into()), Some(format!("{at}x"))];
    for bearer in cases {
        let mut rq = http().get(&url);
        if let Some(b) = &bearer {
            rq = rq.bearer_auth(b);
        }
        let r = rq.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=api.cc.email");
        assert_eq!(
            r.text().await.unwrap(),
            r#"{"error_key":"unauthorized","error_message":"Unauthorized"}"#
        );
    }
    assert_eq!(
        http()
            .get(&url)
            .bearer_auth(&at)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Expired on the simulator clock.
    sim.advance_clock(Duration::from_secs(86_400));
    assert_eq!(
        http()
            .get(&url)
            .bearer_auth(&at)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Revoked.
    let (at, _) = sim.issue_tokens(CLIENT, "default");
    assert_eq!(
        http()
            .get(&url)
            .bearer_auth(&at)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    sim.revoke_all();
    assert_eq!(
        http()
            .get(&url)
            .bearer_auth(&at)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn fifth_call_inside_one_second_is_throttled() {
    let sim = sim(fast()).await;
    let api = Api::new(&sim);
    for _ in 0..4 {
        assert_eq!(api.get("/contact_lists").await.0, 200);
    }
    let r = api
        .http
        .get(format!("{}/contact_lists", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error_key":"throttled","error_message":"Too Many Requests"}"#
    );
    // One simulated second later the window has room again.
    sim.advance_clock(Duration::from_millis(1_001));
    assert_eq!(api.get("/contact_lists").await.0, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn quota_exceeded_until_simulated_utc_midnight() {
    let sim = sim(SimConfig {
        daily_quota: 3,
        ..roomy()
    })
    .await;
    let api = Api::new(&sim);
    for _ in 0..3 {
        assert_eq!(api.get("/contact_lists").await.0, 200);
    }
    for _ in 0..2 {
        let (s, b) = api.get("/contact_lists").await;
        assert_eq!(
            (s, &b),
            (
                429,
                &json!({"error_key": "quota_exceeded", "error_message": "Limit Exceeded"})
            )
        );
    }
    assert_eq!(
        sim.counters().quota_used_today[CLIENT],
        3,
        "refused calls do not spend quota"
    );
    // One second before midnight: still exceeded. At midnight: served again.
    let now = sim.now();
    let midnight = (now.date() + time::Duration::days(1))
        .midnight()
        .assume_utc();
    let to_midnight = (midnight - now).unsigned_abs();
    sim.advance_clock(to_midnight - Duration::from_secs(1));
    assert_eq!(
        api.get("/contact_lists").await.1["error_key"],
        "quota_exceeded"
    );
    sim.advance_clock(Duration::from_millis(1_500));
    assert_eq!(api.get("/contact_lists").await.0, 200);
    sim.shutdown().await;
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

#[tokio::test]
async fn bad_bodies_get_cc_error_arrays() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    let imp = "/activities/contacts_json_import";
    let cases = [
        json!({"list_ids": [], "import_data": []}),
        json!({"list_ids": [list]}),
        json!({"list_ids": [list], "import_data": "nope"}),
        json!({"list_ids": [uuid::Uuid::new_v4()], "import_data": [{"email": "a@b.co"}]}),
        json!({"list_ids": (0..51).map(|_| list).collect::<Vec<_>>(), "import_data": []}),
    ];
    for c in cases {
        let (s, b) = api.post(imp, &c).await;
        assert_eq!(s, 400, "{c}");
        assert_eq!(b[0]["error_key"], "contacts.api.validation.error", "{b}");
        assert!(b[0]["error_message"].is_string());
    }
    let many: Vec<Value> = (0..40_001)
        .map(|i| json!({"email": format!("{i}@e.co")}))
        .collect();
    let (s, b) = api
        .post(imp, &json!({"list_ids": [list], "import_data": many}))
        .await;
    assert_eq!(s, 400, "{b}");
    // Not JSON → 415; malformed JSON → 400.
    let r = api
        .http
        .post(format!("{}{imp}", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = api
        .http
        .post(format!("{}{imp}", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()[0]["error_key"],
        "contacts.api.bad.request"
    );
    // sign_up_form: list_memberships is required by the Swagger; email ≤ 50.
    let (s, b) = api
        .post(
            "/contacts/sign_up_form",
            &json!({"email_address": "a@b.co"}),
        )
        .await;
    assert_eq!(
        (s, b[0]["error_key"].as_str()),
        (400, Some("contacts.api.validation.error"))
    );
    let long = format!("{}@example.com", "a".repeat(45));
    let (s, _) = api
        .post(
            "/contacts/sign_up_form",
            &json!({"email_address": long, "list_memberships": [list]}),
        )
        .await;
    assert_eq!(s, 400);
    // Unknown activity → 404 array.
    let (s, b) = api
        .get(&format!("/activities/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(
        (s, b[0]["error_key"].as_str()),
        (404, Some("activities.api.not_found"))
    );
    assert_eq!(sim.counters().activities, 0, "nothing was queued");
    sim.shutdown().await;
}

#[tokio::test]
async fn sign_up_form_creates_then_updates_with_explicit_permission() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let (l1, l2) = (sim.create_list("A"), sim.create_list("B"));
    let tier = sim.create_custom_field("tier");
    let body = json!({"email_address": "eve@example.com", "first_name": "Eve", "list_memberships": [l1],
        "custom_fields": [{"custom_field_id": tier, "value": "gold"}],
        "street_address": {"kind": "home", "city": "Paris", "postal_code": "75001"}});
    let (s, r) = api.post("/contacts/sign_up_form", &body).await;
    assert_eq!((s, r["action"].as_str()), (201, Some("created")));
    let (s, r2) = api.post("/contacts/sign_up_form", &json!({"email_address": "EVE@example.com", "last_name": "X", "list_memberships": [l2]})).await;
    assert_eq!((s, r2["action"].as_str()), (200, Some("updated")));
    assert_eq!(r["contact_id"], r2["contact_id"]);
    let c = sim.contact("eve@example.com").unwrap();
    assert_eq!(c.permission_to_send, "explicit");
    assert_eq!(
        (
            c.fields["first_name"].as_str(),
            c.fields["last_name"].as_str(),
            c.fields["zip"].as_str()
        ),
        ("Eve", "X", "75001")
    );
    assert_eq!(c.fields["cf:tier"], "gold");
    assert_eq!(c.list_ids.len(), 2);

    let (s, got) = api.get("/contacts?email=Eve%40example.com&include=custom_fields,list_memberships,street_addresses&include_count=true").await;
    assert_eq!(s, 200);
    assert_eq!(got["contacts_count"], 1);
    let gc = &got["contacts"][0];
    assert_eq!(gc["email_address"]["permission_to_send"], "explicit");
    assert_eq!(gc["custom_fields"][0]["custom_field_id"], tier.to_string());
    assert_eq!(gc["list_memberships"].as_array().unwrap().len(), 2);
    assert_eq!(gc["street_addresses"][0]["postal_code"], "75001");
    assert_eq!(
        api.get("/contacts?email=nobody%40example.com").await.1["contacts"],
        json!([])
    );
    // An existing import contact keeps its fields and becomes explicit.
    sim.shutdown().await;
}

#[tokio::test]
async fn lists_and_custom_fields_with_the_100_limit() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let (s, l) = api
        .post(
            "/contact_lists",
            &json!({"name": "Customers", "description": "all"}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        api.post("/contact_lists", &json!({"name": "Customers"}))
            .await
            .0,
        409
    );
    let (_, all) = api.get("/contact_lists?include_count=true").await;
    assert_eq!(all["lists"][0]["list_id"], l["list_id"]);
    assert_eq!(all["lists_count"], 1);
    let (s, f) = api
        .post(
            "/contact_custom_fields",
            &json!({"label": "Loyalty tier", "type": "string"}),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    assert_eq!(f["name"], "Loyalty_tier");
    for i in 1..100 {
        sim.create_custom_field(&format!("f{i}"));
    }
    let (s, b) = api
        .post(
            "/contact_custom_fields",
            &json!({"label": "one too many", "type": "string"}),
        )
        .await;
    assert_eq!(
        (s, b[0]["error_key"].as_str()),
        (400, Some("contacts.api.validation.error"))
    );
    assert_eq!(
        api.get("/contact_custom_fields?limit=100").await.1["custom_fields"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    sim.shutdown().await;
}

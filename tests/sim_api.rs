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

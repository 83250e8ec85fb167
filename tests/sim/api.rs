//! The simulator's `/v3` API over real HTTP: auth, limits, validation, imports, sign-up form.

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

// ---- Consent: PUT, opt-outs, deletes, list removals (issue 15) ----

/// An import of `emails` onto `list` (one activity), waited to completion.
async fn import_onto(sim: &ccsync::sim::Sim, api: &Api, list: &str, rows: Value) {
    let (s, a) = api
        .post(
            "/activities/contacts_json_import",
            &json!({"import_data": rows, "list_ids": [list]}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let done = api
        .wait_activity(sim, a["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(done["state"], "completed", "{done}");
}

async fn find(api: &Api, query: &str) -> Vec<Value> {
    let (s, v) = api.get(&format!("/contacts?{query}")).await;
    assert_eq!(s, 200, "{v}");
    v["contacts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn put_replaces_top_level_properties_and_keeps_sub_resources() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let l = sim.create_list("L").to_string();
    sim.create_custom_field("tier");
    import_onto(
        &sim,
        &api,
        &l,
        json!([{"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace",
                "job_title": "Analyst", "cf:tier": "gold"}]),
    )
    .await;
    let id = sim.contact("ada@example.com").unwrap().contact_id;
    // Only the permission and one name: the other top-level properties are cleared.
    let (s, v) = api
        .put(
            &format!("/contacts/{id}"),
            &json!({"email_address": {"address": "ada@example.com",
                     "permission_to_send": "unsubscribed", "opt_out_reason": "too many emails"},
                    "first_name": "Ada", "update_source": "Account"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let c = sim.contact("ada@example.com").unwrap();
    assert_eq!(c.fields.get("first_name").map(String::as_str), Some("Ada"));
    assert!(!c.fields.contains_key("last_name"), "omitted → null");
    assert!(!c.fields.contains_key("job_title"));
    assert_eq!(
        c.fields.get("cf:tier").map(String::as_str),
        Some("gold"),
        "sub-resource kept"
    );
    assert_eq!(c.list_ids.len(), 1, "lists kept");
    assert_eq!(c.permission_to_send, "unsubscribed");
    assert_eq!(c.opt_out_source.as_deref(), Some("Account"));
    assert_eq!(c.opt_out_reason.as_deref(), Some("too many emails"));
    assert_eq!(v["email_address"]["opt_out_source"], "Account");
    // update_source is required (Swagger), an unknown id is 404, a taken address 409.
    let (s, _) = api
        .put(
            &format!("/contacts/{id}"),
            &json!({"email_address": {"address": "ada@example.com"}}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .put(
            &format!("/contacts/{}", uuid::Uuid::new_v4()),
            &json!({"email_address": {"address": "x@example.com"}, "update_source": "Account"}),
        )
        .await;
    assert_eq!(s, 404);
    import_onto(&sim, &api, &l, json!([{"email": "bob@example.com"}])).await;
    let (s, _) = api
        .put(
            &format!("/contacts/{id}"),
            &json!({"email_address": {"address": "bob@example.com"}, "update_source": "Account"}),
        )
        .await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn an_email_link_opt_out_is_listed_by_status_and_optout_after() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let l = sim.create_list("L").to_string();
    import_onto(
        &sim,
        &api,
        &l,
        json!([{"email": "a@example.com"}, {"email": "b@example.com"}, {"email": "c@example.com"}]),
    )
    .await;
    let before = sim.now();
    sim.advance_clock(Duration::from_secs(5));
    // Through the handle and through the admin API (what subprocess tests use).
    let a = sim
        .unsubscribe_by_link("a@example.com", Some("not interested"))
        .unwrap();
    assert_eq!(a.opt_out_source.as_deref(), Some("Contact"));
    let mid = sim.now();
    sim.advance_clock(Duration::from_secs(5));
    let r = http()
        .post(format!(
            "{}/_sim/contacts/b@example.com/unsubscribe",
            sim.base_url()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        sim.unsubscribe_by_link("nobody@example.com", None)
            .is_none()
    );
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let emails = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .map(|c| c["email_address"]["address"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        emails(find(&api, "status=unsubscribed").await),
        ["a@example.com", "b@example.com"]
    );
    let since = |t| format!("status=unsubscribed&optout_after={}", fmt(t));
    assert_eq!(
        emails(find(&api, &since(before)).await),
        ["a@example.com", "b@example.com"]
    );
    // Strictly after: the opt-out at `mid` itself is not repeated.
    assert_eq!(emails(find(&api, &since(mid)).await), ["b@example.com"]);
    let got = find(&api, &since(before)).await;
    assert_eq!(got[0]["email_address"]["opt_out_source"], "Contact");
    assert_eq!(got[0]["email_address"]["opt_out_reason"], "not interested");
    assert_eq!(got[0]["email_address"]["opt_out_date"], fmt(mid));
    // `active` leaves them out; the default (no status) lists every non-deleted contact.
    assert_eq!(emails(find(&api, "status=active").await), ["c@example.com"]);
    assert_eq!(find(&api, "").await.len(), 3);
    assert_eq!(find(&api, "email=A@example.com").await.len(), 1);
    let (s, _) = api.get("/contacts?optout_after=yesterday").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn sign_up_form_re_subscribes_an_unsubscribed_contact_as_cc_does() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let l = sim.create_list("L").to_string();
    import_onto(&sim, &api, &l, json!([{"email": "a@example.com"}])).await;
    sim.unsubscribe_by_link("a@example.com", None).unwrap();
    // An import leaves the opt-out alone (reference §6.1: only the fields sent change).
    import_onto(
        &sim,
        &api,
        &l,
        json!([{"email": "a@example.com", "first_name": "A"}]),
    )
    .await;
    assert_eq!(
        sim.contact("a@example.com").unwrap().permission_to_send,
        "unsubscribed"
    );
    let (s, _) = api
        .post(
            "/contacts/sign_up_form",
            &json!({"email_address": "a@example.com", "list_memberships": [l]}),
        )
        .await;
    assert_eq!(s, 200);
    let c = sim.contact("a@example.com").unwrap();
    assert_eq!(
        c.permission_to_send, "explicit",
        "reference §5.1: even if they unsubscribed"
    );
    assert!(c.opt_out_date.is_none());
}

#[tokio::test]
async fn contact_delete_and_list_removal_are_activities_that_change_contacts_on_completion() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let (l1, l2) = (
        sim.create_list("L1").to_string(),
        sim.create_list("L2").to_string(),
    );
    for l in [&l1, &l2] {
        import_onto(
            &sim,
            &api,
            l,
            json!([{"email": "a@example.com"}, {"email": "b@example.com"}]),
        )
        .await;
    }
    let id = |e: &str| sim.contact(e).unwrap().contact_id.to_string();
    // Remove L1 from a only.
    let (s, a) = api
        .post(
            "/activities/remove_list_memberships",
            &json!({"source": {"contact_ids": [id("a@example.com")]}, "list_ids": [l1]}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["state"], "initialized");
    assert_eq!(
        sim.contact("a@example.com").unwrap().list_ids.len(),
        2,
        "not before completion"
    );
    let done = api
        .wait_activity(&sim, a["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["status"]["items_total_count"], 1);
    assert_eq!(done["status"]["items_completed_count"], 1);
    assert_eq!(done["status"]["list_count"], 1);
    let a_lists: Vec<String> = sim
        .contact("a@example.com")
        .unwrap()
        .list_ids
        .iter()
        .map(|u| u.to_string())
        .collect();
    assert_eq!(a_lists, std::slice::from_ref(&l2));
    assert_eq!(sim.contact("b@example.com").unwrap().list_ids.len(), 2);
    // Delete a (and an id that names nobody: skipped, not counted).
    let (s, d) = api
        .post(
            "/activities/contact_delete",
            &json!({"contact_ids": [id("a@example.com"), uuid::Uuid::new_v4()]}),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    let done = api
        .wait_activity(&sim, d["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(done["status"]["items_total_count"], 2);
    assert_eq!(done["status"]["items_completed_count"], 1);
    let gone = sim.contact("a@example.com").unwrap();
    assert!(gone.deleted_at.is_some() && gone.list_ids.is_empty());
    // Hidden from the default look-up, visible with status=all|deleted (reference §5.4).
    assert!(find(&api, "email=a@example.com").await.is_empty());
    assert_eq!(find(&api, "email=a@example.com&status=all").await.len(), 1);
    assert_eq!(find(&api, "status=deleted").await.len(), 1);
    // Revivable: a sign-up form brings it back (reference §5.1).
    let (s, _) = api
        .post(
            "/contacts/sign_up_form",
            &json!({"email_address": "a@example.com", "list_memberships": [l2]}),
        )
        .await;
    assert_eq!(s, 200);
    assert!(sim.contact("a@example.com").unwrap().deleted_at.is_none());
    // Shapes CC refuses: both sources, neither, over 500 ids, unknown target list.
    let ids: Vec<String> = (0..501).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for bad in [
        json!({"contact_ids": [id("b@example.com")], "list_ids": [l1]}),
        json!({}),
        json!({"contact_ids": ids}),
    ] {
        let (s, _) = api.post("/activities/contact_delete", &bad).await;
        assert_eq!(s, 400, "{bad}");
    }
    let (s, _) = api
        .post(
            "/activities/remove_list_memberships",
            &json!({"source": {"contact_ids": [id("b@example.com")]},
                    "list_ids": [uuid::Uuid::new_v4()]}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .post(
            "/activities/remove_list_memberships",
            &json!({"source": {"all_active_contacts": true}, "list_ids": [l1]}),
        )
        .await;
    assert_eq!(s, 400, "not simulated");
}

//! One store per CC account (issue 13 point 7): every `/v3` call reads and writes the store of the
//! account its access token names; rate limits and the daily quota stay per API key.

use crate::sim_common;

use ccsync::sim::{Sim, SimConfig};
use serde_json::{Value, json};
use sim_common::*;

fn roomy() -> SimConfig {
    SimConfig {
        per_second: 1_000,
        ..fast()
    }
}

async fn import(api: &Api, lists: &[uuid::Uuid], rows: Value) -> (u16, Value) {
    api.post(
        "/activities/contacts_json_import",
        &json!({"list_ids": lists, "import_data": rows}),
    )
    .await
}

fn names(v: &Value, key: &str, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[field].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn the_same_email_lives_separately_in_each_account() {
    let sim = sim(roomy()).await;
    let (a, b) = (
        Api::for_account(&sim, "acme"),
        Api::for_account(&sim, "beta"),
    );
    let la = sim.create_list_for("acme", "Customers");
    let lb = sim.create_list_for("beta", "Customers");
    assert_ne!(la, lb, "each account has its own list ids");
    // Imports: same email, different names.
    let (s, ia) = import(
        &a,
        &[la],
        json!([{"email": "ada@example.com", "first_name": "Acme"}]),
    )
    .await;
    assert_eq!(s, 201, "{ia}");
    let (s, ib) = import(
        &b,
        &[lb],
        json!([{"email": "ADA@example.com", "first_name": "Beta"}]),
    )
    .await;
    assert_eq!(s, 201, "{ib}");
    assert_eq!(
        a.wait_activity(&sim, ia["activity_id"].as_str().unwrap())
            .await["state"],
        "completed"
    );
    assert_eq!(
        b.wait_activity(&sim, ib["activity_id"].as_str().unwrap())
            .await["state"],
        "completed"
    );
    let ca = sim.contact_of("acme", "ada@example.com").expect("in acme");
    let cb = sim.contact_of("beta", "ada@example.com").expect("in beta");
    assert_eq!(ca.fields["first_name"], "Acme");
    assert_eq!(cb.fields["first_name"], "Beta");
    assert_eq!(cb.email, "ADA@example.com", "beta's own spelling");
    assert_ne!(ca.contact_id, cb.contact_id);
    assert_eq!(ca.list_ids.iter().copied().collect::<Vec<_>>(), vec![la]);
    assert_eq!(cb.list_ids.iter().copied().collect::<Vec<_>>(), vec![lb]);
    assert_eq!((ca.writes, cb.writes), (1, 1));
    // Sign-up form: same email, different names; each account's contact changes alone.
    let signup = |name: &str, list: uuid::Uuid| json!({"email_address": "grace@example.com", "first_name": name, "list_memberships": [list]});
    assert_eq!(
        a.post("/contacts/sign_up_form", &signup("Acme", la))
            .await
            .0,
        201
    );
    assert_eq!(
        b.post("/contacts/sign_up_form", &signup("Beta", lb))
            .await
            .0,
        201,
        "created in beta too"
    );
    assert_eq!(
        sim.contact_of("acme", "grace@example.com").unwrap().fields["first_name"],
        "Acme"
    );
    assert_eq!(
        sim.contact_of("beta", "grace@example.com").unwrap().fields["first_name"],
        "Beta"
    );
    // GET /contacts sees only the caller's.
    let (s, v) = a.get("/contacts?email=grace@example.com").await;
    assert_eq!(s, 200);
    assert_eq!(v["contacts"][0]["first_name"], "Acme");
    assert_eq!(v["contacts"].as_array().unwrap().len(), 1);
    // The default account holds nothing; the counters total every account.
    assert!(sim.contacts().is_empty());
    assert!(sim.contact("ada@example.com").is_none());
    assert_eq!(sim.contacts_of("acme").len(), 2);
    assert_eq!(sim.contacts_of("nobody").len(), 0);
    let c = sim.counters();
    assert_eq!(
        (c.contacts, c.activities, c.activities_completed),
        (4, 2, 2)
    );
    assert_eq!(c.contacts_by_account["acme"], 2);
    assert_eq!(c.contacts_by_account["beta"], 2);
    assert_eq!(sim.accounts(), vec!["acme".to_string(), "beta".to_string()]);
    sim.shutdown().await;
}

#[tokio::test]
async fn another_accounts_list_is_unknown() {
    let sim = sim(roomy()).await;
    let (a, b) = (
        Api::for_account(&sim, "acme"),
        Api::for_account(&sim, "beta"),
    );
    let la = sim.create_list_for("acme", "Customers");
    let rows = json!([{"email": "x@example.com"}]);
    let (s, body) = import(&b, &[la], rows.clone()).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body[0]["error_key"], "contacts.api.validation.error");
    assert!(
        body[0]["error_message"]
            .as_str()
            .unwrap()
            .contains(&la.to_string())
    );
    // Also refused by the sign-up form.
    let (s, body) = b
        .post(
            "/contacts/sign_up_form",
            &json!({"email_address": "x@example.com", "list_memberships": [la]}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    // The owner's import takes it; nothing reached beta.
    assert_eq!(import(&a, &[la], rows).await.0, 201);
    assert!(sim.contacts_of("beta").is_empty());
    // A list made through the default helper is the default account's only.
    let ld = sim.create_list("Customers");
    assert_eq!(
        import(&a, &[ld], json!([{"email": "y@example.com"}]))
            .await
            .0,
        400
    );
    assert_eq!(
        import(&Api::new(&sim), &[ld], json!([{"email": "y@example.com"}]))
            .await
            .0,
        201
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn lists_custom_fields_and_activities_show_only_the_callers() {
    let sim = sim(roomy()).await;
    let (a, b) = (
        Api::for_account(&sim, "acme"),
        Api::for_account(&sim, "beta"),
    );
    sim.create_list_for("acme", "Acme only");
    sim.create_custom_field_for("acme", "tier");
    // Names are unique per account, not across: beta makes the same names over HTTP.
    let (s, lb) = b
        .post("/contact_lists", &json!({"name": "Acme only"}))
        .await;
    assert_eq!(s, 201, "{lb}");
    assert_eq!(
        b.post("/contact_lists", &json!({"name": "Beta only"}))
            .await
            .0,
        201
    );
    let (s, fb) = b
        .post(
            "/contact_custom_fields",
            &json!({"label": "tier", "type": "string"}),
        )
        .await;
    assert_eq!(s, 201, "{fb}");
    let (_, v) = a.get("/contact_lists?include_count=true").await;
    assert_eq!(names(&v, "lists", "name"), vec!["Acme only"]);
    assert_eq!(v["lists_count"], 1);
    let (_, v) = b.get("/contact_lists").await;
    assert_eq!(names(&v, "lists", "name"), vec!["Acme only", "Beta only"]);
    assert!(
        v["lists"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["list_id"] != json!(sim.create_list_for("acme", "Acme only")))
    );
    let (_, v) = a.get("/contact_custom_fields").await;
    assert_eq!(v["custom_fields"].as_array().unwrap().len(), 1);
    assert_ne!(
        v["custom_fields"][0]["custom_field_id"],
        fb["custom_field_id"]
    );
    let (_, v) = Api::new(&sim).get("/contact_custom_fields").await;
    assert_eq!(
        v["custom_fields"],
        json!([]),
        "the default account has none"
    );
    // A custom field exists only in its account: beta's import may use cf:tier (its own), a
    // field only acme has is an unknown column for beta.
    sim.create_custom_field_for("acme", "region");
    let (_, ib) = import(
        &b,
        &[lb["list_id"].as_str().unwrap().parse().unwrap()],
        json!([{"email": "z@example.com", "cf:tier": "gold", "cf:region": "north"}]),
    )
    .await;
    let done = b
        .wait_activity(&sim, ib["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(done["status"]["error_count"], 1, "{done}");
    // Activities: acme's is a 404 for beta and absent from beta's list.
    let la = sim.create_list_for("acme", "Acme only");
    let (s, ia) = import(&a, &[la], json!([{"email": "w@example.com"}])).await;
    assert_eq!(s, 201);
    let id = ia["activity_id"].as_str().unwrap();
    let (s, body) = b.get(&format!("/activities/{id}")).await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body[0]["error_key"], "activities.api.not_found");
    assert_eq!(a.get(&format!("/activities/{id}")).await.0, 200);
    let (_, v) = b.get("/activities").await;
    let ids: Vec<&str> = v["activities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["activity_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![ib["activity_id"].as_str().unwrap()]);
    let (_, v) = a.get("/activities").await;
    assert_eq!(v["activities"].as_array().unwrap().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_queued_activities_cap_is_per_account() {
    let sim = sim(SimConfig {
        max_queued_activities: 2,
        processing: std::time::Duration::from_secs(60),
        ..roomy()
    })
    .await;
    let (a, b) = (
        Api::for_account(&sim, "acme"),
        Api::for_account(&sim, "beta"),
    );
    let (la, lb) = (
        sim.create_list_for("acme", "L"),
        sim.create_list_for("beta", "L"),
    );
    let row = json!([{"email": "q@example.com"}]);
    for _ in 0..2 {
        assert_eq!(import(&a, &[la], row.clone()).await.0, 201);
    }
    assert_eq!(import(&a, &[la], row.clone()).await.0, 429);
    assert_eq!(
        import(&b, &[lb], row).await.0,
        201,
        "beta has its own 1,000"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limits_and_quota_stay_per_api_key_across_accounts() {
    let sim = sim(SimConfig {
        daily_quota: 6,
        ..fast()
    })
    .await;
    let (a, b) = (
        Api::for_account(&sim, "acme"),
        Api::for_account(&sim, "beta"),
    );
    for _ in 0..2 {
        assert_eq!(a.get("/contact_lists").await.0, 200);
        assert_eq!(b.get("/contact_lists").await.0, 200);
    }
    // Four calls this second on the key, whichever the account: the fifth is throttled.
    let (s, v) = b.get("/contact_lists").await;
    assert_eq!((s, v["error_key"].as_str()), (429, Some("throttled")));
    sim.advance_clock(std::time::Duration::from_millis(1_001));
    assert_eq!(a.get("/contact_lists").await.0, 200);
    assert_eq!(b.get("/contact_lists").await.0, 200);
    let (s, v) = a.get("/contact_lists").await;
    assert_eq!((s, v["error_key"].as_str()), (429, Some("quota_exceeded")));
    assert_eq!(sim.counters().quota_used_today[CLIENT], 6);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_device_flow_approved_for_an_account_writes_to_its_store() {
    let sim = sim(roomy()).await;
    let d: Value = http()
        .post(format!("{}/device/authorize", sim.auth_base_url()))
        .form(&[
            ("client_id", CLIENT),
            ("scope", "contact_data offline_access"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(sim.approve_for(d["user_code"].as_str().unwrap(), "acme"));
    let (s, t) = token(
        &sim,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", CLIENT),
            ("device_code", d["device_code"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let api = Api::with_token(&sim, t["access_token"].as_str().unwrap().to_owned());
    let list = sim.create_list_for("acme", "Signups");
    let body = json!({"email_address": "dev@example.com", "first_name": "Dev", "list_memberships": [list]});
    assert_eq!(api.post("/contacts/sign_up_form", &body).await.0, 201);
    assert!(sim.contact_of("acme", "dev@example.com").is_some());
    assert!(sim.contact("dev@example.com").is_none());
    sim.shutdown().await;
}

async fn admin(
    sim: &Sim,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rq = http().request(method, format!("{}/_sim{path}", sim.base_url()));
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let r = rq.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn admin_endpoints_take_an_account() {
    use reqwest::Method;
    let sim = sim(roomy()).await;
    let (s, l) = admin(
        &sim,
        Method::POST,
        "/lists?account=acme",
        Some(json!({"name": "A"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = admin(
        &sim,
        Method::POST,
        "/custom_fields?account=acme",
        Some(json!({"name": "tier"})),
    )
    .await;
    assert_eq!(s, 201);
    // Same name again in `default` (no ?account=) is no conflict.
    assert_eq!(
        admin(&sim, Method::POST, "/lists", Some(json!({"name": "A"})))
            .await
            .0,
        201
    );
    let (_, v) = admin(&sim, Method::GET, "/lists?account=acme", None).await;
    assert_eq!(v, json!([{"list_id": l["list_id"], "name": "A"}]));
    let (_, v) = admin(&sim, Method::GET, "/custom_fields", None).await;
    assert_eq!(v, json!([]));
    let (_, v) = admin(&sim, Method::GET, "/custom_fields?account=acme", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let a = Api::for_account(&sim, "acme");
    let (_, ia) = import(
        &a,
        &[l["list_id"].as_str().unwrap().parse().unwrap()],
        json!([{"email": "adm@example.com", "cf:tier": "gold"}]),
    )
    .await;
    a.wait_activity(&sim, ia["activity_id"].as_str().unwrap())
        .await;
    let (_, v) = admin(&sim, Method::GET, "/contacts?account=acme", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["fields"]["cf:tier"], "gold");
    assert_eq!(
        admin(&sim, Method::GET, "/contacts", None).await.1,
        json!([])
    );
    assert_eq!(
        admin(
            &sim,
            Method::GET,
            "/contacts/adm@example.com?account=acme",
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        admin(&sim, Method::GET, "/contacts/adm@example.com", None)
            .await
            .0,
        404
    );
    let (_, v) = admin(&sim, Method::GET, "/activities?account=acme", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(
        admin(&sim, Method::GET, "/activities", None).await.1,
        json!([])
    );
    let (_, v) = admin(&sim, Method::GET, "/accounts", None).await;
    assert_eq!(
        v,
        json!([
            {"account": "acme", "contacts": 1, "lists": 1, "custom_fields": 1, "activities": 1},
            {"account": "default", "contacts": 0, "lists": 1, "custom_fields": 0, "activities": 0},
        ])
    );
    let (_, c) = admin(&sim, Method::GET, "/counters", None).await;
    assert_eq!(c["contacts_by_account"], json!({"acme": 1, "default": 0}));
    // Reads of an unknown account answer empty and create nothing.
    assert_eq!(
        admin(&sim, Method::GET, "/lists?account=nobody", None)
            .await
            .1,
        json!([])
    );
    assert_eq!(
        sim.accounts(),
        vec!["acme".to_string(), "default".to_string()]
    );
    sim.shutdown().await;
}

//! Fault switches and the admin API, over real HTTP.

mod sim_common;

use std::time::Duration;

use ccsync::sim::{Faults, LostMode, LostResponse, SimConfig};
use serde_json::{Value, json};
use sim_common::*;

fn roomy() -> SimConfig {
    SimConfig {
        per_second: 1_000,
        ..fast()
    }
}

async fn import(api: &Api, list: uuid::Uuid, rows: Value) -> Value {
    let (s, a) = api
        .post(
            "/activities/contacts_json_import",
            &json!({"list_ids": [list], "import_data": rows}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    a
}

#[tokio::test]
async fn rejected_rows_and_failed_activities() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    sim.set_faults(Faults {
        reject_emails_containing: Some("BOUNCE".into()),
        ..Faults::default()
    });
    let a = import(
        &api,
        list,
        json!([{"email": "ok@example.com"}, {"email": "bounce@example.com"}]),
    )
    .await;
    let done = api
        .wait_activity(&sim, a["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["status"]["error_count"], 1);
    assert_eq!(done["status"]["person_count"], 1);
    assert!(sim.contact("ok@example.com").is_some());
    assert!(sim.contact("bounce@example.com").is_none());

    sim.set_faults(Faults {
        activity_failure_rate: 1.0,
        ..Faults::default()
    });
    let a = import(&api, list, json!([{"email": "lost@example.com"}])).await;
    let done = api
        .wait_activity(&sim, a["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(done["state"], "failed");
    assert!(!done["activity_errors"].as_array().unwrap().is_empty());
    assert!(
        sim.contact("lost@example.com").is_none(),
        "a failed activity writes nothing"
    );
    let (_, failed) = api.get("/activities?state=failed").await;
    assert_eq!(failed["activities"].as_array().unwrap().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn activities_complete_out_of_order() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    sim.set_faults(Faults {
        extra_processing_ms: 1_500,
        ..Faults::default()
    });
    let older = import(
        &api,
        list,
        json!([{"email": "x@example.com", "first_name": "Older"}]),
    )
    .await;
    sim.set_faults(Faults::default());
    let newer = import(
        &api,
        list,
        json!([{"email": "x@example.com", "first_name": "Newer"}]),
    )
    .await;
    let n = api
        .wait_activity(&sim, newer["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(n["state"], "completed");
    let (_, o) = api
        .get(&format!(
            "/activities/{}",
            older["activity_id"].as_str().unwrap()
        ))
        .await;
    assert!(
        matches!(o["state"].as_str(), Some("initialized" | "processing")),
        "{o}"
    );
    assert_eq!(
        sim.contact("x@example.com").unwrap().fields["first_name"],
        "Newer"
    );
    let o = api
        .wait_activity(&sim, older["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(o["state"], "completed");
    // The older payload landed last and won: what a worker must guard against.
    let c = sim.contact("x@example.com").unwrap();
    assert_eq!(c.fields["first_name"], "Older");
    assert_eq!(c.writes, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_commit_nothing_and_spend_no_quota() {
    let sim = sim(SimConfig {
        daily_quota: 5,
        ..roomy()
    })
    .await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    sim.set_faults(Faults {
        error_rate: 1.0,
        path_prefix: Some("/v3/".into()),
        ..Faults::default()
    });
    for _ in 0..3 {
        let (s, b) = api
            .post(
                "/activities/contacts_json_import",
                &json!({"list_ids": [list], "import_data": [{"email": "a@b.co"}]}),
            )
            .await;
        assert_eq!(s, 503);
        assert_eq!(b[0]["error_key"], "server.unavailable");
    }
    // The token endpoint is outside the prefix and keeps working.
    let (_, rt) = sim.issue_tokens(CLIENT, "default");
    assert_eq!(refresh(&sim, &rt).await.0, 200);
    sim.set_faults(Faults::default());
    assert_eq!(sim.counters().activities, 0);
    assert_eq!(sim.counters().quota_used_today.get(CLIENT), None);
    assert_eq!(sim.counters().by_status[&503], 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn lost_import_response_still_imports() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    sim.set_faults(Faults {
        import_lost_response: Some(LostResponse {
            mode: LostMode::Drop,
            times: Some(1),
        }),
        ..Faults::default()
    });
    let r = api
        .http
        .post(format!("{}/activities/contacts_json_import", api.base))
        .bearer_auth(&api.token)
        .json(&json!({"list_ids": [list], "import_data": [{"email": "ghost@example.com"}]}))
        .send()
        .await;
    assert!(r.is_err(), "no response: {r:?}");
    assert!(
        eventually(10, || sim.contact("ghost@example.com").is_some()).await,
        "the import ran anyway"
    );
    let rec = sim
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("contacts_json_import"))
        .unwrap();
    assert_eq!((rec.status, rec.fault.as_deref()), (None, Some("drop")));
    // The switch turned itself off: the next import is answered.
    import(&api, list, json!([{"email": "next@example.com"}])).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn hanging_requests_and_latency() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    sim.set_faults(Faults {
        hang_rate: 1.0,
        ..Faults::default()
    });
    let r = short
        .get(format!("{}/contact_lists", api.base))
        .bearer_auth(&api.token)
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    sim.set_faults(Faults {
        latency_ms: 1_000,
        ..Faults::default()
    });
    let r = short
        .get(format!("{}/contact_lists", api.base))
        .bearer_auth(&api.token)
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    sim.set_faults(Faults::default());
    assert_eq!(api.get("/contact_lists").await.0, 200);
    let hung: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.fault.as_deref() == Some("hang"))
        .collect();
    assert_eq!(hung.len(), 1);
    assert_eq!(hung[0].status, None);
    sim.shutdown().await;
}

#[tokio::test]
async fn queued_activity_cap_is_429() {
    let sim = sim(SimConfig {
        max_queued_activities: 2,
        processing: Duration::from_secs(30),
        ..roomy()
    })
    .await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    for _ in 0..2 {
        import(&api, list, json!([{"email": "a@b.co"}])).await;
    }
    let (s, b) = api
        .post(
            "/activities/contacts_json_import",
            &json!({"list_ids": [list], "import_data": [{"email": "a@b.co"}]}),
        )
        .await;
    assert_eq!(s, 429);
    assert_eq!(b["error_key"], "too_many_activities");
    sim.shutdown().await;
}

#[tokio::test]
async fn admin_api_mirrors_the_handle() {
    let sim = sim(roomy()).await;
    let base = format!("{}/_sim", sim.base_url());
    let h = http();
    let f: Value = h
        .put(format!("{base}/faults"))
        .json(&json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(f["error_rate"], 1.0);
    assert_eq!(sim.faults().error_rate, 1.0);
    h.put(format!("{base}/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(sim.faults(), Faults::default());

    let before = sim.now();
    let c: Value = h
        .post(format!("{base}/clock/advance"))
        .json(&json!({"secs": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(c["offset_secs"].as_f64().unwrap() >= 3600.0);
    assert!(sim.now() - before >= time::Duration::hours(1));

    let l: Value = h
        .post(format!("{base}/lists"))
        .json(&json!({"name": "Admin list"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h.post(format!("{base}/custom_fields"))
        .json(&json!({"name": "tier"}))
        .send()
        .await
        .unwrap();
    let t: Value = h
        .post(format!("{base}/tokens"))
        .json(&json!({"client_id": "cli", "account": "acct"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api = Api {
        base: sim.api_base_url(),
        token: t["access_token"].as_str().unwrap().into(),
        http: http(),
    };
    let (s, _) = api.post("/activities/contacts_json_import", &json!({"list_ids": [l["list_id"]], "import_data": [{"email": "adm@example.com", "cf:tier": "x"}]})).await;
    assert_eq!(s, 201);
    assert!(eventually(10, || sim.contact("adm@example.com").is_some()).await);
    let cs: Value = h
        .get(format!("{base}/contacts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cs[0]["fields"]["cf:tier"], "x");
    let one = h
        .get(format!("{base}/contacts/ADM@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let reqs: Vec<Value> = h
        .get(format!("{base}/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["client_id"], "cli");
    assert_eq!(reqs[0]["status"], 201);
    let counters: Value = h
        .get(format!("{base}/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["api_requests"], 1);
    assert_eq!(counters["contacts"], 1);

    // Device approval and refusal over HTTP.
    let d: Value = h
        .post(format!("{}/device/authorize", sim.auth_base_url()))
        .form(&[("client_id", "cli"), ("scope", "contact_data")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uc = d["user_code"].as_str().unwrap();
    let r = h
        .post(format!("{base}/device/approve?user_code={uc}&deny=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.post(format!("{base}/device/approve?user_code={uc}"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "already decided"
    );
    assert_eq!(
        h.post(format!("{base}/revoke"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(api.get("/contact_lists").await.0, 401);
    sim.shutdown().await;
}

//! Fault switches and the admin API, over real HTTP.

use crate::sim_common;

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
    // CC's answer (reference §4, §11): a single object like its other 429s (the key is the
    // simulator's choice, the text the Swagger's), no Retry-After, nothing queued.
    let r = api
        .http
        .post(format!("{}/activities/contacts_json_import", api.base))
        .bearer_auth(&api.token)
        .json(&json!({"list_ids": [list], "import_data": [{"email": "a@b.co"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error_key":"too_many_activities","error_message":"You exceeded 1,000 queued activities for this user account."}"#
    );
    assert_eq!(sim.counters().activities, 2);
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
        .post(format!("{base}/lists?account=acct"))
        .json(&json!({"name": "Admin list"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h.post(format!("{base}/custom_fields?account=acct"))
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
    // The token's account holds the contact, not `default`.
    assert!(eventually(10, || sim.contact_of("acct", "adm@example.com").is_some()).await);
    assert!(sim.contact("adm@example.com").is_none());
    let cs: Value = h
        .get(format!("{base}/contacts?account=acct"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cs[0]["fields"]["cf:tier"], "x");
    let one = h
        .get(format!("{base}/contacts/ADM@example.com?account=acct"))
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

/// RFC 3339 → time (the activity timestamps are on the simulator clock).
fn at(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

fn rows(n: usize, tag: &str) -> Value {
    (0..n)
        .map(|i| json!({"email": format!("{tag}{i}@example.com")}))
        .collect()
}

/// `processing_per_1000_rows` (config) + `processing_per_1000_rows_ms` (fault): an import of N
/// rows stays non-terminal for `processing + N/1000 × both` (CC takes minutes for 40,000 rows).
#[tokio::test]
async fn processing_time_grows_with_rows() {
    let sim = sim(SimConfig {
        processing_per_1000_rows: Duration::from_millis(2_000),
        ..roomy()
    })
    .await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    sim.set_faults(Faults {
        processing_per_1000_rows_ms: 2_000,
        ..Faults::default()
    });
    // 500 rows: 100 ms + 0.5 × (2 s + 2 s) = 2.1 s (10 rows: 140 ms).
    let started = std::time::Instant::now();
    let big = import(&api, list, rows(500, "big")).await;
    let small = import(&api, list, rows(10, "small")).await;
    assert_eq!(big["state"], "initialized");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, b) = api
        .get(&format!(
            "/activities/{}",
            big["activity_id"].as_str().unwrap()
        ))
        .await;
    assert!(
        matches!(b["state"].as_str(), Some("initialized" | "processing")),
        "{b}"
    );
    let s = api
        .wait_activity(&sim, small["activity_id"].as_str().unwrap())
        .await;
    let b = api
        .wait_activity(&sim, big["activity_id"].as_str().unwrap())
        .await;
    assert!(started.elapsed() >= Duration::from_millis(2_100));
    assert_eq!(
        (b["state"].as_str(), s["state"].as_str()),
        (Some("completed"), Some("completed"))
    );
    // The timestamps are exact: created_at + processing + N/1000 × per-1000.
    let span = |a: &Value| at(&a["completed_at"]) - at(&a["created_at"]);
    assert_eq!(span(&b), time::Duration::milliseconds(2_100));
    assert_eq!(span(&s), time::Duration::milliseconds(140));
    assert_eq!(b["status"]["items_total_count"], 500);
    sim.shutdown().await;
}

/// `forbidden`: every `/v3` call answers 403 in CC's array form; the token endpoint and the
/// admin API keep working; a bad token still gets 401 first.
#[tokio::test]
async fn forbidden_switch_answers_403_until_cleared() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    // Turned on through the admin API, as a subprocess test would.
    let h = http();
    let f: Value = h
        .put(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"forbidden": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(f["forbidden"], true);
    assert!(sim.faults().forbidden);
    for (s, b) in [
        api.get("/contact_lists").await,
        api.get("/activities").await,
        api.post(
            "/contacts/sign_up_form",
            &json!({"email_address": "f@example.com", "list_memberships": [list]}),
        )
        .await,
        api.post(
            "/activities/contacts_json_import",
            &json!({"list_ids": [list], "import_data": [{"email": "f@example.com"}]}),
        )
        .await,
    ] {
        assert_eq!(s, 403, "{b}");
        assert_eq!(b[0]["error_key"], "forbidden", "{b}");
        assert!(
            b[0]["error_message"]
                .as_str()
                .unwrap()
                .contains("application is deactivated")
        );
    }
    assert_eq!(sim.counters().activities, 0);
    assert!(sim.contact("f@example.com").is_none());
    let bad = Api {
        token: "not-a-token".into(),
        ..Api::new(&sim)
    };
    assert_eq!(bad.get("/contact_lists").await.0, 401);
    let (_, rt) = sim.issue_tokens(CLIENT, "default");
    assert_eq!(refresh(&sim, &rt).await.0, 200, "token endpoint unaffected");
    sim.set_faults(Faults::default());
    assert_eq!(api.get("/contact_lists").await.0, 200);
    let rec = sim.requests();
    assert_eq!(
        rec.iter()
            .filter(|r| r.fault.as_deref() == Some("forbidden"))
            .count(),
        4
    );
    sim.shutdown().await;
}

/// `signup_conflict_rate`: `sign_up_form` answers CC's 409 and writes nothing.
#[tokio::test]
async fn signup_conflict_is_409_and_writes_nothing() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    sim.set_faults(Faults {
        signup_conflict_rate: 1.0,
        ..Faults::default()
    });
    let body =
        json!({"email_address": "c@example.com", "first_name": "C", "list_memberships": [list]});
    let (s, b) = api.post("/contacts/sign_up_form", &body).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b[0]["error_key"], "contacts.api.conflict");
    assert!(
        b[0]["error_message"]
            .as_str()
            .unwrap()
            .contains("simultaneous")
    );
    assert!(sim.contact("c@example.com").is_none());
    // A bad body is still 400, not 409.
    let (s, _) = api
        .post(
            "/contacts/sign_up_form",
            &json!({"email_address": "c@example.com"}),
        )
        .await;
    assert_eq!(s, 400);
    // Imports are not affected.
    import(&api, list, json!([{"email": "i@example.com"}])).await;
    sim.set_faults(Faults::default());
    let (s, b) = api.post("/contacts/sign_up_form", &body).await;
    assert_eq!((s, b["action"].as_str()), (201, Some("created")));
    sim.shutdown().await;
}

/// `correctable_rate`: rows skipped as correctable, counted as CC counts them; drawn per import,
/// so the same rows succeed when re-sent. The client reads the count into
/// `ActivityStatus::correctable`.
#[tokio::test]
async fn correctable_rows_are_skipped_and_counted() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    sim.set_faults(Faults {
        correctable_rate: 1.0,
        ..Faults::default()
    });
    let data = json!([
        {"email": "r1@example.com"},
        {"email": "r2@example.com"},
        {"email": "bad", "first_name": "Real correctable"},
        {"email": "r3@example.com", "cf:nope": "x"}
    ]);
    let a = import(&api, list, data.clone()).await;
    let id = a["activity_id"].as_str().unwrap().to_owned();
    let done = api.wait_activity(&sim, &id).await;
    assert_eq!(done["state"], "completed");
    let st = &done["status"];
    assert_eq!(st["items_total_count"], 4, "{done}");
    assert_eq!(st["items_completed_count"], 4);
    assert_eq!(st["correctable_count"], 3, "2 by the fault + 1 bad email");
    assert_eq!(st["error_count"], 1, "the unknown custom field");
    assert_eq!(st["person_count"], 0);
    assert_eq!(done["activity_errors"].as_array().unwrap().len(), 4);
    assert!(sim.contacts().is_empty());

    // What the worker's client sees.
    let client = ccsync::cc::api::Api::new(http(), &url::Url::parse(&api.base).unwrap());
    let token = ccsync::auth::AccessToken::new(api.token.clone());
    sim.advance_clock(Duration::from_secs(1));
    let status = client.activity(&token, &id).await.unwrap();
    assert_eq!((status.correctable, status.errors), (3, 1));
    assert_eq!(status.items_total, 4);

    // Re-sent with the fault off, the same rows are written.
    sim.set_faults(Faults::default());
    let a = import(&api, list, data).await;
    let done = api
        .wait_activity(&sim, a["activity_id"].as_str().unwrap())
        .await;
    assert_eq!(done["status"]["correctable_count"], 1);
    assert_eq!(done["status"]["person_count"], 2);
    assert!(sim.contact("r1@example.com").is_some());
    sim.shutdown().await;
}

/// `activity_not_found_rate`: polls answer CC's 404 although the activity runs on and writes.
#[tokio::test]
async fn activity_polls_can_answer_404() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    let a = import(&api, list, json!([{"email": "nf@example.com"}])).await;
    let id = a["activity_id"].as_str().unwrap();
    sim.set_faults(Faults {
        activity_not_found_rate: 1.0,
        ..Faults::default()
    });
    let (s, b) = api.get(&format!("/activities/{id}")).await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b[0]["error_key"], "activities.api.not_found");
    // Only the single-activity poll is affected.
    let (s, l) = api.get("/activities").await;
    assert_eq!(
        (s, l["activities"][0]["activity_id"].as_str()),
        (200, Some(id))
    );
    assert!(eventually(10, || sim.contact("nf@example.com").is_some()).await);
    sim.set_faults(Faults::default());
    let done = api.wait_activity(&sim, id).await;
    assert_eq!(done["state"], "completed");
    sim.shutdown().await;
}

/// `activity_poll_error_rate`: 500/503 on `GET /activities/{id}` only. `error_rate` with
/// `path_prefix: "/v3/activities/"` cannot do this: it also hits the import POST.
#[tokio::test]
async fn activity_polls_can_answer_5xx() {
    let sim = sim(SimConfig {
        seed: Some(7),
        ..roomy()
    })
    .await;
    let api = Api::new(&sim);
    let list = sim.create_list("L");
    sim.set_faults(Faults {
        error_rate: 1.0,
        path_prefix: Some("/v3/activities/".into()),
        ..Faults::default()
    });
    let (s, _) = api
        .post(
            "/activities/contacts_json_import",
            &json!({"list_ids": [list], "import_data": [{"email": "p@example.com"}]}),
        )
        .await;
    assert_eq!(s, 503, "the prefix also matches the import");

    sim.set_faults(Faults {
        activity_poll_error_rate: 1.0,
        ..Faults::default()
    });
    let a = import(&api, list, json!([{"email": "p@example.com"}])).await;
    let id = a["activity_id"].as_str().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        sim.advance_clock(Duration::from_secs(1));
        let (s, b) = api.get(&format!("/activities/{id}")).await;
        let key = b[0]["error_key"].as_str().unwrap().to_owned();
        assert!(
            matches!(
                (s, key.as_str()),
                (500, "server.error") | (503, "server.unavailable")
            ),
            "{s} {b}"
        );
        seen.insert(s);
    }
    assert_eq!(seen.len(), 2, "both 500 and 503 occur: {seen:?}");
    assert_eq!(api.get("/activities").await.0, 200);
    assert!(eventually(10, || sim.contact("p@example.com").is_some()).await);
    sim.set_faults(Faults::default());
    assert_eq!(api.wait_activity(&sim, id).await["state"], "completed");
    sim.shutdown().await;
}

/// A `list_ids` entry the account lacks refuses the whole import (400, array form, nothing
/// queued); `GET /contact_lists` lists the account's lists (default limit 50, up to 1000).
#[tokio::test]
async fn unknown_list_ids_refuse_the_whole_import() {
    let sim = sim(roomy()).await;
    let api = Api::new(&sim);
    let list = sim.create_list("Known");
    let ghost = uuid::Uuid::new_v4();
    let (s, b) = api
        .post(
            "/activities/contacts_json_import",
            &json!({"list_ids": [list, ghost], "import_data": [{"email": "u@example.com"}]}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b[0]["error_key"], "contacts.api.validation.error");
    assert!(
        b[0]["error_message"]
            .as_str()
            .unwrap()
            .contains(&ghost.to_string())
    );
    assert_eq!(sim.counters().activities, 0, "nothing queued");
    for i in 0..59 {
        sim.create_list(&format!("List {i}"));
    }
    let (s, l) = api.get("/contact_lists").await;
    assert_eq!(s, 200);
    assert_eq!(l["lists"].as_array().unwrap().len(), 50, "default limit");
    let (_, l) = api.get("/contact_lists?limit=1000").await;
    let ids: Vec<&str> = l["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["list_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 60);
    assert!(ids.contains(&list.to_string().as_str()));
    assert!(!ids.contains(&ghost.to_string().as_str()));
    sim.shutdown().await;
}

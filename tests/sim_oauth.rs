//! The simulator's authorization server over real HTTP: device flow, client authentication,
//! authorization code with PKCE. Refresh behaviour is in `sim_refresh.rs`.

mod sim_common;

use std::time::Duration;

use ccsync::sim::SimConfig;
use serde_json::Value;
use sim_common::*;

const DEVICE: &str = "urn:ietf:params:oauth:grant-type:device_code";

async fn authorize(sim: &ccsync::sim::Sim, scope: &str) -> Value {
    let r = http()
        .post(format!("{}/device/authorize", sim.auth_base_url()))
        .form(&[
            ("client_id", CLIENT),
            ("scope", scope),
            ("response_type", "code"),
            ("state", "xyz"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn poll(sim: &ccsync::sim::Sim, dc: &str) -> (u16, Value) {
    token(
        sim,
        &[
            ("grant_type", DEVICE),
            ("client_id", CLIENT),
            ("device_code", dc),
        ],
    )
    .await
}

#[tokio::test]
async fn device_flow_pending_slow_down_then_tokens_with_cc_claims() {
    let sim = sim(SimConfig {
        device_interval_secs: 5,
        ..fast()
    })
    .await;
    let d = authorize(&sim, "contact_data offline_access").await;
    assert_eq!(d["expires_in"], 600);
    assert_eq!(d["interval"], 5);
    let uc = d["user_code"].as_str().unwrap();
    assert!(
        d["verification_uri_complete"]
            .as_str()
            .unwrap()
            .contains(uc)
    );
    let dc = d["device_code"].as_str().unwrap();

    let (s, b) = poll(&sim, dc).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    // 2 s later: slower than the token endpoint's 1/s, faster than the 5 s interval.
    sim.advance_clock(Duration::from_secs(2));
    let (s, b) = poll(&sim, dc).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("slow_down")));

    // Approval through the verification URL (what a human's browser does).
    let r = http()
        .get(d["verification_uri_complete"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // slow_down grew the interval to 10 s.
    sim.advance_clock(Duration::from_secs(10));
    let (s, t) = poll(&sim, dc).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 86_400);
    assert_eq!(t["scope"], "contact_data offline_access");
    assert!(t["refresh_token"].as_str().is_some_and(|r| r.len() > 20));

    // The access token verifies against the served JWKS and carries CC's claims.
    let jwks: Value = http()
        .get(sim.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let k = &jwks["keys"][0];
    let at = t["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(at).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), k["kid"].as_str());
    let key = jsonwebtoken::DecodingKey::from_rsa_components(
        k["n"].as_str().unwrap(),
        k["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&["https://api.cc.email/v3"]);
    v.set_issuer(&["https://identity.constantcontact.com/oauth2/aus1lm3ry9mF7x2Ja0h8"]);
    v.validate_exp = false;
    let c = jsonwebtoken::decode::<Value>(at, &key, &v).unwrap().claims;
    assert_eq!(c["cid"], CLIENT);
    assert_eq!(c["platform_user_id"], "default");
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        86_400
    );
    assert_eq!(c["iat"].as_i64().unwrap(), sim.now().unix_timestamp());
    assert!(
        c["scp"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "contact_data")
    );
    assert!(c["sub"].is_string() && c["jti"].is_string());

    // The device code is single use.
    sim.advance_clock(Duration::from_secs(11));
    let (s, b) = poll(&sim, dc).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    sim.shutdown().await;
}

#[tokio::test]
async fn refused_and_expired_device_codes() {
    let sim = sim(fast()).await;
    let d = authorize(&sim, "contact_data offline_access").await;
    assert!(sim.deny(d["user_code"].as_str().unwrap()));
    let (s, b) = poll(&sim, d["device_code"].as_str().unwrap()).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("access_denied")));

    let d = authorize(&sim, "contact_data").await;
    sim.advance_clock(Duration::from_secs(601));
    let (s, b) = poll(&sim, d["device_code"].as_str().unwrap()).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("expired_token")));

    // Without offline_access there is no refresh token (and no error).
    let d = authorize(&sim, "contact_data").await;
    assert!(sim.approve(d["user_code"].as_str().unwrap()));
    next_second(&sim);
    let (s, t) = poll(&sim, d["device_code"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    assert!(t.get("refresh_token").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn query_string_params_basic_auth_and_auto_approve() {
    let sim = sim(SimConfig {
        auto_approve: true,
        client_secret: Some("s3cret".into()),
        ..fast()
    })
    .await;
    let r = http()
        .post(format!(
            "{}/device/authorize?client_id={CLIENT}&scope=contact_data+offline_access",
            sim.auth_base_url()
        ))
        .send()
        .await
        .unwrap();
    let d: Value = r.json().await.unwrap();
    // Parameters in the query string with an empty body, as CC's own examples do.
    let url = format!(
        "{}/token?client_id={CLIENT}&device_code={}&grant_type={DEVICE}",
        sim.auth_base_url(),
        d["device_code"].as_str().unwrap()
    );
    let r = http().post(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let rt = t["refresh_token"].as_str().unwrap();

    next_second(&sim);
    let r = http()
        .post(format!("{}/token", sim.auth_base_url()))
        .basic_auth(CLIENT, Some("wrong"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    next_second(&sim);
    let r = http()
        .post(format!("{}/token", sim.auth_base_url()))
        .basic_auth(CLIENT, Some("s3cret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn authorization_code_with_pkce() {
    use base64::Engine;
    let sim = sim(fast()).await;
    let verifier = "a-verifier-that-is-long-enough-for-pkce-0123456789";
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref());
    let nored = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = nored
        .get(format!("{}/authorize", sim.auth_base_url()))
        .query(&[
            ("client_id", CLIENT),
            ("redirect_uri", "http://localhost/cb"),
            ("response_type", "code"),
            ("scope", "contact_data offline_access"),
            ("state", "st"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st");
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT),
        ("code", q["code"].as_str()),
        ("redirect_uri", "http://localhost/cb"),
        ("code_verifier", verifier),
    ];
    let (s, t) = token(&sim, &form).await;
    assert_eq!(s, 200, "{t}");
    assert!(t["refresh_token"].is_string());
    next_second(&sim);
    let (s, b) = token(&sim, &form).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_grant")),
        "codes are single use"
    );
    sim.shutdown().await;
}

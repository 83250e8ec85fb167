//! The simulator's authorization server over real HTTP: device flow, client authentication,
//! authorization code with PKCE. Refresh behaviour is in `refresh.rs`.

use crate::sim_common;

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

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `GET /authorize` with `params`; the status and the redirect's query (if any) or the body.
async fn authorize_get(
    sim: &ccsync::sim::Sim,
    params: &[(&str, &str)],
) -> (u16, std::collections::HashMap<String, String>, String) {
    let r = no_redirects()
        .get(format!("{}/authorize", sim.auth_base_url()))
        .query(params)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let q = r
        .headers()
        .get("location")
        .map(|l| {
            url::Url::parse(l.to_str().unwrap())
                .unwrap()
                .query_pairs()
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    (status, q, r.text().await.unwrap_or_default())
}

fn code_cfg() -> SimConfig {
    SimConfig {
        auto_approve: true,
        redirect_uris: vec![
            "http://localhost/cb".into(),
            "https://app.example/cb".into(),
        ],
        client_secret: Some("s3cret".into()),
        ..fast()
    }
}

const CODE_AUTH: &[(&str, &str)] = &[
    ("client_id", CLIENT),
    ("redirect_uri", "https://app.example/cb"),
    ("response_type", "code"),
    ("scope", "contact_data offline_access"),
    ("state", "st-1"),
];

/// `POST /token` with HTTP Basic (a confidential app's exchange, reference §2.3).
async fn token_basic(
    sim: &ccsync::sim::Sim,
    secret: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = http()
        .post(format!("{}/token", sim.auth_base_url()))
        .form(form);
    if let Some(s) = secret {
        req = req.basic_auth(CLIENT, Some(s));
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn authorization_code_flow_with_the_secret_codes_die_after_their_lifetime() {
    let sim = sim(SimConfig {
        refresh_mode: ccsync::sim::RefreshMode::LongLived,
        ..code_cfg()
    })
    .await;
    // Unregistered redirect URI: a 400 page on the authorization server, no redirect.
    let mut bad = CODE_AUTH.to_vec();
    bad[1] = ("redirect_uri", "https://evil.example/cb");
    let (s, q, body) = authorize_get(&sim, &bad).await;
    assert_eq!(s, 400, "{body}");
    assert!(q.is_empty());
    assert!(body.contains("redirect_uri"), "{body}");
    // Registered: 302 with code and the same state.
    let (s, q, _) = authorize_get(&sim, CODE_AUTH).await;
    assert_eq!(s, 302);
    assert_eq!(q["state"], "st-1");
    let code = q["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://app.example/cb"),
    ];
    // A code issued without a PKCE challenge belongs to a confidential app: Basic is required,
    // and the failed try does not burn the code.
    let (s, b) = token_basic(&sim, None, &[&form[..], &[("client_id", CLIENT)]].concat()).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_client")),
        "{b}"
    );
    next_second(&sim);
    let (s, b) = token_basic(&sim, Some("wrong"), &form).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_client")),
        "{b}"
    );
    // Wrong redirect_uri at the exchange: invalid_grant that names the redirect URI.
    next_second(&sim);
    let (s, q, _) = authorize_get(&sim, CODE_AUTH).await;
    assert_eq!(s, 302);
    let (s, b) = token_basic(
        &sim,
        Some("s3cret"),
        &[
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            ("redirect_uri", "http://localhost/cb"),
        ],
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_grant")),
        "{b}"
    );
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("redirect_uri"),
        "{b}"
    );
    next_second(&sim);
    let (s, t) = token_basic(&sim, Some("s3cret"), &form).await;
    assert_eq!(s, 200, "{t}");
    // Long-lived app: the code flow's refresh token comes back unchanged.
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    next_second(&sim);
    let (s, r) = token_basic(
        &sim,
        Some("s3cret"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.as_str()),
        ],
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["refresh_token"].as_str(), Some(rt.as_str()));
    // A code older than code_ttl (CC: 5 minutes) is refused.
    let (_, q, _) = authorize_get(&sim, CODE_AUTH).await;
    sim.advance_clock(Duration::from_secs(301));
    let (s, b) = token_basic(
        &sim,
        Some("s3cret"),
        &[
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            ("redirect_uri", "https://app.example/cb"),
        ],
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_grant")),
        "{b}"
    );
    assert!(
        b["error_description"].as_str().unwrap().contains("expired"),
        "{b}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn authorize_without_auto_approve_shows_consent_and_deny_goes_back_with_the_state() {
    let sim = sim(SimConfig {
        auto_approve: false,
        ..code_cfg()
    })
    .await;
    let (s, q, body) = authorize_get(&sim, CODE_AUTH).await;
    assert_eq!(s, 200, "consent page");
    assert!(q.is_empty());
    assert!(
        body.contains("decision=approve") && body.contains("decision=deny"),
        "{body}"
    );
    let deny = [CODE_AUTH, &[("decision", "deny")]].concat();
    let (s, q, _) = authorize_get(&sim, &deny).await;
    assert_eq!(s, 302);
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", "st-1")
    );
    assert!(!q.contains_key("code"));
    let approve = [CODE_AUTH, &[("decision", "approve")]].concat();
    let (s, q, _) = authorize_get(&sim, &approve).await;
    assert_eq!(s, 302);
    assert!(q.contains_key("code"));
    // A challenge without S256 goes back as invalid_request.
    let plain = [
        CODE_AUTH,
        &[
            ("code_challenge", "abc"),
            ("code_challenge_method", "plain"),
        ],
    ]
    .concat();
    let (s, q, _) = authorize_get(&sim, &plain).await;
    assert_eq!((s, q["error"].as_str()), (302, "invalid_request"));
    sim.shutdown().await;
}

#[tokio::test]
async fn authorization_code_with_pkce() {
    use base64::Engine;
    let sim = sim(SimConfig {
        auto_approve: true,
        redirect_uris: vec!["http://localhost/cb".into()],
        ..fast()
    })
    .await;
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
    // A verifier that does not match the challenge: invalid_grant naming PKCE.
    next_second(&sim);
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
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    let (s, b) = token(
        &sim,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("code", q["code"].as_str()),
            ("redirect_uri", "http://localhost/cb"),
            (
                "code_verifier",
                "another-verifier-that-is-long-enough-0123456789abc",
            ),
        ],
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_grant")),
        "{b}"
    );
    assert!(
        b["error_description"].as_str().unwrap().contains("PKCE"),
        "{b}"
    );
    sim.shutdown().await;
}

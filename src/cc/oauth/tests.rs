use super::*;

#[test]
fn classifies_token_endpoint_answers() {
    let c = |s, b: &str| OAuthError::from_response(s, b.as_bytes());
    assert!(matches!(
        c(400, r#"{"error":"invalid_grant","error_description":"The refresh token is invalid or expired."}"#),
        OAuthError::InvalidGrant(d) if d.contains("invalid or expired")
    ));
    assert!(matches!(
        c(400, r#"{"error":"authorization_pending"}"#),
        OAuthError::AuthorizationPending
    ));
    assert!(matches!(
        c(400, r#"{"error":"slow_down"}"#),
        OAuthError::SlowDown
    ));
    assert!(matches!(
        c(400, r#"{"error":"expired_token"}"#),
        OAuthError::ExpiredToken
    ));
    assert!(matches!(
        c(400, r#"{"error":"access_denied"}"#),
        OAuthError::AccessDenied
    ));
    assert!(matches!(
        c(401, r#"{"error":"invalid_client"}"#),
        OAuthError::InvalidClient(_)
    ));
    assert!(matches!(c(429, ""), OAuthError::Throttled));
    assert!(matches!(c(503, "oops"), OAuthError::Server(503)));
    let u = c(400, r#"{"error":"weird"}"#);
    assert!(u.is_transient());
    assert!(!c(400, r#"{"error":"invalid_grant"}"#).is_transient());
}

#[test]
fn joins_paths_under_the_base() {
    let base = url::Url::parse("http://127.0.0.1:1/oauth2/default/v1").unwrap();
    assert_eq!(
        join(&base, "device/authorize").as_str(),
        "http://127.0.0.1:1/oauth2/default/v1/device/authorize"
    );
    let base = url::Url::parse("http://h/oauth2/default/v1/").unwrap();
    assert_eq!(
        join(&base, "token").as_str(),
        "http://h/oauth2/default/v1/token"
    );
}

#[test]
fn authorize_url_carries_what_cc_expects() {
    let base = url::Url::parse("http://127.0.0.1:1/oauth2/default/v1").unwrap();
    let c = OAuthClient::new(&base, "cid", None, Duration::from_secs(1));
    let u = c.authorize_url(
        "http://127.0.0.1:8765/cb",
        "contact_data offline_access",
        "st",
        Some("chal"),
    );
    assert!(
        u.as_str()
            .starts_with("http://127.0.0.1:1/oauth2/default/v1/authorize?client_id=cid&"),
        "{u}"
    );
    assert!(
        u.as_str().contains("scope=contact_data+offline_access"),
        "{u}"
    );
    let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
    assert_eq!(q["redirect_uri"], "http://127.0.0.1:8765/cb");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["state"], "st");
    assert_eq!(q["code_challenge"], "chal");
    assert_eq!(q["code_challenge_method"], "S256");
    let plain = c.authorize_url("http://localhost/cb", "contact_data", "s", None);
    assert!(!plain.as_str().contains("code_challenge"), "{plain}");
}

#[test]
fn debug_hides_secrets() {
    let t = OAuthClient::parse_token(
        br#"{"access_token":"AAA-secret","refresh_token":"RRR-secret","expires_in":5}"#,
    )
    .unwrap();
    let s = format!("{t:?}");
    assert!(!s.contains("secret"), "{s}");
    assert_eq!(t.expires_in, Some(5));
}

use super::*;

#[test]
fn s256_matches_rfc_7636_appendix_b() {
    assert_eq!(
        s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    let v = random_urlsafe(32);
    assert_eq!(v.len(), 43);
    assert_ne!(v, random_urlsafe(32));
}

#[test]
fn loopback_uris_only() {
    let u = |s: &str| url::Url::parse(s).unwrap();
    assert_eq!(
        loopback_addrs(&u("http://127.0.0.1:8765/cb")).unwrap(),
        vec![SocketAddr::from(([127, 0, 0, 1], 8765))]
    );
    assert_eq!(
        loopback_addrs(&u("http://localhost:9/cb")).unwrap().len(),
        2
    );
    assert!(loopback_addrs(&u("http://[::1]:9/cb")).is_some());
    assert!(loopback_addrs(&u("https://127.0.0.1:9/cb")).is_none());
    assert!(loopback_addrs(&u("http://example.com:9/cb")).is_none());
    assert!(loopback_addrs(&u("http://10.0.0.1:9/cb")).is_none());
}

#[test]
fn pasted_urls_queries_and_bare_codes() {
    let r = parse_pasted("https://example.com/cb?code=abc&state=xyz\n").unwrap();
    assert_eq!(
        (r.code.as_deref(), r.state.as_deref(), r.bare),
        (Some("abc"), Some("xyz"), false)
    );
    let r = parse_pasted("?code=abc&state=xyz").unwrap();
    assert_eq!(r.state.as_deref(), Some("xyz"));
    let r = parse_pasted("  abc-DEF_123  ").unwrap();
    assert_eq!((r.code.as_deref(), r.bare), (Some("abc-DEF_123"), true));
    assert!(parse_pasted("").is_err());
    assert!(parse_pasted("https://example.com/cb?state=x").is_err());
    assert!(parse_pasted("two words").is_err());
    let r = parse_pasted("http://h/cb?error=access_denied&state=s").unwrap();
    assert_eq!(r.error.as_deref(), Some("access_denied"));
}

#[test]
fn state_is_checked_before_anything_else() {
    let f = LoginFlow::Code;
    let ok = Redirect {
        code: Some("c".into()),
        state: Some("s".into()),
        ..Redirect::default()
    };
    assert_eq!(check_redirect(&ok, "s", f).unwrap(), "c");
    assert!(matches!(
        check_redirect(&ok, "other", f),
        Err(CodeLoginError::StateMismatch(_))
    ));
    let no_state = Redirect {
        state: None,
        ..ok.clone()
    };
    assert!(matches!(
        check_redirect(&no_state, "s", f),
        Err(CodeLoginError::StateMismatch(_))
    ));
    let denied = Redirect {
        code: None,
        error: Some("access_denied".into()),
        ..ok.clone()
    };
    assert!(matches!(
        check_redirect(&denied, "s", f),
        Err(CodeLoginError::Denied(..))
    ));
}

#[test]
fn invalid_grant_is_told_apart_by_its_description() {
    let g = |d: &str| exchange_error(OAuthError::InvalidGrant(d.into()), LoginFlow::Pkce);
    assert!(matches!(
        g("The authorization code is invalid or has expired."),
        CodeLoginError::CodeRejected("pkce")
    ));
    assert!(matches!(
        g("PKCE verification failed."),
        CodeLoginError::VerifierMismatch
    ));
    assert!(matches!(
        g(
            "The 'redirect_uri' does not match the redirection URI used in the authorization request."
        ),
        CodeLoginError::RedirectMismatch(_)
    ));
}

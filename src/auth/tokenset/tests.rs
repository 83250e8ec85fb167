use super::*;
use base64::Engine as _;

fn jwt(exp: i64, iat: i64) -> String {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        b.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        b.encode(format!(r#"{{"exp":{exp},"iat":{iat},"cid":"x"}}"#)),
        b.encode(b"sig")
    )
}

#[test]
fn expiry_comes_from_the_jwt_not_expires_in() {
    let t = TokenSet::from_grant(
        AccessToken::new(jwt(1_000_100, 1_000_000)),
        RefreshToken::new("r1"),
        Some(99_999),
        RefreshMode::Unknown,
        1,
        1_000_010,
    );
    assert_eq!(t.expires_at, 1_000_100);
    assert_eq!(t.lifetime_secs(), 100);
    // 20 % of 100 s = 20 s < 300 s.
    assert_eq!(t.refresh_window_ms(300), 20_000);
    assert!(!t.needs_refresh(1_000_079_000, 300));
    assert!(t.needs_refresh(1_000_081_000, 300));
    // A 24 h token refreshes 5 minutes early.
    let day = TokenSet::from_grant(
        AccessToken::new(jwt(86_400, 0)),
        RefreshToken::new("r"),
        None,
        RefreshMode::Unknown,
        1,
        0,
    );
    assert_eq!(day.refresh_window_ms(300), 300_000);
}

#[test]
fn non_jwt_falls_back_to_expires_in() {
    let t = TokenSet::from_grant(
        AccessToken::new("opaque"),
        RefreshToken::new("r"),
        Some(60),
        RefreshMode::Unknown,
        1,
        500,
    );
    assert_eq!(t.expires_at, 560);
    assert_eq!(t.issued_at, 500);
}

#[test]
fn debug_is_redacted_and_mode_detected() {
    let a = AccessToken::new("secret-access-value");
    let r = RefreshToken::new("secret-refresh-value");
    let s = format!("{a:?} {r:?}");
    assert!(!s.contains("secret-"), "{s}");
    assert_eq!(r.fingerprint().len(), 12);
    let same = RefreshToken::new("secret-refresh-value");
    let other = RefreshToken::new("other");
    assert_eq!(
        RefreshMode::detect(RefreshMode::Unknown, &r, Some(&same)),
        RefreshMode::LongLived
    );
    assert_eq!(
        RefreshMode::detect(RefreshMode::Unknown, &r, Some(&other)),
        RefreshMode::Rotating
    );
    assert_eq!(
        RefreshMode::detect(RefreshMode::LongLived, &r, None),
        RefreshMode::LongLived
    );
    let set = TokenSet::from_grant(a, r, Some(10), RefreshMode::Rotating, 7, 0);
    assert!(!format!("{set:?}").contains("secret-"));
    let back = TokenSet::from_json(&set.to_json()).unwrap();
    assert_eq!(back.access, set.access);
    assert_eq!(back.generation, 7);
    assert_eq!(back.flow, None);
}

#[test]
fn the_login_flow_is_stored_and_old_sets_without_it_still_read() {
    let set = TokenSet::from_grant(
        AccessToken::new("a"),
        RefreshToken::new("r"),
        Some(10),
        RefreshMode::LongLived,
        3,
        0,
    )
    .with_flow(Some(LoginFlow::Pkce));
    let json = String::from_utf8(set.to_json()).unwrap();
    assert!(json.contains(r#""flow":"pkce""#), "{json}");
    assert_eq!(
        TokenSet::from_json(json.as_bytes()).unwrap().flow,
        Some(LoginFlow::Pkce)
    );
    // A set written by a version before issue 14.
    let old = r#"{"access_token":"a","refresh_token":"r","expires_at":10,"issued_at":0,"mode":"rotating","refreshed_at":0,"generation":2}"#;
    let back = TokenSet::from_json(old.as_bytes()).unwrap();
    assert_eq!((back.flow, back.mode), (None, RefreshMode::Rotating));
}

proptest::proptest! {
    /// The refresh window is min(refresh_before, 20 % of the lifetime), and once a token
    /// needs a refresh it keeps needing one as time passes.
    #[test]
    fn refresh_window_rule(lifetime in 1i64..200_000, before in 0u64..10_000, at in 0i64..200_000) {
        let t = TokenSet {
            access: AccessToken::new("a"),
            refresh: RefreshToken::new("r"),
            expires_at: 1_000_000 + lifetime,
            issued_at: 1_000_000,
            mode: RefreshMode::Unknown,
            refreshed_at: 1_000_000,
            generation: 1,
            flow: None,
        };
        let w = t.refresh_window_ms(before);
        proptest::prop_assert!(w <= lifetime * 1000 / 5);
        proptest::prop_assert!(w <= before as i64 * 1000);
        proptest::prop_assert!(w == (lifetime * 1000 / 5).min(before as i64 * 1000));
        let now = (1_000_000 + at) * 1000;
        if t.needs_refresh(now, before) {
            proptest::prop_assert!(t.needs_refresh(now + 1, before));
        }
    }
}

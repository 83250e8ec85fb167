use super::*;

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

const NOW: i64 = 1_800_000_000;

#[test]
fn a_link_opens_until_it_expires_and_names_its_account() {
    let k = secret("invite-secret-0123456789-0123456789");
    let (inv, token) = issue(&k, "acme", NOW, Duration::from_secs(7 * 86_400));
    assert_eq!(inv.account, "acme");
    assert_eq!(inv.expires_at, NOW + 7 * 86_400);
    assert_eq!(open(&k, &token, NOW).unwrap(), inv);
    assert_eq!(open(&k, &token, inv.expires_at - 1).unwrap(), inv);
    assert_eq!(
        open(&k, &token, inv.expires_at),
        Err(Refusal::Expired(inv.clone()))
    );
    // Two links for one account are two links.
    let (other, token2) = issue(&k, "acme", NOW, Duration::from_secs(60));
    assert_ne!(other.id, inv.id);
    assert_ne!(token, token2);
    // URL-safe as it stands.
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "{token}"
    );
}

#[test]
fn altered_cut_or_foreign_links_are_invalid() {
    let k = secret("invite-secret-0123456789-0123456789");
    let (_, token) = issue(&k, "acme", NOW, Duration::from_secs(3600));
    let (payload, tag) = token.split_once('.').unwrap();
    // Another account or a later expiry in the payload: the tag no longer matches.
    let forged = b64(br#"{"a":"other","exp":1800003600,"n":"AAAAAAAAAAAAAAAAAAAAAA"}"#);
    for bad in [
        format!("{forged}.{tag}"),
        format!("{payload}.{}", b64(&[0u8; 32])),
        format!("{payload}x.{tag}"),
        payload.to_string(),
        String::new(),
        "a.b.c".into(),
        "x".repeat(2000),
    ] {
        assert_eq!(open(&k, &bad, NOW), Err(Refusal::Invalid), "{bad}");
    }
    // One character changed anywhere in the tag.
    let mut chars: Vec<char> = token.chars().collect();
    let last = chars.len() - 2;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    let flipped: String = chars.into_iter().collect();
    assert_eq!(open(&k, &flipped, NOW), Err(Refusal::Invalid));
    // Another secret.
    let k2 = secret("another-secret-0123456789-01234567");
    assert_eq!(open(&k2, &token, NOW), Err(Refusal::Invalid));
}

#[test]
fn a_state_is_bound_to_its_link_and_is_not_a_link() {
    let k = secret("invite-secret-0123456789-0123456789");
    let (inv, token) = issue(&k, "acme", NOW, Duration::from_secs(10));
    let st = state_for(&k, &inv, NOW + 5);
    let back = check_state(&k, &st, NOW + 5).unwrap();
    assert_eq!(back.invite, inv);
    assert_eq!(back.state_expires_at, NOW + 5 + STATE_TTL_SECS);
    // Past the link's own expiry the state still finishes what was started in time.
    assert!(check_state(&k, &st, NOW + 600).is_ok());
    assert_eq!(
        check_state(&k, &st, NOW + 5 + STATE_TTL_SECS),
        Err(Refusal::Expired(inv.clone()))
    );
    // Neither passes for the other.
    assert_eq!(check_state(&k, &token, NOW), Err(Refusal::Invalid));
    assert_eq!(open(&k, &st, NOW), Err(Refusal::Invalid));
}

#[test]
fn links_and_the_redirect_uri_hang_off_the_public_url() {
    for (public, link, cb) in [
        (
            "https://ingest.example.com",
            "https://ingest.example.com/connect/T",
            "https://ingest.example.com/oauth/callback",
        ),
        (
            "https://example.com/ccsync/",
            "https://example.com/ccsync/connect/T",
            "https://example.com/ccsync/oauth/callback",
        ),
        (
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/connect/T",
            "http://127.0.0.1:8080/oauth/callback",
        ),
    ] {
        let u = url::Url::parse(public).unwrap();
        assert_eq!(link_url(&u, "T"), link);
        assert_eq!(redirect_uri(&u), cb);
    }
}

#[test]
fn ttl_takes_a_number_and_a_unit() {
    assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(604_800));
    assert_eq!(parse_ttl("12h").unwrap(), Duration::from_secs(43_200));
    assert_eq!(parse_ttl("90m").unwrap(), Duration::from_secs(5_400));
    assert_eq!(parse_ttl("1s").unwrap(), Duration::from_secs(1));
    assert_eq!(parse_ttl("30d").unwrap(), Duration::from_secs(MAX_TTL_SECS));
    for bad in [
        "",
        "7",
        "d",
        "7w",
        "0s",
        "31d",
        "-1d",
        "1.5h",
        "99999999999999999999d",
    ] {
        assert!(parse_ttl(bad).is_err(), "{bad}");
    }
}

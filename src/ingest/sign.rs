//! Request signatures, pure (the caller passes `now`): ccsync's own `X-Ccsync-Signature` and
//! Shopify's `X-Shopify-Hmac-Sha256`. Both are HMAC-SHA256 (aws-lc-rs) compared in constant time.
//!
//! `X-Ccsync-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. Several
//! `v1=` entries may be given (a sender moving between secrets signs with both); the request is
//! authentic when any of them matches any configured secret. The timestamp is signed, so a
//! captured request can only be replayed within the tolerance, and a replay carries the same
//! message ids (an upsert applied twice is the same contact).

use std::time::Duration;

use aws_lc_rs::{constant_time, hmac};
use secrecy::{ExposeSecret, SecretString};

/// Why a signature was refused (the `reason` label of `ccsync_ingest_signature_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// No header, or not `t=…,v1=…`.
    Missing,
    /// The HMAC matches none of the secrets.
    Bad,
    /// The timestamp is further from now than the tolerance.
    Stale,
}

impl SignatureError {
    pub(crate) fn label(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::Bad => "bad",
            SignatureError::Stale => "stale",
        }
    }

    /// What the 401 says, for the sender's developer.
    pub(crate) fn explain(self, header: &str) -> String {
        match self {
            SignatureError::Missing => format!(
                "missing or malformed {header} header: send t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">"
            ),
            SignatureError::Bad => {
                format!("{header} does not match: sign the exact raw body with a configured secret")
            }
            SignatureError::Stale => format!(
                "{header} timestamp is too far from now: sign each request when sending it (and keep the sender's clock in sync)"
            ),
        }
    }
}

/// The HMAC-SHA256 of `parts` concatenated, keyed with `secret`.
fn mac(secret: &[u8], parts: &[&[u8]]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign()
}

/// HMAC-SHA256 of `parts` concatenated, keyed with `secret`: the tag of a connect link or of its
/// OAuth `state` ([`super::invite`]).
pub(crate) fn hmac_sha256(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(mac(secret, parts).as_ref());
    out
}

/// Whether `given` is the HMAC-SHA256 of `parts` under `secret`, compared in constant time.
pub(crate) fn hmac_sha256_matches(secret: &[u8], parts: &[&[u8]], given: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(mac(secret, parts).as_ref(), given).is_ok()
}

/// The header value a sender computes (for tests, the benchmark and documentation examples).
pub fn ccsync_header(secret: &str, t: i64, body: &[u8]) -> String {
    let tag = mac(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]);
    format!("t={t},v1={}", hex(tag.as_ref()))
}

/// Check `X-Ccsync-Signature` against every secret. `now` is unix seconds.
pub(crate) fn verify_ccsync(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t: Option<&str> = None;
    let mut sigs: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.trim()),
            Some(("v1", v)) => {
                // A malformed entry cannot match; keep looking at the others.
                if let Some(bytes) = unhex(v.trim()) {
                    sigs.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Missing)?;
    let ts: i64 = t.parse().map_err(|_| SignatureError::Missing)?;
    if sigs.is_empty() {
        return Err(SignatureError::Missing);
    }
    // The HMAC first: an unauthenticated sender learns nothing from the timestamp check.
    let mut matched = false;
    for secret in secrets {
        let tag = mac(
            secret.expose_secret().as_bytes(),
            &[t.as_bytes(), b".", body],
        );
        for sig in &sigs {
            // Constant time in the contents; lengths are public (always 32 bytes when valid).
            matched |= constant_time::verify_slices_are_equal(tag.as_ref(), sig).is_ok();
        }
    }
    if !matched {
        return Err(SignatureError::Bad);
    }
    if ts.abs_diff(now) > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// The `X-Shopify-Hmac-Sha256` value Shopify sends: base64 HMAC-SHA256 of the raw body.
pub fn shopify_header(secret: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(mac(secret.as_bytes(), &[body]).as_ref())
}

/// Check `X-Shopify-Hmac-Sha256`.
pub(crate) fn verify_shopify(
    header: Option<&str>,
    body: &[u8],
    secret: &SecretString,
) -> Result<(), SignatureError> {
    use base64::Engine as _;
    let header = header.ok_or(SignatureError::Missing)?;
    let given = base64::engine::general_purpose::STANDARD
        .decode(header.trim())
        .map_err(|_| SignatureError::Missing)?;
    let tag = mac(secret.expose_secret().as_bytes(), &[body]);
    constant_time::verify_slices_are_equal(tag.as_ref(), &given).map_err(|_| SignatureError::Bad)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Duration = Duration::from_secs(300);

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    #[test]
    fn a_known_vector_matches() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let tag = mac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signed_requests_pass_and_every_fault_is_named() {
        let s = secrets(&["old-secret-0123456789", "new-secret-0123456789"]);
        let body = br#"{"a":1}"#;
        let now = 1_700_000_000;
        for secret in ["old-secret-0123456789", "new-secret-0123456789"] {
            let h = ccsync_header(secret, now - 10, body);
            assert_eq!(verify_ccsync(Some(&h), body, &s, now, TOL), Ok(()));
        }
        let h = ccsync_header("other-secret-0123456789", now, body);
        assert_eq!(
            verify_ccsync(Some(&h), body, &s, now, TOL),
            Err(SignatureError::Bad)
        );
        let h = ccsync_header("new-secret-0123456789", now, body);
        assert_eq!(
            verify_ccsync(Some(&h), b"{\"a\":2}", &s, now, TOL),
            Err(SignatureError::Bad),
            "another body"
        );
        let h = ccsync_header("new-secret-0123456789", now - 301, body);
        assert_eq!(
            verify_ccsync(Some(&h), body, &s, now, TOL),
            Err(SignatureError::Stale)
        );
        let h = ccsync_header("new-secret-0123456789", now + 301, body);
        assert_eq!(
            verify_ccsync(Some(&h), body, &s, now, TOL),
            Err(SignatureError::Stale)
        );
        // The timestamp is signed: moving it breaks the HMAC.
        let h = ccsync_header("new-secret-0123456789", now - 400, body)
            .replace(&format!("t={}", now - 400), &format!("t={now}"));
        assert_eq!(
            verify_ccsync(Some(&h), body, &s, now, TOL),
            Err(SignatureError::Bad)
        );
        for bad in ["", "v1=00", "t=1", "t=x,v1=00", "garbage"] {
            assert_eq!(
                verify_ccsync(Some(bad), body, &s, now, TOL),
                Err(SignatureError::Missing),
                "{bad}"
            );
        }
        assert_eq!(
            verify_ccsync(None, body, &s, now, TOL),
            Err(SignatureError::Missing)
        );
        // Two v1 entries, one of them right: accepted.
        let good = ccsync_header("new-secret-0123456789", now, body);
        let v1 = good.split_once(",v1=").unwrap().1;
        let two = format!("t={now},v1={},v1={v1}", "ab".repeat(32));
        assert_eq!(verify_ccsync(Some(&two), body, &s, now, TOL), Ok(()));
    }

    #[test]
    fn shopify_hmac_is_base64_of_the_raw_body() {
        let secret = SecretString::from("shpss_app_secret".to_string());
        let body = br#"{"id":1,"email":"a@example.com"}"#;
        let h = shopify_header("shpss_app_secret", body);
        assert_eq!(verify_shopify(Some(&h), body, &secret), Ok(()));
        assert_eq!(
            verify_shopify(Some(&h), b"{\"id\":2}", &secret),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            verify_shopify(Some("not base64!"), body, &secret),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_shopify(None, body, &secret),
            Err(SignatureError::Missing)
        );
    }
}

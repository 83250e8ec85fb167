//! RS256 access tokens, signed the way CC's Okta-based authorization server signs them
//! (reference §3.2): a JWS with `kid` in the header, claims `exp, iat, iss, aud, cid,
//! platform_user_id, scp, sub, jti`.
//!
//! **Key choice**: the RSA-2048 key is generated with aws-lc-rs the first time a simulator starts
//! in a process and shared by every simulator of that process (RSA key generation is the slowest
//! part of a start; tests start many simulators). No private key is ever written to disk or to the
//! repository. The public half is served as a JWKS at `/oauth2/default/v1/keys`.
//!
//! Tokens are signed here with aws-lc-rs directly (jsonwebtoken's `EncodingKey::from_rsa_der`
//! wants PKCS#1 DER, aws-lc-rs only exports PKCS#8), and verified with `jsonwebtoken` against the
//! published modulus/exponent, so verification goes through the same standard path a client
//! would use.

use std::sync::OnceLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

/// Issuer CC's tokens carry (reference §3.2, §11).
pub const ISSUER: &str = "https://identity.constantcontact.com/oauth2/aus1lm3ry9mF7x2Ja0h8";
/// Audience CC's tokens carry (reference §3.2, §11).
pub const AUDIENCE: &str = "https://api.cc.email/v3";

/// The process-wide signing key and its public components.
pub struct SigningKey {
    pair: KeyPair,
    /// Key id published in the JWKS and stamped in every token header.
    pub kid: String,
    /// base64url modulus, as in the JWKS.
    pub n: String,
    /// base64url exponent, as in the JWKS.
    pub e: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Claims of a simulator access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub ver: u8,
    pub jti: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub cid: String,
    pub uid: String,
    pub scp: Vec<String>,
    pub sub: String,
    pub platform_user_id: String,
}

static KEY: OnceLock<Result<SigningKey, String>> = OnceLock::new();

/// The shared signing key, generated on first use.
pub fn signing_key() -> std::io::Result<&'static SigningKey> {
    KEY.get_or_init(|| {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|e| e.to_string())?;
        let comps = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let n = B64.encode(&comps.n);
        let e = B64.encode(&comps.e);
        let kid = format!("sim-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Ok(SigningKey { pair, kid, n, e })
    })
    .as_ref()
    .map_err(|e| std::io::Error::other(format!("RSA key generation failed: {e}")))
}

impl SigningKey {
    /// Sign `claims` as a compact RS256 JWS.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = serde_json::json!({"kid": self.kid, "alg": "RS256", "typ": "JWT"});
        let mut out = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(serde_json::to_vec(claims).unwrap_or_default())
        );
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        // Signing with a valid in-memory key and a correctly sized buffer cannot fail; an empty
        // signature would simply be rejected by every verifier, never accepted.
        let _ = self.pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            out.as_bytes(),
            &mut sig,
        );
        out.push('.');
        out.push_str(&B64.encode(sig));
        out
    }

    /// Verify signature, issuer and audience (not `exp`: the caller checks it against the
    /// simulator's clock, which tests move).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
        let key = DecodingKey::from_rsa_components(&self.n, &self.e).ok()?;
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        let data = decode::<Claims>(token, &key, &v).ok()?;
        (data.header.kid.as_deref() == Some(self.kid.as_str())).then_some(data.claims)
    }

    /// The JWKS document (`{"keys":[...]}`).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": self.n, "e": self.e
        }]})
    }
}

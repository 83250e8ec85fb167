//! The authorization server: device authorization, device-code polling, the authorize URL and
//! the authorization-code exchange (plain and PKCE), refresh (reference §2.3–2.5, §3.1, §3.6).
//!
//! Choices where the reference is silent or split:
//! * Parameters travel as an `application/x-www-form-urlencoded` body (CC accepts a form body or a
//!   query string, reference §2.3; a body keeps refresh tokens out of URLs, which proxies log).
//! * A confidential client authenticates with HTTP Basic; a public (device-flow) client sends only
//!   `client_id` (reference §2.3).
//! * Every answer is classified into an [`OAuthError`] that says what to do next. Unknown 4xx
//!   errors other than the RFC 8628 polling codes count as [`OAuthError::InvalidGrant`]-like only
//!   when CC says `invalid_grant`; anything else unrecognised is [`OAuthError::Unexpected`], which
//!   the refresh protocol treats as transient (the strict choice: never declare a connection dead
//!   on a guess).
//! * Nothing here logs a token, a device code or an `Authorization` header; errors carry CC's
//!   `error` code and `error_description` only (those never contain secrets).
//!
//! Files: `error` ([`OAuthError`] and the classification of an error answer), `tests`.

mod error;

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Endpoint, record_call};
pub use error::OAuthError;

/// A successful token-endpoint answer (reference §3.1). Secret fields are secret types.
pub struct TokenResponse {
    pub access_token: SecretString,
    /// Absent when `offline_access` was not granted (reference §8.8).
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawToken {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

/// The device authorization answer (reference §2.5 Step 1).
pub struct DeviceAuthorization {
    /// Secret: whoever holds it can collect the tokens once the user approves.
    pub device_code: SecretString,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: u64,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("device_code", &"[REDACTED]")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawDevice {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    /// Okta defaults (reference §2.5, INF) when CC leaves them out.
    #[serde(default = "default_device_expiry")]
    expires_in: u64,
    #[serde(default = "default_interval")]
    interval: u64,
}
fn default_device_expiry() -> u64 {
    600
}
fn default_interval() -> u64 {
    5
}

/// RFC 8628 device-code grant type.
pub(crate) const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The authorization-server client. Cheap to clone (reqwest's client is an `Arc`).
#[derive(Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
    token_url: url::Url,
    device_url: url::Url,
    authorize_url: url::Url,
    client_id: String,
    client_secret: Option<SecretString>,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// Join `path` under `base` even when `base` lacks a trailing slash
/// (`…/oauth2/default/v1` + `token` → `…/oauth2/default/v1/token`).
fn join(base: &url::Url, path: &str) -> url::Url {
    let mut u = base.clone();
    {
        let p = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{p}/{path}"));
    }
    u
}

impl OAuthClient {
    /// `auth_base_url` is `…/oauth2/default/v1` (reference §1). `timeout` bounds every call, so a
    /// hanging authorization server turns into [`OAuthError::Transport`] instead of a wedged refresh.
    pub fn new(
        auth_base_url: &url::Url,
        client_id: &str,
        client_secret: Option<SecretString>,
        timeout: Duration,
    ) -> OAuthClient {
        OAuthClient {
            http: super::http_client(timeout),
            token_url: join(auth_base_url, "token"),
            device_url: join(auth_base_url, "device/authorize"),
            // The browser's page, on the same host as the token endpoint (reference §1); the
            // simulator serves it under `CCSYNC_AUTH_BASE_URL` too.
            authorize_url: join(auth_base_url, "authorize"),
            client_id: client_id.to_string(),
            client_secret,
        }
    }

    async fn post(
        &self,
        endpoint: Endpoint,
        url: &url::Url,
        form: &[(&str, &str)],
    ) -> Result<Vec<u8>, OAuthError> {
        let started = Instant::now();
        let mut req = self.http.post(url.clone()).form(form);
        if let Some(secret) = &self.client_secret {
            req = req.basic_auth(&self.client_id, Some(secret.expose_secret()));
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                record_call(endpoint, None, started);
                // reqwest's error text names the URL (no secrets: parameters are in the body).
                return Err(OAuthError::Transport(e.without_url().to_string()));
            }
        };
        let status = resp.status().as_u16();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                record_call(endpoint, None, started);
                return Err(OAuthError::Transport(e.without_url().to_string()));
            }
        };
        record_call(endpoint, Some(status), started);
        if (200..300).contains(&status) {
            Ok(body.to_vec())
        } else {
            Err(OAuthError::from_response(status, &body))
        }
    }

    fn parse_token(body: &[u8]) -> Result<TokenResponse, OAuthError> {
        let raw: RawToken = serde_json::from_slice(body).map_err(|e| OAuthError::Unexpected {
            status: 200,
            // serde's message names the field, never its value.
            detail: format!("token response is not the expected JSON: {e}"),
        })?;
        Ok(TokenResponse {
            access_token: SecretString::from(raw.access_token),
            refresh_token: raw
                .refresh_token
                .filter(|r| !r.is_empty())
                .map(SecretString::from),
            expires_in: raw.expires_in,
            scope: raw.scope,
        })
    }

    /// `grant_type=refresh_token` (reference §3.4). The caller has already passed the shared
    /// 1 request/s gate.
    pub(crate) async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, OAuthError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if self.client_secret.is_none() {
            form.push(("client_id", self.client_id.as_str()));
        }
        let body = self.post(Endpoint::Token, &self.token_url, &form).await?;
        Self::parse_token(&body)
    }

    /// Step 1 of the device flow (reference §2.5).
    pub async fn device_authorize(&self, scope: &str) -> Result<DeviceAuthorization, OAuthError> {
        let form = [("client_id", self.client_id.as_str()), ("scope", scope)];
        let body = self
            .post(Endpoint::DeviceAuthorize, &self.device_url, &form)
            .await?;
        let raw: RawDevice = serde_json::from_slice(&body).map_err(|e| OAuthError::Unexpected {
            status: 200,
            detail: format!("device authorization response is not the expected JSON: {e}"),
        })?;
        Ok(DeviceAuthorization {
            device_code: SecretString::from(raw.device_code),
            user_code: raw.user_code,
            verification_uri: raw.verification_uri,
            verification_uri_complete: raw.verification_uri_complete,
            expires_in: raw.expires_in,
            interval: raw.interval.max(1),
        })
    }

    /// Step 4 of the device flow: one poll of the token endpoint.
    pub(crate) async fn poll_device_token(
        &self,
        device_code: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let form = [
            ("grant_type", DEVICE_GRANT),
            ("device_code", device_code),
            ("client_id", self.client_id.as_str()),
        ];
        let body = self.post(Endpoint::Token, &self.token_url, &form).await?;
        Self::parse_token(&body)
    }

    /// The authorize URL a person opens in a browser (reference §2.4 step 1: `client_id`,
    /// `redirect_uri`, `response_type=code`, `scope`, `state`; PKCE adds `code_challenge` and
    /// `code_challenge_method=S256`, https://developer.constantcontact.com/api_guide/pkce_flow.html).
    /// Spaces in the scope are written `+` (form encoding), never `%2B` (reference §2.2).
    pub(crate) fn authorize_url(
        &self,
        redirect_uri: &str,
        scope: &str,
        state: &str,
        code_challenge: Option<&str>,
    ) -> url::Url {
        let mut u = self.authorize_url.clone();
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("response_type", "code")
                .append_pair("scope", scope)
                .append_pair("state", state);
            if let Some(c) = code_challenge {
                q.append_pair("code_challenge", c)
                    .append_pair("code_challenge_method", "S256");
            }
        }
        u
    }

    /// `grant_type=authorization_code` (reference §2.3, §2.4): the code, the same `redirect_uri`
    /// as in the authorize URL, and for PKCE the `code_verifier`. A client built with a secret
    /// authenticates with HTTP Basic (the authorization code flow,
    /// https://developer.constantcontact.com/api_guide/server_flow.html); one without sends
    /// `client_id` (PKCE "does not use the client secret"). The caller has passed the shared
    /// 1 request/s gate.
    pub(crate) async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ];
        if let Some(v) = code_verifier {
            form.push(("code_verifier", v));
        }
        if self.client_secret.is_none() {
            form.push(("client_id", self.client_id.as_str()));
        }
        let body = self.post(Endpoint::Token, &self.token_url, &form).await?;
        Self::parse_token(&body)
    }

    /// Fetch a JWKS document (`auth.jwks_url`) for access-token signature checks.
    pub async fn fetch_jwks(&self, url: &str) -> Result<Vec<u8>, OAuthError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OAuthError::Transport(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| OAuthError::Transport(e.without_url().to_string()))?;
        if status != 200 {
            return Err(OAuthError::Unexpected {
                status,
                detail: "JWKS fetch failed".into(),
            });
        }
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests;

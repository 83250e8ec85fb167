//! The token endpoint's error answers, RFC 6749 §5.2 / RFC 8628 §3.5 in CC's (Okta's) wording
//! where it is known (reference §2.5, §3.4).

/// An OAuth error answer (`{"error","error_description"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthError {
    InvalidRequest(String),
    InvalidClient,
    InvalidGrant(&'static str),
    UnsupportedGrantType,
    AuthorizationPending,
    SlowDown,
    ExpiredToken,
    AccessDenied,
    TooManyRequests,
}

/// CC's observed text for a dead refresh token (reference §3.4).
pub const DEAD_REFRESH: &str = "The refresh token is invalid or expired.";

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::AccessDenied => "access_denied",
            Self::TooManyRequests => "too_many_requests",
        }
    }
    pub fn description(&self) -> String {
        match self {
            Self::InvalidRequest(s) => s.clone(),
            Self::InvalidClient => "Client authentication failed.".into(),
            Self::InvalidGrant(s) => (*s).into(),
            Self::UnsupportedGrantType => {
                "The authorization grant type is not supported by the authorization server.".into()
            }
            Self::AuthorizationPending => {
                "The device authorization is pending. Please try again later.".into()
            }
            Self::SlowDown => {
                "The client is polling too frequently. Add 5 seconds to the polling interval."
                    .into()
            }
            Self::ExpiredToken => "The device code has expired.".into(),
            Self::AccessDenied => {
                "The resource owner or authorization server denied the request.".into()
            }
            Self::TooManyRequests => {
                "Too many requests to the token endpoint; at most 1 request per second per client."
                    .into()
            }
        }
    }
    /// HTTP status: 401 for client authentication, 429 for the rate limit, else 400 (RFC 6749 §5.2).
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidClient => 401,
            Self::TooManyRequests => 429,
            _ => 400,
        }
    }
}

//! Tokens as values: Google-signed ID tokens (expiry read from their `exp`
//! claim) and OAuth access tokens. Both are secrets: `Debug` is redacted and
//! the raw string is only reachable through `expose()`.
//!
//! It must not verify signatures: tokens come straight from Google over TLS and
//! are checked by the function's front end; we only read the expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// A Google-signed OpenID Connect ID token.
///
/// Cheap to clone (every call takes one from the cache): the token and its
/// `Authorization` header are shared, built once when it is minted.
#[derive(Clone)]
pub struct IdToken {
    raw: std::sync::Arc<SecretString>,
    /// `Bearer RAW`, marked sensitive (never printed by `Debug`).
    authorization: http::HeaderValue,
    pub expires_at: SystemTime,
    /// The `email` claim, when present (which account the token speaks for).
    pub email: Option<String>,
}

impl std::fmt::Debug for IdToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdToken")
            .field("token", &"[REDACTED]")
            .field("expires_at", &crate::action::rfc3339(self.expires_at))
            .field("email", &self.email)
            .finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<serde_json::Value>,
    email: Option<String>,
}

impl IdToken {
    /// Reads the claims of a compact JWT without verifying it. A token without a
    /// sane numeric `exp` is refused: we could not know when to refresh it.
    pub fn parse(raw: String) -> Result<Self, String> {
        let raw = raw.trim().to_owned();
        let mut parts = raw.split('.');
        let (Some(_header), Some(payload), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT (expected three dot-separated parts)".into());
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| "JWT payload is not base64url".to_owned())?;
        let claims: Claims = serde_json::from_slice(&bytes)
            .map_err(|_| "JWT payload is not a JSON object".to_owned())?;
        let exp = claims
            .exp
            .as_ref()
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
            .filter(|&e| e > 0 && e < 32_503_680_000) // before year 3000
            .ok_or_else(|| "JWT has no valid numeric `exp` claim".to_owned())?;
        let mut authorization =
            http::HeaderValue::from_maybe_shared(bytes::Bytes::from(format!("Bearer {raw}")))
                .map_err(|_| "JWT holds characters a header cannot carry".to_owned())?;
        authorization.set_sensitive(true);
        Ok(Self {
            raw: std::sync::Arc::new(SecretString::from(raw)),
            authorization,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp as u64),
            email: claims.email,
        })
    }

    /// The `Authorization` header that presents it.
    pub fn authorization(&self) -> http::HeaderValue {
        self.authorization.clone()
    }

    pub fn expose(&self) -> &str {
        self.raw.expose_secret()
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

/// An OAuth 2.0 access token (used as the source of impersonation and for the
/// Cloud Functions API).
#[derive(Clone)]
pub struct AccessToken {
    raw: SecretString,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[REDACTED]")
            .finish()
    }
}

impl AccessToken {
    pub fn new(raw: String, expires_at: SystemTime) -> Self {
        Self {
            raw: SecretString::from(raw),
            expires_at,
        }
    }
    pub fn expose(&self) -> &str {
        self.raw.expose_secret()
    }
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) fn unsigned_jwt(claims: serde_json::Value) -> String {
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.c2ln",
        b64(&serde_json::json!({"alg":"RS256","typ":"JWT"})),
        b64(&claims)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_exp_and_email_and_redacts() {
        let t = IdToken::parse(unsigned_jwt(
            serde_json::json!({"exp": 2_000_000_000, "email": "a@b.c"}),
        ))
        .unwrap();
        assert_eq!(
            t.expires_at,
            UNIX_EPOCH + Duration::from_secs(2_000_000_000)
        );
        assert_eq!(t.email.as_deref(), Some("a@b.c"));
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn refuses_tokens_without_exp() {
        assert!(IdToken::parse(unsigned_jwt(serde_json::json!({"email": "a@b.c"}))).is_err());
        assert!(IdToken::parse(unsigned_jwt(serde_json::json!({"exp": "soon"}))).is_err());
        assert!(IdToken::parse("a.b".into()).is_err());
        assert!(IdToken::parse("a.!!!.c".into()).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = IdToken::parse(s);
        }
    }
}

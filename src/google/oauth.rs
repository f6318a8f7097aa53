//! The JWT-bearer grant (RFC 7523 as Google implements it): a self-signed RS256
//! assertion from a service-account key, POSTed to the key's `token_uri`, for
//! an ID token (`target_audience`) or an access token (`scope`).
//!
//! It must only POST to the `token_uri` of the key (validated at load), and must
//! never log the assertion or the tokens.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{CredentialsError, oauth_advice, snippet};
use super::key::{ServiceAccountKey, UserLogin};
use super::token::{AccessToken, IdToken};
use crate::clock::Clock;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google accepts assertions valid for at most an hour.
const ASSERTION_LIFETIME: i64 = 3600;
/// The assertion's `iat` is this far in the past: a token endpoint refuses an
/// assertion issued in its future, and every host's clock is a little off.
/// Google's libraries do the same (golang.org/x/oauth2/jws backdates by 10 s;
/// google-cloud-rust's `CLOCK_SKEW_FUDGE` is 10 s, with `exp` = `iat` + 1 h).
const CLOCK_SKEW_FUDGE: i64 = 10;
/// Token endpoint answers are small; anything larger is not Google.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// What the assertion asks for.
pub(crate) enum Grant<'a> {
    IdToken { audience: &'a str },
    AccessToken { scope: &'a str },
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_audience: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// Builds the signed assertion: header `kid` = `private_key_id`, `iss` = `sub` =
/// `client_email`, `aud` = `token_uri`, issued 10 s ago, lifetime one hour.
pub(crate) fn assertion(
    key: &ServiceAccountKey,
    grant: &Grant<'_>,
    clock: &Clock,
) -> Result<String, CredentialsError> {
    let iat = clock.unix_secs() - CLOCK_SKEW_FUDGE;
    let (target_audience, scope) = match grant {
        Grant::IdToken { audience } => (Some(*audience), None),
        Grant::AccessToken { scope } => (None, Some(*scope)),
    };
    let claims = AssertionClaims {
        iss: &key.client_email,
        sub: &key.client_email,
        aud: key.token_uri.as_str(),
        iat,
        exp: iat + ASSERTION_LIFETIME,
        target_audience,
        scope,
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.private_key_id.clone());
    jsonwebtoken::encode(&header, &claims, &key.signing_key).map_err(|e| CredentialsError::Sign {
        account: key.client_email.clone(),
        reason: e.to_string(),
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The token endpoint's answer to one grant.
pub(crate) enum Minted {
    Id(IdToken),
    Access(AccessToken),
}

/// Exchanges a freshly signed assertion at the key's `token_uri`.
pub(crate) async fn exchange(
    http: &reqwest::Client,
    key: &ServiceAccountKey,
    grant: Grant<'_>,
    clock: &Clock,
) -> Result<Minted, CredentialsError> {
    let url = key.token_uri.as_str();
    let assertion = assertion(key, &grant, clock)?;
    let answer = post_form(
        http,
        &key.token_uri,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", assertion.as_str()),
        ],
    )
    .await?;
    let account = format!(
        "service account {} (key {})",
        key.client_email, key.private_key_id
    );
    read_answer(url, &account, answer.status, &answer.body, &grant, clock)
}

/// POSTs `form` to a token endpoint (OAuth or STS) and reads the answer,
/// at most 64 KiB.
pub(crate) async fn post_form(
    http: &reqwest::Client,
    url: &url::Url,
    form: &[(&str, &str)],
) -> Result<crate::http::Answer, CredentialsError> {
    let request = http
        .post(url.clone())
        .timeout(Duration::from_secs(30))
        .form(form);
    crate::http::exchange(request, MAX_TOKEN_RESPONSE)
        .await
        .map_err(|e| {
            CredentialsError::exchange(
                url.as_str(),
                e,
                "check network access (and HTTPS_PROXY) to the token endpoint",
            )
        })
}

/// Exchanges a person's refresh token at the login's `token_uri` for an
/// access token, as google-auth's `refresh_grant` does (`grant_type`,
/// `client_id`, `client_secret`, `refresh_token`).
pub(crate) async fn refresh(
    http: &reqwest::Client,
    login: &UserLogin,
    clock: &Clock,
) -> Result<AccessToken, CredentialsError> {
    use secrecy::ExposeSecret;
    let url = login.token_uri.as_str();
    let answer = post_form(
        http,
        &login.token_uri,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", login.client_id.as_str()),
            ("client_secret", login.client_secret.expose_secret()),
            ("refresh_token", login.refresh_token.expose_secret()),
        ],
    )
    .await?;
    let grant = Grant::AccessToken {
        scope: CLOUD_PLATFORM_SCOPE,
    };
    match read_answer(
        url,
        &login.principal(),
        answer.status,
        &answer.body,
        &grant,
        clock,
    )? {
        Minted::Access(t) => Ok(t),
        Minted::Id(_) => unreachable!("an access-token read answers an access token"),
    }
}

/// What the token endpoint's answer (`status`, `body`) to `grant` means: the
/// token, or why not. Pure, so it can be tested (and fuzzed) alone.
pub(crate) fn read_answer(
    url: &str,
    account: &str,
    status: u16,
    body: &[u8],
    grant: &Grant<'_>,
    clock: &Clock,
) -> Result<Minted, CredentialsError> {
    if !(200..300).contains(&status) {
        return Err(match serde_json::from_slice::<OAuthError>(body) {
            Ok(err) => {
                let (advice, retryable) = oauth_advice(&err.error, &err.error_description);
                CredentialsError::Refused {
                    url: url.into(),
                    account: account.to_owned(),
                    error: err.error.chars().take(100).collect(),
                    description: err.error_description.chars().take(300).collect(),
                    advice,
                    // google-auth's `_can_retry`: these statuses are
                    // retried whatever the body says (429 with a JSON
                    // `rate_limit_exceeded` included).
                    retryable: retryable || super::error::retryable_status(status),
                }
            }
            Err(_) => CredentialsError::Http {
                url: url.into(),
                status,
                snippet: snippet(body),
            },
        });
    }
    let parsed: TokenResponse =
        serde_json::from_slice(body).map_err(|_| CredentialsError::BadResponse {
            url: url.into(),
            reason: "not a JSON object".into(),
        })?;
    match grant {
        Grant::IdToken { .. } => {
            let raw = parsed
                .id_token
                .ok_or_else(|| CredentialsError::BadResponse {
                    url: url.into(),
                    reason: "no `id_token` in the reply".into(),
                })?;
            IdToken::parse(raw)
                .map(Minted::Id)
                .map_err(|reason| CredentialsError::BadResponse {
                    url: url.into(),
                    reason,
                })
        }
        Grant::AccessToken { .. } => {
            let raw = parsed
                .access_token
                .ok_or_else(|| CredentialsError::BadResponse {
                    url: url.into(),
                    reason: "no `access_token` in the reply".into(),
                })?;
            let lifetime = parsed.expires_in.unwrap_or(3600).min(24 * 3600);
            Ok(Minted::Access(AccessToken::new(
                raw,
                clock.now() + Duration::from_secs(lifetime),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::key::tests::{key_json, test_pem};

    #[test]
    fn assertion_has_googles_shape() {
        let pem = test_pem();
        let key = ServiceAccountKey::from_json(
            &key_json(&pem, "https://oauth2.googleapis.com/token"),
            "k",
            false,
        )
        .unwrap();
        let clock = Clock::system();
        let jwt = assertion(
            &key,
            &Grant::IdToken {
                audience: "https://f.example/x",
            },
            &clock,
        )
        .unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("abc123"));
        let payload = jwt.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["iss"], "gb@acme-prod.iam.gserviceaccount.com");
        assert_eq!(claims["sub"], claims["iss"]);
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["target_audience"], "https://f.example/x");
        assert!(claims.get("scope").is_none());
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
    }

    /// google-auth retries 408, 429, 500, 503 and 504 whatever the body (a
    /// JSON error included), and the transient OAuth codes at any status.
    #[test]
    fn retryable_statuses_are_retried_whatever_the_body() {
        let read = |status: u16, body: &str| {
            read_answer(
                "https://oauth2.googleapis.com/token",
                "gb@acme-prod.iam.gserviceaccount.com",
                status,
                body.as_bytes(),
                &Grant::IdToken {
                    audience: "https://f",
                },
                &Clock::system(),
            )
            .err()
            .expect("an error answer is an error")
            .is_retryable()
        };
        let json = r#"{"error":"rate_limit_exceeded","error_description":"Rate Limit Exceeded"}"#;
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(read(status, json), "{status} with a JSON error");
            assert!(read(status, "<html>busy</html>"), "{status} with HTML");
        }
        assert!(read(400, r#"{"error":"temporarily_unavailable"}"#));
        assert!(!read(
            400,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
        ));
        assert!(!read(403, json));
    }

    /// A host clock a few seconds ahead of Google's must not get "Invalid JWT":
    /// `iat` is backdated by 10 s, as Google's own libraries do.
    #[test]
    fn the_assertion_is_issued_ten_seconds_in_the_past() {
        let key = ServiceAccountKey::from_json(
            &key_json(&test_pem(), "https://oauth2.googleapis.com/token"),
            "k",
            false,
        )
        .unwrap();
        let clock = Clock::system();
        let before = clock.unix_secs();
        let jwt = assertion(&key, &Grant::AccessToken { scope: "s" }, &clock).unwrap();
        let after = clock.unix_secs();
        let payload = jwt.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        let iat = claims["iat"].as_i64().unwrap();
        assert!(
            (before - 10..=after - 10).contains(&iat),
            "iat {iat}, now {before}"
        );
        assert_eq!(claims["exp"].as_i64().unwrap(), iat + 3600);
    }
}

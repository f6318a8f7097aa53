//! Workload identity federation: a subject token from outside Google (a
//! file or a URL) exchanged at Google's Security Token Service for a federated
//! access token (RFC 8693, with the parameters google-auth's `sts.Client`
//! sends). The federated token then impersonates a service account through
//! IAM Credentials, which mints the ID tokens (what Go's `idtoken` does).
//!
//! It must never log the subject token or the federated token, and must say
//! which step failed: reading the subject token, or the exchange.

use std::time::Duration;

use serde::Deserialize;

use super::error::{CredentialsError, snippet};
use super::key::{ExternalAccount, SubjectTokenSource};
use super::token::AccessToken;
use crate::clock::Clock;

pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// STS answers are small; a subject token is a few KiB.
const MAX_ANSWER: usize = 64 * 1024;

/// The subject token, read fresh for every exchange (a projected token rotates).
pub(crate) async fn subject_token(
    http: &reqwest::Client,
    account: &ExternalAccount,
    aws: &super::aws::AwsEnvironment,
    now: std::time::SystemTime,
) -> Result<String, CredentialsError> {
    match &account.source {
        SubjectTokenSource::Aws(source) => {
            super::aws::subject_token(http, source, aws, &account.audience, now).await
        }
        SubjectTokenSource::File { path, format } => {
            let raw = tokio::fs::read_to_string(path).await.map_err(|e| {
                CredentialsError::Setup(format!(
                    "workload identity federation: reading the subject token file {}: {e} (a Kubernetes projected service-account token: check the volume, its path and its `audience`)",
                    path.display()
                ))
            })?;
            format.read(&raw).map_err(|why| {
                CredentialsError::Setup(format!(
                    "workload identity federation: the subject token file {}: {why}",
                    path.display()
                ))
            })
        }
        SubjectTokenSource::Url {
            url,
            headers,
            format,
        } => {
            let mut request = http.get(url.clone());
            for (k, v) in headers {
                request = request.header(k, v);
            }
            let body = fetch(
                request,
                url,
                "workload identity federation: the subject token URL (credential_source.url) did not answer",
            )
            .await?;
            format.read(&String::from_utf8_lossy(&body)).map_err(|why| {
                CredentialsError::Setup(format!(
                    "workload identity federation: the subject token URL {url} answered, but {why}"
                ))
            })
        }
    }
}

/// The body of a 200 answer to `request` (to `url`, 10 s at most), else
/// what went wrong; `silent` says what no answer means.
pub(crate) async fn fetch(
    request: reqwest::RequestBuilder,
    url: &url::Url,
    silent: &'static str,
) -> Result<bytes::Bytes, CredentialsError> {
    let request = request.timeout(Duration::from_secs(10));
    let answer = crate::http::exchange(request, MAX_ANSWER)
        .await
        .map_err(|e| CredentialsError::exchange(url.as_str(), e, silent))?;
    if answer.status != 200 {
        return Err(CredentialsError::Http {
            url: url.to_string(),
            status: answer.status,
            snippet: snippet(&answer.body),
        });
    }
    Ok(answer.body)
}

/// Exchanges `subject_token` at STS for a federated access token.
pub(crate) async fn exchange(
    http: &reqwest::Client,
    account: &ExternalAccount,
    subject_token: &str,
    clock: &Clock,
) -> Result<AccessToken, CredentialsError> {
    let url = account.token_url.as_str();
    let answer = super::oauth::post_form(
        http,
        &account.token_url,
        &[
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("audience", account.audience.as_str()),
            ("scope", CLOUD_PLATFORM_SCOPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject_token),
            ("subject_token_type", account.subject_token_type.as_str()),
        ],
    )
    .await?;
    read_answer(
        url,
        &account.audience,
        answer.status,
        &answer.body,
        clock.now(),
    )
}

#[derive(Deserialize)]
struct StsError {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// What STS's answer means: the federated token, or which part of the pool
/// to check. Pure, so it can be tested (and fuzzed) alone.
pub(crate) fn read_answer(
    url: &str,
    audience: &str,
    status: u16,
    body: &[u8],
    now: std::time::SystemTime,
) -> Result<AccessToken, CredentialsError> {
    if !(200..300).contains(&status) {
        return Err(match serde_json::from_slice::<StsError>(body) {
            Ok(e) => CredentialsError::Refused {
                url: url.into(),
                account: format!("workload identity provider {audience}"),
                error: e.error.chars().take(100).collect(),
                description: e.error_description.chars().take(300).collect(),
                advice: "STS refused the subject token: check that `audience` names the pool's provider, that the provider's issuer and allowed audiences match the token, and that its attribute mapping (google.subject) and condition accept it",
                retryable: super::error::retryable_status(status),
            },
            Err(_) => CredentialsError::Http {
                url: url.into(),
                status,
                snippet: snippet(body),
            },
        });
    }
    #[derive(Deserialize)]
    struct Reply {
        access_token: String,
        #[serde(default)]
        expires_in: Option<serde_json::Value>,
    }
    let r: Reply = serde_json::from_slice(body).map_err(|_| CredentialsError::BadResponse {
        url: url.into(),
        reason: "expected {\"access_token\",\"expires_in\"}".into(),
    })?;
    // google-auth accepts `expires_in` as a number or a string.
    let secs = match r.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(3600)
    .min(24 * 3600);
    if r.access_token.is_empty() {
        return Err(CredentialsError::BadResponse {
            url: url.into(),
            reason: "an empty access_token".into(),
        });
    }
    Ok(AccessToken::new(
        r.access_token,
        now + Duration::from_secs(secs),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_google_auth_reads_them() {
        let now = std::time::SystemTime::now();
        let ok = read_answer("u", "a", 200, br#"{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":"3599"}"#, now).unwrap();
        assert_eq!(ok.expose(), "t");
        assert_eq!(ok.remaining(now).as_secs(), 3599);
        let err = read_answer("u", "//iam.googleapis.com/x", 400, br#"{"error":"invalid_grant","error_description":"The audience in ID Token does not match the expected audience."}"#, now).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("invalid_grant") && text.contains("attribute mapping"),
            "{text}"
        );
        assert!(!err.is_retryable());
        assert!(
            read_answer("u", "a", 503, b"busy", now)
                .unwrap_err()
                .is_retryable()
        );
        assert!(read_answer("u", "a", 200, b"{}", now).is_err());
    }
}

//! IAM Credentials API: `generateIdToken` (and `generateAccessToken`) for a
//! target service account, authenticated with the caller's access token.
//! This is how one account mints ID tokens as another (impersonation).
//!
//! It must only call the configured IAM Credentials base URL.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use url::Url;

use super::error::{CredentialsError, retryable_status};
use super::token::{AccessToken, IdToken};

const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct IamCredentials {
    http: reqwest::Client,
    base: Url,
}

impl IamCredentials {
    pub fn new(http: reqwest::Client, base: Url) -> Self {
        Self { http, base }
    }

    fn url(&self, target: &str, method: &str) -> Url {
        // The email is a path segment; push_segment percent-encodes anything odd.
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) base URL")
            .pop_if_empty()
            .extend(["v1", "projects", "-", "serviceAccounts"])
            .push(&format!("{target}:{method}"));
        url
    }

    async fn call<T: Serialize>(
        &self,
        method: &'static str,
        source: &AccessToken,
        source_name: &str,
        target: &str,
        body: &T,
    ) -> Result<Vec<u8>, CredentialsError> {
        let url = self.url(target, method);
        let shown = url.to_string();
        let request = self.http.post(url).bearer_auth(source.expose()).json(body);
        let answer = crate::http::exchange(request, MAX_RESPONSE)
            .await
            .map_err(|e| {
                CredentialsError::exchange(
                    &shown,
                    e,
                    "check network access to iamcredentials.googleapis.com",
                )
            })?;
        if answer.is_success() {
            return Ok(answer.body.to_vec());
        }
        let (status, bytes) = (answer.status, answer.body);
        let (google_status, message) = super::error::google_api_error(&bytes);
        let advice = match status {
            401 => format!("The source credentials ({source_name}) were not accepted; check them"),
            403 => format!(
                "Grant {source_name} roles/iam.serviceAccountTokenCreator on {target} (gcloud iam service-accounts add-iam-policy-binding {target} --member=serviceAccount:SOURCE_EMAIL --role=roles/iam.serviceAccountTokenCreator); with delegates, each account needs it on the next"
            ),
            404 => format!(
                "The service account {target} does not exist (check target_service_account)"
            ),
            s if retryable_status(s) => "A transient error; grantbridge retries".to_owned(),
            _ => "Check the impersonation settings".to_owned(),
        };
        Err(CredentialsError::Iam {
            method,
            target: target.into(),
            status,
            google_status,
            message,
            advice,
        })
    }

    /// An ID token of `target` for `audience`, with the `email` claim.
    pub async fn generate_id_token(
        &self,
        source: &AccessToken,
        source_name: &str,
        target: &str,
        delegates: &[String],
        audience: &str,
    ) -> Result<IdToken, CredentialsError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Req<'a> {
            audience: &'a str,
            include_email: bool,
            delegates: Vec<String>,
        }
        let req = Req {
            audience,
            include_email: true,
            delegates: delegate_names(delegates),
        };
        let body = self
            .call("generateIdToken", source, source_name, target, &req)
            .await?;
        read_id_token(self.url(target, "generateIdToken").as_ref(), &body)
    }

    /// An access token of `target` (for the Cloud Functions API as that account).
    pub async fn generate_access_token(
        &self,
        source: &AccessToken,
        source_name: &str,
        target: &str,
        delegates: &[String],
        scope: &str,
    ) -> Result<AccessToken, CredentialsError> {
        #[derive(Serialize)]
        struct Req<'a> {
            scope: [&'a str; 1],
            delegates: Vec<String>,
            lifetime: &'static str,
        }
        let req = Req {
            scope: [scope],
            delegates: delegate_names(delegates),
            lifetime: "3600s",
        };
        let body = self
            .call("generateAccessToken", source, source_name, target, &req)
            .await?;
        read_access_token(self.url(target, "generateAccessToken").as_ref(), &body)
    }
}

/// `generateIdToken`'s answer: `{"token"}`, a Google-signed ID token.
pub(crate) fn read_id_token(url: &str, body: &[u8]) -> Result<IdToken, CredentialsError> {
    #[derive(Deserialize)]
    struct Reply {
        token: String,
    }
    let reply: Reply = serde_json::from_slice(body).map_err(|_| CredentialsError::BadResponse {
        url: url.into(),
        reason: "expected {\"token\"}".into(),
    })?;
    IdToken::parse(reply.token).map_err(|reason| CredentialsError::BadResponse {
        url: url.into(),
        reason,
    })
}

/// `generateAccessToken`'s answer: `{"accessToken", "expireTime"}`.
pub(crate) fn read_access_token(url: &str, body: &[u8]) -> Result<AccessToken, CredentialsError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Reply {
        access_token: String,
        expire_time: String,
    }
    let bad = |reason: &str| CredentialsError::BadResponse {
        url: url.to_owned(),
        reason: reason.into(),
    };
    let reply: Reply = serde_json::from_slice(body)
        .map_err(|_| bad("expected {\"accessToken\",\"expireTime\"}"))?;
    let expires: SystemTime = crate::action::parse_rfc3339(&reply.expire_time)
        .ok_or_else(|| bad("expireTime is not RFC 3339"))?;
    Ok(AccessToken::new(reply.access_token, expires))
}

fn delegate_names(delegates: &[String]) -> Vec<String> {
    delegates
        .iter()
        .map(|d| format!("projects/-/serviceAccounts/{d}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_googles_resource_names() {
        let iam = IamCredentials::new(
            reqwest::Client::new(),
            Url::parse("https://iamcredentials.googleapis.com").unwrap(),
        );
        assert_eq!(
            iam.url("fn@p.iam.gserviceaccount.com", "generateIdToken")
                .as_str(),
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/fn@p.iam.gserviceaccount.com:generateIdToken"
        );
        // A hostile target cannot escape the path.
        let u = iam.url("x/../../evil", "generateIdToken");
        assert!(
            u.path().starts_with("/v1/projects/-/serviceAccounts/"),
            "{u}"
        );
        assert_eq!(u.host_str(), Some("iamcredentials.googleapis.com"));
    }
}

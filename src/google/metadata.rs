//! The GCE / GKE Workload Identity / Cloud Run metadata server: ID tokens from
//! `.../service-accounts/default/identity`, access tokens from `.../token`.
//!
//! It must never go through a proxy, must always send `Metadata-Flavor: Google`,
//! and must keep timeouts short (a missing metadata server must fail fast).

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::error::{CredentialsError, snippet};
use super::token::{AccessToken, IdToken};
use crate::clock::Clock;

pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
const MAX_RESPONSE: usize = 64 * 1024;

/// A metadata server client.
#[derive(Debug, Clone)]
pub struct MetadataServer {
    http: reqwest::Client,
    base: Url,
    /// Extra words for "not reachable" errors (e.g. the ADC search that led here).
    context: String,
}

impl MetadataServer {
    /// `host` is `host[:port]` (from config, `GCE_METADATA_HOST`, or the default).
    pub fn new(
        http: reqwest::Client,
        host: &str,
        context: String,
    ) -> Result<Self, CredentialsError> {
        let bad =
            || CredentialsError::Setup(format!("metadata host `{host}` is not a host[:port]"));
        if host.contains('/') || host.contains('@') || host.is_empty() {
            return Err(bad());
        }
        let base = Url::parse(&format!("http://{host}/")).map_err(|_| bad())?;
        Ok(Self {
            http,
            base,
            context,
        })
    }

    pub fn host(&self) -> String {
        self.base[url::Position::BeforeHost..url::Position::AfterPort].to_owned()
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<u8>, CredentialsError> {
        let mut url = self.base.join(path).expect("static metadata path");
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let shown = format!("{}{}", self.base.as_str().trim_end_matches('/'), url.path());
        let not_here = format!(
            "grantbridge is probably not running on GCE, GKE or Cloud Run (or GCE_METADATA_HOST is wrong){}",
            self.context
        );
        let request = self.http.get(url).header("Metadata-Flavor", "Google");
        let answer = crate::http::exchange(request, MAX_RESPONSE)
            .await
            .map_err(|e| CredentialsError::exchange(&shown, e, &not_here))?;
        // The answer's own `Metadata-Flavor` header is not required: google-auth
        // checks it only when probing for a metadata server, never on data
        // answers, and a GKE release once dropped it from token answers
        // (clients that insisted on it broke). The answer is still parsed as
        // a token, so an impostor's page is refused.
        let (status, body) = (answer.status, answer.body);
        if status != 200 {
            let advice = match status {
                404 => "No service account is attached to this VM or pod. On GKE, check that the Kubernetes ServiceAccount is annotated with iam.gke.io/gcp-service-account and bound with roles/iam.workloadIdentityUser".to_owned(),
                403 => "The metadata server refused the request".to_owned(),
                _ => "The metadata server had a problem; grantbridge retries".to_owned(),
            };
            return Err(CredentialsError::Metadata {
                url: shown,
                status,
                detail: snippet(&body),
                advice,
            });
        }
        Ok(body.to_vec())
    }

    /// An ID token for `audience`, with the full claims (`format=full`).
    pub async fn id_token(&self, audience: &str) -> Result<IdToken, CredentialsError> {
        let path = "computeMetadata/v1/instance/service-accounts/default/identity";
        let body = self
            .get(path, &[("audience", audience), ("format", "full")])
            .await?;
        let text = String::from_utf8(body).map_err(|_| CredentialsError::BadResponse {
            url: self.base.join(path).unwrap().to_string(),
            reason: "identity is not UTF-8".into(),
        })?;
        IdToken::parse(text).map_err(|reason| CredentialsError::BadResponse {
            url: self.base.join(path).unwrap().to_string(),
            reason,
        })
    }

    /// An OAuth access token of the attached service account.
    pub async fn access_token(&self, clock: &Clock) -> Result<AccessToken, CredentialsError> {
        let path = "computeMetadata/v1/instance/service-accounts/default/token";
        let body = self.get(path, &[]).await?;
        read_access_token(self.base.join(path).unwrap().as_ref(), &body, clock.now())
    }

    /// The attached service account's email.
    pub async fn email(&self) -> Result<String, CredentialsError> {
        let body = self
            .get(
                "computeMetadata/v1/instance/service-accounts/default/email",
                &[],
            )
            .await?;
        Ok(String::from_utf8_lossy(&body)
            .trim()
            .chars()
            .take(256)
            .collect())
    }
}

/// The token endpoint's answer: `{"access_token", "expires_in"}` (a
/// lifetime over a day is held to one).
pub(crate) fn read_access_token(
    url: &str,
    body: &[u8],
    now: std::time::SystemTime,
) -> Result<AccessToken, CredentialsError> {
    #[derive(Deserialize)]
    struct Reply {
        access_token: String,
        expires_in: u64,
    }
    let r: Reply = serde_json::from_slice(body).map_err(|_| CredentialsError::BadResponse {
        url: url.into(),
        reason: "expected {\"access_token\",\"expires_in\"}".into(),
    })?;
    Ok(AccessToken::new(
        r.access_token,
        now + Duration::from_secs(r.expires_in.min(24 * 3600)),
    ))
}

//! Google identity: credentials that mint Google-signed ID tokens, and the
//! per-audience token cache; and the read-only Cloud Functions API client the
//! online checks use. The flows are written here (not taken from the
//! google-cloud-auth crate) because that crate hard-codes Google's endpoints and
//! these must be pointed at the sandbox in tests.
//!
//! It must never log or return a token, key or assertion in an error.

mod adc;
pub mod aws;
mod cache;
mod credentials;
mod error;
pub mod functions_api;
mod iam;
pub mod key;
mod metadata;
mod oauth;
mod sts;
mod token;

pub use adc::{Adc, well_known_file};
pub use cache::{MIN_REMAINING, TokenCache, TokenError};
pub use credentials::{Credentials, IdTokenSource};
pub use error::CredentialsError;
pub use functions_api::{CloudFunctionsApi, FunctionsApiError};
pub use iam::IamCredentials;
pub use key::{CredentialsFile, KeyFileError, ServiceAccountKey};
pub use metadata::{DEFAULT_METADATA_HOST, MetadataServer};
pub use token::{AccessToken, IdToken};

/// Every way a token answer is read, on `body` answered with `status` (for
/// fuzzing): the OAuth token endpoint for both grants, the metadata server's
/// token, IAM Credentials' `generateIdToken` and `generateAccessToken`.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_token_answers(status: u16, body: &[u8], clock: &crate::clock::Clock) {
    let url = "https://oauth2.googleapis.com/token";
    for grant in [
        oauth::Grant::IdToken {
            audience: "https://fn.example",
        },
        oauth::Grant::AccessToken {
            scope: "https://www.googleapis.com/auth/cloud-platform",
        },
    ] {
        let _ = oauth::read_answer(url, "sa", status, body, &grant, clock);
    }
    let _ = metadata::read_access_token(url, body, clock.now());
    let _ = iam::read_id_token(url, body);
    let _ = iam::read_access_token(url, body);
    let _ = sts::read_answer(url, "//iam.googleapis.com/p", status, body, clock.now());
}

use std::path::PathBuf;
use std::sync::Arc;

use url::Url;

use crate::clock::Clock;
use crate::env::Environment;

/// IAM Credentials, where impersonation mints ID tokens.
pub const DEFAULT_IAM_CREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com";

/// Where a connection's identity comes from.
#[derive(Debug, Clone)]
pub enum CredentialsSpec {
    /// A service-account key file, already parsed.
    ServiceAccountKey {
        key_file: PathBuf,
        key: Arc<ServiceAccountKey>,
    },
    /// The GCE/GKE/Cloud Run metadata server.
    Metadata { host: Option<String> },
    /// IAM Credentials `generateIdToken` for `target`, authenticated as `source`.
    Impersonate {
        target: String,
        delegates: Vec<String>,
        source: Box<CredentialsSpec>,
        iam_credentials_url: Url,
    },
    /// Application Default Credentials, resolved when the app starts.
    Adc,
    /// Workload identity federation: a credential configuration file
    /// (`external_account`), already parsed.
    ExternalAccount {
        config_file: PathBuf,
        account: Arc<key::ExternalAccount>,
    },
}

/// What building credentials needs from the outside.
pub struct CredentialsContext<'a> {
    pub env: &'a dyn Environment,
    pub http: reqwest::Client,
    pub metadata_http: reqwest::Client,
    pub clock: Clock,
    pub allow_insecure_loopback: bool,
}

impl CredentialsContext<'_> {
    fn metadata(
        &self,
        host: Option<&str>,
        context: String,
    ) -> Result<Credentials, CredentialsError> {
        let host = host
            .map(str::to_owned)
            .or_else(|| self.env.var("GCE_METADATA_HOST"))
            .unwrap_or_else(|| DEFAULT_METADATA_HOST.to_owned());
        let server = MetadataServer::new(self.metadata_http.clone(), &host, context)?;
        Ok(Credentials::metadata(
            server,
            self.http.clone(),
            self.clock.clone(),
        ))
    }

    /// Builds the credentials a connection's configuration describes.
    pub fn build(&self, spec: &CredentialsSpec) -> Result<Credentials, CredentialsError> {
        match spec {
            CredentialsSpec::ServiceAccountKey { key, .. } => Ok(Credentials::service_account_key(
                key.clone(),
                self.http.clone(),
                self.clock.clone(),
            )),
            CredentialsSpec::Metadata { host } => self.metadata(host.as_deref(), String::new()),
            CredentialsSpec::Impersonate {
                target,
                delegates,
                source,
                iam_credentials_url,
            } => {
                let source = self.build(source)?;
                let iam = IamCredentials::new(self.http.clone(), iam_credentials_url.clone());
                Ok(Credentials::impersonated(
                    target.clone(),
                    delegates.clone(),
                    source,
                    iam,
                ))
            }
            CredentialsSpec::ExternalAccount { account, .. } => Ok(Credentials::external_account(
                account.clone(),
                aws::AwsEnvironment::from_env(self.env),
                self.http.clone(),
                self.clock.clone(),
            )),
            CredentialsSpec::Adc => match adc::resolve(self.env, self.allow_insecure_loopback)? {
                Adc::Metadata { searched } => self.metadata(None, searched),
                Adc::File { file, .. } => self.build_from_file(file),
            },
        }
    }

    fn build_from_file(&self, file: CredentialsFile) -> Result<Credentials, CredentialsError> {
        match file {
            CredentialsFile::ServiceAccount(key) => Ok(Credentials::service_account_key(
                std::sync::Arc::new(key),
                self.http.clone(),
                self.clock.clone(),
            )),
            CredentialsFile::ExternalAccount(account) => Ok(Credentials::external_account(
                std::sync::Arc::from(account),
                aws::AwsEnvironment::from_env(self.env),
                self.http.clone(),
                self.clock.clone(),
            )),
            CredentialsFile::AuthorizedUser(login) => Ok(Credentials::user_login(
                std::sync::Arc::new(login),
                self.http.clone(),
                self.clock.clone(),
            )),
            CredentialsFile::Impersonated {
                target,
                delegates,
                source,
                impersonation_url,
            } => {
                let source = self.build_from_file(*source)?;
                // The file names the generateAccessToken URL; its origin is the API base.
                let base = impersonation_url
                    .map(|u| u[..url::Position::BeforePath].to_owned())
                    .unwrap_or_else(|| DEFAULT_IAM_CREDENTIALS_URL.to_owned());
                let base =
                    crate::http::checked_url(&base, self.allow_insecure_loopback).map_err(|e| {
                        CredentialsError::Setup(format!("service_account_impersonation_url: {e}"))
                    })?;
                let delegates = delegates
                    .into_iter()
                    .map(|d| d.rsplit('/').next().unwrap_or(&d).to_owned())
                    .collect();
                Ok(Credentials::impersonated(
                    target,
                    delegates,
                    source,
                    IamCredentials::new(self.http.clone(), base),
                ))
            }
        }
    }
}

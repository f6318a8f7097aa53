//! Service-account key files (the JSON `gcloud iam service-accounts keys create`
//! writes), parsed into a validated key. Also recognises the other credential
//! file types ADC may point at, so each gets an error that says what to do.
//!
//! It must never put key material in an error, a log line or `Debug` output.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::http::{UrlPolicyError, checked_url};

/// Google's token endpoint, the default `token_uri`.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A parsed, usable service-account key.
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: String,
    pub token_uri: Url,
    pub project_id: Option<String>,
    /// The RSA key, parsed once.
    pub(crate) signing_key: jsonwebtoken::EncodingKey,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri.as_str())
            .field("private_key", &"[REDACTED]")
            .finish()
    }
}

/// Why a credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a JSON credentials file: {reason}")]
    NotJson { path: String, reason: String },
    #[error(
        "{path} is missing `{field}`; a service-account key file from `gcloud iam service-accounts keys create` has it"
    )]
    Missing { path: String, field: &'static str },
    #[error(
        "{path} holds a user's login (`authorized_user`, from `gcloud auth application-default login`), which cannot mint an ID token for an arbitrary audience such as a function URL. Use a service-account key or the metadata server, or impersonate a service account: `gcloud auth application-default login --impersonate-service-account=SA` writes an `impersonated_service_account` file (this login as its source) that `credentials = \"adc\"` uses, or set `credentials = \"impersonate\"`, `target_service_account` and `source` (\"metadata\" or \"service_account_key\" with `key_file`)"
    )]
    AuthorizedUser { path: String },
    #[error(
        "{path} is a `{kind}` credentials file, which grantbridge does not support; use a service-account key, the metadata server, or impersonation"
    )]
    Unsupported { path: String, kind: String },
    #[error(
        "{path}: `private_key` is not a PEM RSA private key (the key file may be truncated or edited)"
    )]
    BadPrivateKey { path: String },
    #[error("{path}: `token_uri`: {source}")]
    TokenUri {
        path: String,
        #[source]
        source: UrlPolicyError,
    },
}

/// What a credentials JSON file holds, by its `type`.
#[derive(Debug)]
pub enum CredentialsFile {
    ServiceAccount(ServiceAccountKey),
    /// `impersonated_service_account` (from `gcloud auth application-default
    /// login --impersonate-service-account`): source credentials plus a target.
    Impersonated {
        target: String,
        delegates: Vec<String>,
        source: Box<CredentialsFile>,
        /// The generateAccessToken URL the file names; the generateIdToken URL is
        /// derived from it.
        impersonation_url: Option<Url>,
    },
    /// `authorized_user`: a person's login. Accepted only as the source of an
    /// impersonation (it cannot mint an ID token for an arbitrary audience).
    AuthorizedUser(UserLogin),
    /// `external_account`: workload identity federation (the file
    /// `gcloud iam workload-identity-pools create-cred-config` writes).
    ExternalAccount(Box<ExternalAccount>),
}

/// A workload identity federation credential configuration: a subject token
/// from outside Google, exchanged at STS for a federated access token, which
/// impersonates the service account that mints the ID tokens.
#[derive(Debug, Clone)]
pub struct ExternalAccount {
    /// The workload identity provider:
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
    pub audience: String,
    /// e.g. `urn:ietf:params:oauth:token-type:jwt`.
    pub subject_token_type: String,
    /// STS, `https://sts.googleapis.com/v1/token`.
    pub token_url: Url,
    /// The IAM Credentials base the impersonation URL names.
    pub iam_base: Url,
    /// The service account the federated identity impersonates.
    pub service_account: String,
    pub source: SubjectTokenSource,
}

/// Where the subject token comes from.
#[derive(Debug, Clone)]
pub enum SubjectTokenSource {
    /// AWS (`environment_id: aws1`): a SigV4-signed `GetCallerIdentity`.
    Aws(AwsSource),
    /// A file (a Kubernetes projected service-account token, any OIDC token).
    File { path: PathBuf, format: TokenFormat },
    /// A URL answering the token, with headers (e.g. Azure's IMDS).
    Url {
        url: Url,
        headers: Vec<(String, String)>,
        format: TokenFormat,
    },
}

/// An AWS credential source (`environment_id: aws1`).
#[derive(Debug, Clone)]
pub struct AwsSource {
    /// `regional_cred_verification_url`, with `{region}` in it.
    pub verification_url: String,
    /// `region_url`: the instance's availability zone (instance metadata).
    pub region_url: Option<Url>,
    /// `url`: the instance role's security credentials (instance metadata).
    pub credentials_url: Option<Url>,
    /// `imdsv2_session_token_url`: IMDSv2's session token (instance metadata).
    pub imdsv2_url: Option<Url>,
}

/// google-auth's default `regional_cred_verification_url`.
pub const AWS_VERIFICATION_URL: &str =
    "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15";

/// How the subject token is written in the file or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFormat {
    Text,
    /// A JSON object; the token is this field.
    Json {
        field: String,
    },
}

impl TokenFormat {
    /// The subject token in `raw`.
    pub fn read(&self, raw: &str) -> Result<String, String> {
        let token = match self {
            Self::Text => raw.trim().to_owned(),
            Self::Json { field } => serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v.get(field)?.as_str().map(str::to_owned))
                .ok_or_else(|| format!("not a JSON object with a string `{field}`"))?,
        };
        if token.is_empty() {
            return Err("the subject token is empty".into());
        }
        Ok(token)
    }
}

/// A person's OAuth login (`gcloud auth application-default login`): its
/// refresh token is exchanged for the person's access tokens.
pub struct UserLogin {
    pub client_id: String,
    pub client_secret: SecretString,
    pub refresh_token: SecretString,
    /// Google's token endpoint unless the file names another (google-auth
    /// always uses Google's; honouring the field lets tests use the sandbox).
    pub token_uri: Url,
    /// The person's email, when the file names it (`account`).
    pub account: Option<String>,
}

impl UserLogin {
    /// Who its tokens speak for, for messages.
    pub fn principal(&self) -> String {
        match &self.account {
            Some(a) => format!("the login of {a}"),
            None => format!("the login of OAuth client {}", self.client_id),
        }
    }
}

impl std::fmt::Debug for UserLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserLogin")
            .field("client_id", &self.client_id)
            .field("account", &self.account)
            .field("token_uri", &self.token_uri.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RawKey {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<SecretString>,
    token_uri: Option<String>,
    project_id: Option<String>,
    // impersonated_service_account
    service_account_impersonation_url: Option<String>,
    #[serde(default)]
    delegates: Vec<String>,
    source_credentials: Option<serde_json::Value>,
    // external_account
    audience: Option<String>,
    subject_token_type: Option<String>,
    token_url: Option<String>,
    credential_source: Option<serde_json::Value>,
    // authorized_user
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    refresh_token: Option<SecretString>,
    account: Option<String>,
}

impl ServiceAccountKey {
    /// Reads and parses a service-account key file; any other kind of file is
    /// refused with an error that says what it is and what to use instead.
    pub fn from_file(path: &Path, allow_insecure_loopback: bool) -> Result<Self, KeyFileError> {
        match CredentialsFile::from_file(path, allow_insecure_loopback)? {
            CredentialsFile::ServiceAccount(key) => Ok(key),
            CredentialsFile::AuthorizedUser(_) => Err(KeyFileError::AuthorizedUser {
                path: path.display().to_string(),
            }),
            CredentialsFile::ExternalAccount(_) => Err(KeyFileError::Unsupported {
                path: path.display().to_string(),
                kind: "external_account (use it with `credentials = \"external_account\"` or through `credentials = \"adc\"`)".into(),
            }),
            CredentialsFile::Impersonated { .. } => Err(KeyFileError::Unsupported {
                path: path.display().to_string(),
                kind: "impersonated_service_account (use it through `credentials = \"adc\"`)"
                    .into(),
            }),
        }
    }

    /// The PEM private key, for tests that need to sign as this key.
    pub fn from_json(
        json: &str,
        origin: &str,
        allow_insecure_loopback: bool,
    ) -> Result<Self, KeyFileError> {
        match CredentialsFile::from_json(json, origin, allow_insecure_loopback)? {
            CredentialsFile::ServiceAccount(key) => Ok(key),
            CredentialsFile::AuthorizedUser(_) => Err(KeyFileError::AuthorizedUser {
                path: origin.into(),
            }),
            CredentialsFile::ExternalAccount(_) => Err(KeyFileError::Unsupported {
                path: origin.into(),
                kind: "external_account".into(),
            }),
            CredentialsFile::Impersonated { .. } => Err(KeyFileError::Unsupported {
                path: origin.into(),
                kind: "impersonated_service_account".into(),
            }),
        }
    }
}

impl CredentialsFile {
    pub fn from_file(path: &Path, allow_insecure_loopback: bool) -> Result<Self, KeyFileError> {
        let origin = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| KeyFileError::Read {
            path: origin.clone(),
            source,
        })?;
        // Key files are a few KiB; refuse to slurp something huge by mistake.
        if meta.len() > 1024 * 1024 {
            return Err(KeyFileError::NotJson {
                path: origin,
                reason: "file is larger than 1 MiB".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: origin.clone(),
            source,
        })?;
        Self::from_json(&text, &origin, allow_insecure_loopback)
    }

    pub fn from_json(
        json: &str,
        origin: &str,
        allow_insecure_loopback: bool,
    ) -> Result<Self, KeyFileError> {
        Self::parse(json, origin, allow_insecure_loopback, false)
    }

    /// `as_source`: the file is an impersonation's `source_credentials`, where
    /// a person's login is accepted (google-auth's
    /// `from_impersonated_service_account_info` takes `authorized_user` and
    /// `service_account` there).
    fn parse(
        json: &str,
        origin: &str,
        allow_insecure_loopback: bool,
        as_source: bool,
    ) -> Result<Self, KeyFileError> {
        let path = || origin.to_owned();
        // serde_json errors quote positions, never values, so no key material leaks.
        let raw: RawKey = serde_json::from_str(json).map_err(|e| KeyFileError::NotJson {
            path: path(),
            reason: format!("line {} column {}: {}", e.line(), e.column(), classify(&e)),
        })?;
        match raw.kind.as_deref() {
            Some("service_account") => {}
            Some("authorized_user") if as_source => {
                return Self::authorized_user(raw, origin, allow_insecure_loopback);
            }
            Some("authorized_user") => return Err(KeyFileError::AuthorizedUser { path: path() }),
            Some("impersonated_service_account") => {
                return Self::impersonated(raw, origin, allow_insecure_loopback);
            }
            Some("external_account") => {
                return Self::external_account(raw, origin, allow_insecure_loopback);
            }
            Some(other) => {
                return Err(KeyFileError::Unsupported {
                    path: path(),
                    kind: other.chars().take(64).collect(),
                });
            }
            None => {
                return Err(KeyFileError::Missing {
                    path: path(),
                    field: "type",
                });
            }
        }
        let client_email = raw.client_email.ok_or(KeyFileError::Missing {
            path: path(),
            field: "client_email",
        })?;
        let private_key_id = raw.private_key_id.ok_or(KeyFileError::Missing {
            path: path(),
            field: "private_key_id",
        })?;
        let private_key = raw.private_key.ok_or(KeyFileError::Missing {
            path: path(),
            field: "private_key",
        })?;
        let token_uri = raw.token_uri.as_deref().unwrap_or(GOOGLE_TOKEN_URI);
        let token_uri = file_url(origin, token_uri, allow_insecure_loopback)?;
        let signing_key =
            jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes())
                .map_err(|_| KeyFileError::BadPrivateKey { path: path() })?;
        Ok(Self::ServiceAccount(ServiceAccountKey {
            client_email,
            private_key_id,
            token_uri,
            project_id: raw.project_id,
            signing_key,
        }))
    }

    fn impersonated(
        raw: RawKey,
        origin: &str,
        allow_insecure_loopback: bool,
    ) -> Result<Self, KeyFileError> {
        let path = || origin.to_owned();
        let url_text = raw
            .service_account_impersonation_url
            .ok_or(KeyFileError::Missing {
                path: path(),
                field: "service_account_impersonation_url",
            })?;
        let url = file_url(origin, &url_text, allow_insecure_loopback)?;
        let target = impersonated_email(&url).ok_or(KeyFileError::Missing {
                path: path(),
                field: "service_account_impersonation_url (…/serviceAccounts/EMAIL:generateAccessToken)",
            })?;
        let source = raw.source_credentials.ok_or(KeyFileError::Missing {
            path: path(),
            field: "source_credentials",
        })?;
        let source = Self::parse(
            &source.to_string(),
            &format!("{origin} (source_credentials)"),
            allow_insecure_loopback,
            true,
        )?;
        if matches!(source, Self::Impersonated { .. } | Self::ExternalAccount(_)) {
            return Err(KeyFileError::Unsupported {
                path: format!("{origin} (source_credentials)"),
                kind: "impersonated_service_account inside impersonated_service_account".into(),
            });
        }
        Ok(Self::Impersonated {
            target,
            delegates: raw.delegates,
            source: Box::new(source),
            impersonation_url: Some(url),
        })
    }
}

impl CredentialsFile {
    fn external_account(
        raw: RawKey,
        origin: &str,
        allow_insecure_loopback: bool,
    ) -> Result<Self, KeyFileError> {
        let path = || origin.to_owned();
        let missing = |field| missing(origin, field);
        let url = |text: &str| file_url(origin, text, allow_insecure_loopback);
        let token_url = url(raw.token_url.as_deref().unwrap_or(GOOGLE_STS_URL))?;
        // ID tokens need a service account: a federated token alone mints none.
        let impersonation = raw.service_account_impersonation_url.ok_or(KeyFileError::Unsupported {
            path: path(),
            kind: "external_account without service_account_impersonation_url (a federated identity mints no ID token; create the config with --service-account)".into(),
        })?;
        let impersonation = url(&impersonation)?;
        let service_account = impersonated_email(&impersonation).ok_or_else(|| {
            missing(
                "service_account_impersonation_url (…/serviceAccounts/EMAIL:generateAccessToken)",
            )
        })?;
        let iam_base = url(&impersonation[..url::Position::BeforePath])?;
        let source = raw
            .credential_source
            .ok_or_else(|| missing("credential_source"))?;
        let source = subject_token_source(&source, origin, allow_insecure_loopback)?;
        Ok(Self::ExternalAccount(Box::new(ExternalAccount {
            audience: raw.audience.ok_or_else(|| missing("audience"))?,
            subject_token_type: raw
                .subject_token_type
                .ok_or_else(|| missing("subject_token_type"))?,
            token_url,
            iam_base,
            service_account,
            source,
        })))
    }

    fn authorized_user(
        raw: RawKey,
        origin: &str,
        allow_insecure_loopback: bool,
    ) -> Result<Self, KeyFileError> {
        let missing = |field| missing(origin, field);
        let token_uri = raw.token_uri.as_deref().unwrap_or(GOOGLE_TOKEN_URI);
        let token_uri = file_url(origin, token_uri, allow_insecure_loopback)?;
        Ok(Self::AuthorizedUser(UserLogin {
            client_id: raw.client_id.ok_or_else(|| missing("client_id"))?,
            client_secret: raw.client_secret.ok_or_else(|| missing("client_secret"))?,
            refresh_token: raw.refresh_token.ok_or_else(|| missing("refresh_token"))?,
            token_uri,
            account: raw.account.filter(|a| !a.is_empty()),
        }))
    }
}

/// A URL a credentials file names, under the TLS rule.
fn file_url(origin: &str, text: &str, allow_insecure_loopback: bool) -> Result<Url, KeyFileError> {
    checked_url(text, allow_insecure_loopback).map_err(|source| KeyFileError::TokenUri {
        path: origin.to_owned(),
        source,
    })
}

/// `origin` lacks `field`.
fn missing(origin: &str, field: &'static str) -> KeyFileError {
    KeyFileError::Missing {
        path: origin.to_owned(),
        field,
    }
}

/// The service account of `.../v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`.
fn impersonated_email(url: &Url) -> Option<String> {
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .and_then(|last| last.split_once(':'))
        .map(|(email, _)| email.to_owned())
        .filter(|e| e.contains('@'))
}

/// STS's token exchange endpoint, where `token_url` is not given.
pub const GOOGLE_STS_URL: &str = "https://sts.googleapis.com/v1/token";

/// `credential_source`: a file, a URL, or AWS (`environment_id: aws1`).
/// Executables and certificates are refused with what to use instead.
fn subject_token_source(
    source: &serde_json::Value,
    origin: &str,
    allow_insecure_loopback: bool,
) -> Result<SubjectTokenSource, KeyFileError> {
    let unsupported = |kind: &str| KeyFileError::Unsupported {
        path: origin.to_owned(),
        kind: kind.to_owned(),
    };
    if let Some(id) = source.get("environment_id") {
        return aws_source(id, source, origin).map(SubjectTokenSource::Aws);
    }
    if source.get("executable").is_some() || source.get("certificate").is_some() {
        return Err(unsupported(
            "external_account with an executable or certificate credential source (use a file or URL source)",
        ));
    }
    let format = match source.get("format") {
        None => TokenFormat::Text,
        Some(f) => match f.get("type").and_then(serde_json::Value::as_str) {
            None | Some("text") => TokenFormat::Text,
            Some("json") => TokenFormat::Json {
                field: f
                    .get("subject_token_field_name")
                    .and_then(serde_json::Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or(KeyFileError::Missing {
                        path: origin.to_owned(),
                        field: "credential_source.format.subject_token_field_name",
                    })?
                    .to_owned(),
            },
            Some(other) => {
                return Err(unsupported(&format!(
                    "credential_source.format.type `{}`",
                    other.chars().take(32).collect::<String>()
                )));
            }
        },
    };
    if let Some(file) = source.get("file").and_then(serde_json::Value::as_str) {
        return Ok(SubjectTokenSource::File {
            path: PathBuf::from(file),
            format,
        });
    }
    if let Some(url) = source.get("url").and_then(serde_json::Value::as_str) {
        let url = crate::http::checked_url(url, allow_insecure_loopback)
            .or_else(|e| link_local(url).ok_or(e))
            .map_err(|source| KeyFileError::TokenUri {
                path: origin.to_owned(),
                source,
            })?;
        let headers = source
            .get("headers")
            .and_then(serde_json::Value::as_object)
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        return Ok(SubjectTokenSource::Url {
            url,
            headers,
            format,
        });
    }
    Err(KeyFileError::Missing {
        path: origin.to_owned(),
        field: "credential_source.file or credential_source.url",
    })
}

/// `credential_source` with an `environment_id`: AWS version 1 (what
/// google-auth accepts), its instance-metadata URLs plain HTTP to
/// 169.254.169.254 or `[fd00:ec2::254]` only.
fn aws_source(
    id: &serde_json::Value,
    source: &serde_json::Value,
    origin: &str,
) -> Result<AwsSource, KeyFileError> {
    let unsupported = |kind: String| KeyFileError::Unsupported {
        path: origin.to_owned(),
        kind,
    };
    let id = id.as_str().unwrap_or_default();
    let version = id
        .strip_prefix("aws")
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
    match version {
        Some("1") => {}
        Some(v) => {
            return Err(unsupported(format!(
                "external_account AWS version {}",
                v.chars().take(8).collect::<String>()
            )));
        }
        None => {
            return Err(unsupported(format!(
                "credential_source.environment_id `{}` (only aws1)",
                id.chars().take(16).collect::<String>()
            )));
        }
    }
    let metadata_url = |field: &'static str| -> Result<Option<Url>, KeyFileError> {
        let Some(text) = source.get(field).and_then(serde_json::Value::as_str) else {
            return Ok(None);
        };
        let url = Url::parse(text).ok().filter(|u| {
            let host = u.host_str().unwrap_or_default();
            u.scheme() == "http"
                && (host == "169.254.169.254" || host == "[fd00:ec2::254]")
                && u.username().is_empty()
                && u.password().is_none()
        });
        url.map(Some).ok_or_else(|| {
            unsupported(format!(
                "credential_source.{field} other than the AWS instance metadata service (http://169.254.169.254 or http://[fd00:ec2::254])"
            ))
        })
    };
    let verification_url = source
        .get("regional_cred_verification_url")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(AWS_VERIFICATION_URL)
        .to_owned();
    let sample = verification_url.replace("{region}", "us-east-1");
    if !Url::parse(&sample).is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some()) {
        return Err(unsupported(
            "credential_source.regional_cred_verification_url that is not an https URL".into(),
        ));
    }
    Ok(AwsSource {
        verification_url,
        region_url: metadata_url("region_url")?,
        credentials_url: metadata_url("url")?,
        imdsv2_url: metadata_url("imdsv2_session_token_url")?,
    })
}

/// A plain-HTTP URL to a link-local instance metadata service (Azure IMDS at
/// 169.254.169.254), which like Google's metadata server speaks no TLS.
fn link_local(text: &str) -> Option<Url> {
    let url = Url::parse(text).ok()?;
    let ip: std::net::IpAddr = url.host_str()?.trim_matches(['[', ']']).parse().ok()?;
    let link_local = match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    (url.scheme() == "http" && link_local && url.username().is_empty() && url.password().is_none())
        .then_some(url)
}

/// A short reason for a JSON error that never quotes the input.
fn classify(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => "read error",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected value type",
        Category::Eof => "unexpected end of file",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A throwaway RSA key in PKCS#8 PEM, made fresh per call.
    pub(crate) fn test_pem() -> String {
        use aws_lc_rs::encoding::AsDer;
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    }

    pub(crate) fn key_json(pem: &str, token_uri: &str) -> String {
        serde_json::json!({
            "type": "service_account", "project_id": "acme-prod", "private_key_id": "abc123",
            "private_key": pem, "client_email": "gb@acme-prod.iam.gserviceaccount.com",
            "client_id": "1234", "token_uri": token_uri,
        })
        .to_string()
    }

    #[test]
    fn parses_a_key_and_redacts_it() {
        let pem = test_pem();
        let key = ServiceAccountKey::from_json(&key_json(&pem, GOOGLE_TOKEN_URI), "k.json", false)
            .unwrap();
        assert_eq!(key.client_email, "gb@acme-prod.iam.gserviceaccount.com");
        assert_eq!(key.private_key_id, "abc123");
        let dbg = format!("{key:?}");
        assert!(dbg.contains("[REDACTED]") && !dbg.contains("PRIVATE KEY"));
    }

    #[test]
    fn refuses_other_files_with_advice() {
        let user = r#"{"type":"authorized_user","client_id":"x","client_secret":"s3cret","refresh_token":"r"}"#;
        let err = ServiceAccountKey::from_json(user, "adc.json", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("impersonate") && !err.contains("s3cret"),
            "{err}"
        );
        let err = ServiceAccountKey::from_json(r#"{"type":"external_account"}"#, "x.json", false)
            .unwrap_err();
        assert!(err.to_string().contains("external_account"));
        let err = ServiceAccountKey::from_json("{not json", "x.json", false).unwrap_err();
        assert!(matches!(err, KeyFileError::NotJson { .. }));
    }

    #[test]
    fn a_broken_private_key_never_appears_in_the_error() {
        let json = key_json(
            "-----BEGIN PRIVATE KEY-----\nTOPSECRETBYTES\n-----END PRIVATE KEY-----\n",
            GOOGLE_TOKEN_URI,
        );
        let err = ServiceAccountKey::from_json(&json, "k.json", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a PEM RSA private key") && !err.contains("TOPSECRET"),
            "{err}"
        );
    }

    #[test]
    fn token_uri_must_be_tls_unless_allowed_loopback() {
        let pem = test_pem();
        let err = ServiceAccountKey::from_json(
            &key_json(&pem, "http://evil.example/token"),
            "k.json",
            true,
        )
        .unwrap_err();
        assert!(matches!(err, KeyFileError::TokenUri { .. }));
        assert!(
            ServiceAccountKey::from_json(
                &key_json(&pem, "http://127.0.0.1:9/token"),
                "k.json",
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn impersonated_adc_file() {
        let pem = test_pem();
        let source: serde_json::Value =
            serde_json::from_str(&key_json(&pem, GOOGLE_TOKEN_URI)).unwrap();
        let json = serde_json::json!({
            "type": "impersonated_service_account",
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/target@acme.iam.gserviceaccount.com:generateAccessToken",
            "delegates": [], "source_credentials": source,
        });
        match CredentialsFile::from_json(&json.to_string(), "adc.json", false).unwrap() {
            CredentialsFile::Impersonated { target, source, .. } => {
                assert_eq!(target, "target@acme.iam.gserviceaccount.com");
                assert!(matches!(*source, CredentialsFile::ServiceAccount(_)));
            }
            other => panic!("{other:?}"),
        }
    }

    /// The credential configurations `create-cred-config` writes: file and
    /// URL sources parse; AWS and executables, and a configuration without a
    /// service account, are refused saying why.
    #[test]
    fn external_account_configurations_parse_or_say_why_not() {
        let config = |source: serde_json::Value, impersonation: bool| {
            let mut c = serde_json::json!({
                "type": "external_account",
                "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": "https://sts.googleapis.com/v1/token",
                "credential_source": source,
            });
            if impersonation {
                c["service_account_impersonation_url"] = serde_json::json!(
                    "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/gb@acme.iam.gserviceaccount.com:generateAccessToken"
                );
            }
            CredentialsFile::from_json(&c.to_string(), "wif.json", false)
        };
        match config(
            serde_json::json!({"file": "/var/run/secrets/tokens/t"}),
            true,
        )
        .unwrap()
        {
            CredentialsFile::ExternalAccount(a) => {
                assert_eq!(a.service_account, "gb@acme.iam.gserviceaccount.com");
                assert_eq!(
                    a.iam_base.as_str(),
                    "https://iamcredentials.googleapis.com/"
                );
                assert!(
                    matches!(a.source, SubjectTokenSource::File { ref format, .. } if *format == TokenFormat::Text)
                );
            }
            other => panic!("{other:?}"),
        }
        let azure = serde_json::json!({"url": "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://x",
            "headers": {"Metadata": "True"}, "format": {"type": "json", "subject_token_field_name": "access_token"}});
        match config(azure, true).unwrap() {
            CredentialsFile::ExternalAccount(a) => match &a.source {
                SubjectTokenSource::Url {
                    headers, format, ..
                } => {
                    assert_eq!(headers, &[("Metadata".to_owned(), "True".to_owned())]);
                    assert_eq!(format.read(r#"{"access_token":"tok"}"#).unwrap(), "tok");
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        // Plain HTTP is refused anywhere but link-local metadata addresses.
        assert!(
            config(
                serde_json::json!({"url": "http://idp.example.com/token"}),
                true
            )
            .is_err()
        );
        let aws = config(
            serde_json::json!({"environment_id": "aws1", "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone"}),
            true,
        );
        assert!(matches!(
            aws.unwrap(),
            CredentialsFile::ExternalAccount(a) if matches!(&a.source, SubjectTokenSource::Aws(s) if s.region_url.is_some() && s.verification_url.contains("{region}"))
        ));
        let aws2 = config(serde_json::json!({"environment_id": "aws2"}), true);
        assert!(aws2.unwrap_err().to_string().contains("AWS version 2"));
        let exe = config(
            serde_json::json!({"executable": {"command": "/bin/token"}}),
            true,
        );
        assert!(exe.unwrap_err().to_string().contains("executable"));
        let no_sa = config(serde_json::json!({"file": "/t"}), false);
        assert!(
            no_sa
                .unwrap_err()
                .to_string()
                .contains("service_account_impersonation_url")
        );
        let no_field = config(
            serde_json::json!({"file": "/t", "format": {"type": "json"}}),
            true,
        );
        assert!(
            no_field
                .unwrap_err()
                .to_string()
                .contains("subject_token_field_name")
        );
        assert!(
            TokenFormat::Text.read("  \n").is_err(),
            "an empty token is refused"
        );
    }
}

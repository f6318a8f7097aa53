//! Workload identity federation from AWS: the subject token is a signed AWS
//! STS `GetCallerIdentity` request (AWS Signature Version 4), serialized as
//! google-auth's `aws.Credentials` serializes it, which Google's STS replays
//! to AWS to learn who is calling. The AWS credentials come from the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), else from the EC2 instance metadata service (IMDSv2
//! when the credential configuration names its session-token URL); the region
//! from `AWS_REGION` / `AWS_DEFAULT_REGION`, else from the metadata service.
//!
//! SigV4 is a few HMAC-SHA256 steps over strings, written here with aws-lc-rs
//! (already the crypto library): the AWS SDK's signer would bring its runtime
//! crates for what google-auth itself does in 60 lines, and this must match
//! google-auth byte for byte (tests/interop/google_auth_aws.py is the oracle).
//!
//! It must never log or put in an error the secret key, the session token or
//! the signed request.

use std::time::SystemTime;

use aws_lc_rs::{digest, hmac};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::error::CredentialsError;
use super::key::AwsSource;
use super::sts::fetch;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How long an IMDSv2 session token is asked for (google-auth's value).
const IMDSV2_TTL_SECONDS: &str = "300";

/// AWS credentials: an access key, with a session token when temporary.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What the process environment says, read once when the connection is built.
#[derive(Debug, Clone, Default)]
pub struct AwsEnvironment {
    pub region: Option<String>,
    pub credentials: Option<AwsCredentials>,
}

impl AwsEnvironment {
    /// The variables google-auth reads, in its order.
    pub fn from_env(env: &dyn crate::env::Environment) -> Self {
        let var = |k: &str| env.var(k).filter(|v| !v.is_empty());
        let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
        let credentials = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some(AwsCredentials {
                access_key_id: id,
                secret_access_key: SecretString::from(secret),
                session_token: var("AWS_SESSION_TOKEN").map(SecretString::from),
            }),
            _ => None,
        };
        Self {
            region,
            credentials,
        }
    }
}

fn setup(message: String) -> CredentialsError {
    CredentialsError::Setup(format!("workload identity federation from AWS: {message}"))
}

/// The subject token for `target_resource` (the provider's audience) at `now`.
pub(crate) async fn subject_token(
    http: &reqwest::Client,
    source: &AwsSource,
    env: &AwsEnvironment,
    target_resource: &str,
    now: SystemTime,
) -> Result<String, CredentialsError> {
    let needs_metadata = env.region.is_none() || env.credentials.is_none();
    let session = match (&source.imdsv2_url, needs_metadata) {
        (Some(url), true) => Some(imdsv2_session(http, url).await?),
        _ => None,
    };
    let region = match &env.region {
        Some(r) => r.clone(),
        None => {
            let url = source.region_url.as_ref().ok_or_else(|| {
                setup("no region: set AWS_REGION (or AWS_DEFAULT_REGION), or credential_source.region_url".into())
            })?;
            let zone = metadata_get(http, url, session.as_deref()).await?;
            // An availability zone (`us-east-2b`): the region without its letter.
            let zone = zone.trim();
            zone[..zone.len().saturating_sub(1)].to_owned()
        }
    };
    let credentials = match &env.credentials {
        Some(c) => c.clone(),
        None => metadata_credentials(http, source, session.as_deref()).await?,
    };
    let url = source.verification_url.replace("{region}", &region);
    signed_request(&credentials, &region, &url, target_resource, now)
}

async fn imdsv2_session(http: &reqwest::Client, url: &Url) -> Result<String, CredentialsError> {
    let request = http
        .put(url.clone())
        .header("X-aws-ec2-metadata-token-ttl-seconds", IMDSV2_TTL_SECONDS);
    let body = fetch(
        request,
        url,
        "workload identity federation from AWS: the instance metadata service (imdsv2_session_token_url) did not answer",
    )
    .await?;
    Ok(String::from_utf8_lossy(&body).trim().to_owned())
}

/// One instance-metadata read (with the IMDSv2 session token, when there is one).
async fn metadata_get(
    http: &reqwest::Client,
    url: &Url,
    session: Option<&str>,
) -> Result<String, CredentialsError> {
    let mut request = http.get(url.clone());
    if let Some(token) = session {
        request = request.header("X-aws-ec2-metadata-token", token);
    }
    let body = fetch(
        request,
        url,
        "workload identity federation from AWS: the instance metadata service did not answer",
    )
    .await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The instance role's temporary credentials: its name at `url`, then `url/ROLE`.
async fn metadata_credentials(
    http: &reqwest::Client,
    source: &AwsSource,
    session: Option<&str>,
) -> Result<AwsCredentials, CredentialsError> {
    let url = source.credentials_url.as_ref().ok_or_else(|| {
        setup("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or credential_source.url (the instance metadata's security-credentials URL)".into())
    })?;
    let role = metadata_get(http, url, session).await?;
    let role = role.trim();
    if role.is_empty() || role.contains('/') {
        return Err(setup(format!(
            "the instance metadata service at {url} names no role: attach an IAM role to the instance"
        )));
    }
    let mut role_url = url.clone();
    role_url
        .path_segments_mut()
        .map_err(|()| setup(format!("{url} cannot be a base URL")))?
        .pop_if_empty()
        .push(role);
    let body = metadata_get(http, &role_url, session).await?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Creds {
        access_key_id: String,
        secret_access_key: String,
        #[serde(default)]
        token: Option<String>,
    }
    let c: Creds = serde_json::from_str(&body).map_err(|_| {
        setup(format!(
            "the role's credentials at {role_url} are not {{\"AccessKeyId\",\"SecretAccessKey\",\"Token\"}}"
        ))
    })?;
    Ok(AwsCredentials {
        access_key_id: c.access_key_id,
        secret_access_key: SecretString::from(c.secret_access_key),
        session_token: c.token.map(SecretString::from),
    })
}

/// RFC 3986 percent-encoding of everything but unreserved characters (what
/// Python's `urllib.parse.quote(s, safe=...)` leaves alone is `safe` plus
/// letters, digits and `_.-~`).
fn quote(s: &str, safe: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) || safe.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(s: &str) -> String {
    hex(digest::digest(&digest::SHA256, s.as_bytes()).as_ref())
}

fn hmac_sha256(key: &[u8], msg: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg.as_bytes())
        .as_ref()
        .to_vec()
}

/// The canonical query string: keys and values encoded, sorted.
fn canonical_query(query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (quote(&k, b""), quote(&v, b"")))
            .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The signed `GetCallerIdentity` request at `url`, serialized for Google's
/// STS: URL-quoted JSON `{"headers":[{"key","value"}...],"method","url"}`
/// with sorted keys, as google-auth writes it. Pure (for the oracle test).
pub fn signed_request(
    credentials: &AwsCredentials,
    region: &str,
    url: &str,
    target_resource: &str,
    now: SystemTime,
) -> Result<String, CredentialsError> {
    let parsed = Url::parse(url).map_err(|_| {
        setup(format!(
            "regional_cred_verification_url `{url}` is not a URL"
        ))
    })?;
    let host = match (parsed.scheme(), parsed.host_str()) {
        ("https", Some(h)) => h.to_owned(),
        _ => {
            return Err(setup(format!(
                "regional_cred_verification_url `{url}` must be an https URL"
            )));
        }
    };
    let service = host.split('.').next().unwrap_or_default();
    let service = service.strip_suffix("-fips").unwrap_or(service);
    let at = time::OffsetDateTime::from(now);
    let date_stamp = format!("{:04}{:02}{:02}", at.year(), u8::from(at.month()), at.day());
    let amz_date = format!(
        "{date_stamp}T{:02}{:02}{:02}Z",
        at.hour(),
        at.minute(),
        at.second()
    );

    // The headers signed. google-auth adds `x-goog-cloud-target-resource`
    // after signing (Go's library signs it too; STS accepts both).
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host.clone()),
        ("x-amz-date".into(), amz_date.clone()),
    ];
    if let Some(token) = &credentials.session_token {
        headers.push((
            "x-amz-security-token".into(),
            token.expose_secret().to_owned(),
        ));
    }
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let path = if parsed.path().is_empty() {
        "/"
    } else {
        parsed.path()
    };
    let canonical_request = format!(
        "POST\n{path}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        canonical_query(parsed.query()),
        sha256_hex("")
    );
    let scope = format!("{date_stamp}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(&canonical_request)
    );
    let secret = format!("AWS4{}", credentials.secret_access_key.expose_secret());
    let mut key = hmac_sha256(secret.as_bytes(), &date_stamp);
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part);
    }
    let signature = hex(&hmac_sha256(&key, &string_to_sign));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    );

    // google-auth's header map, sorted by key as Python sorts strings.
    let mut sent = headers;
    sent.push(("Authorization".into(), authorization));
    sent.push((
        "x-goog-cloud-target-resource".into(),
        target_resource.to_owned(),
    ));
    sent.sort();
    let request = serde_json::json!({
        "headers": sent
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
            .collect::<Vec<_>>(),
        "method": "POST",
        "url": url,
    });
    // serde_json without preserve_order writes object keys sorted, compactly:
    // what `json.dumps(..., separators=(",", ":"), sort_keys=True)` writes.
    Ok(quote(&request.to_string(), b"/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn creds(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(SecretString::from),
        }
    }

    #[test]
    fn the_token_is_a_quoted_json_request_with_sorted_headers() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        let token = signed_request(
            &creds(Some("sess")),
            "us-east-2",
            "https://sts.us-east-2.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/aws",
            at,
        )
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&percent_encoding_decode(&token)).unwrap();
        assert_eq!(json["method"], "POST");
        let keys: Vec<&str> = json["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "Authorization",
                "host",
                "x-amz-date",
                "x-amz-security-token",
                "x-goog-cloud-target-resource"
            ]
        );
        let auth = json["headers"][0]["value"].as_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-2/sts/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature="),
            "{auth}"
        );
        assert_eq!(json["headers"][2]["value"], "20150830T123600Z");
        assert!(
            !token.contains("wJalrXUtnFEMI"),
            "the secret is never in the token"
        );
        assert!(
            signed_request(&creds(None), "r", "http://sts.r.amazonaws.com", "t", at).is_err(),
            "https only"
        );
    }

    fn percent_encoding_decode(s: &str) -> String {
        url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned()
    }

    #[test]
    fn the_environment_is_read_as_google_auth_reads_it() {
        let env = crate::env::MapEnv::new()
            .with("AWS_DEFAULT_REGION", "eu-west-1")
            .with("AWS_ACCESS_KEY_ID", "AKID")
            .with("AWS_SECRET_ACCESS_KEY", "SECRETVALUE");
        let aws = AwsEnvironment::from_env(&env);
        assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
        let c = aws.credentials.unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert!(c.session_token.is_none());
        assert!(!format!("{c:?}").contains("SECRETVALUE"));
        let none =
            AwsEnvironment::from_env(&crate::env::MapEnv::new().with("AWS_ACCESS_KEY_ID", "x"));
        assert!(none.credentials.is_none() && none.region.is_none());
    }
}

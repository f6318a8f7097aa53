//! The configuration file exactly as written: serde structs that refuse unknown
//! keys. Converted once into the validated types in `config/mod.rs`; nothing
//! else reads these. The doc comments are the operator documentation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// The connector's id at the control plane; instances of one deployment share it.
    pub connector_id: Option<String>,
    /// Named sets of Google credentials. Several may exist (several projects or accounts).
    #[serde(default)]
    pub connections: BTreeMap<String, RawConnection>,
    /// Named functions actions can be routed to.
    #[serde(default)]
    pub integrations: BTreeMap<String, RawIntegration>,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default)]
    pub http: RawHttp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnection {
    /// `service_account_key`, `metadata`, `impersonate` or `adc` (default).
    pub credentials: Option<String>,
    /// Service-account key JSON (`service_account_key`, or the source of `impersonate`).
    pub key_file: Option<PathBuf>,
    /// Metadata server `host[:port]`; default `$GCE_METADATA_HOST` or `metadata.google.internal`.
    pub metadata_host: Option<String>,
    /// `impersonate`: the service account whose ID tokens are minted.
    pub target_service_account: Option<String>,
    /// `impersonate`: delegation chain, each holding Token Creator on the next.
    #[serde(default)]
    pub delegates: Vec<String>,
    /// `impersonate`: where the caller's own access token comes from:
    /// `service_account_key` (needs `key_file`), `metadata` or `adc` (default).
    pub source: Option<String>,
    /// IAM Credentials API base URL; default `https://iamcredentials.googleapis.com`.
    pub iam_credentials_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIntegration {
    /// The connection (credentials) used to invoke this function.
    pub connection: Option<String>,
    pub project_id: Option<String>,
    /// Cloud Functions (1st gen) region; default `us-central1`.
    pub region: Option<String>,
    /// The function's name.
    pub function: Option<String>,
    /// Parameters added to every call as `params.custom_parameters`.
    #[serde(default)]
    pub custom_parameters: serde_json::Map<String, serde_json::Value>,
    /// A link shown to requesters.
    pub access_details: Option<String>,
    /// Explicit URL (2nd gen, Cloud Run, a local function); default the 1st gen URL.
    pub url: Option<String>,
    /// ID token audience; default the function URL.
    pub audience: Option<String>,
    /// Per-attempt timeout, e.g. "60s" (default 60s, at most 540s).
    pub timeout: Option<String>,
    /// Attempts per action including the first (default 5, 1..=20).
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTokens {
    /// Refresh a cached ID token this long before it expires (default "5m").
    pub refresh_ahead: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    /// Largest function response read, in bytes (default 10 MiB, the Cloud Functions limit).
    pub max_response_bytes: Option<usize>,
    /// Allow plain `http://` to loopback hosts (local development, the sandbox).
    pub allow_insecure_loopback: Option<bool>,
}

//! The configuration file exactly as written: serde structs. Keys they do not
//! know are collected while deserializing (`serde_ignored`), so every typo is
//! reported, not only the first. Converted once into the validated types in
//! `config/mod.rs`; nothing else reads these. The doc comments are the operator documentation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
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
    /// This instance's id in results and leases; default `HOSTNAME/random`.
    pub instance_id: Option<String>,
    /// Poll mode: the control plane to lease actions from and report results to.
    pub control_plane: Option<RawControlPlane>,
    /// Push mode: the signed HTTP endpoint the control plane pushes actions to.
    pub push: Option<RawPush>,
    #[serde(default)]
    pub journal: RawJournal,
    #[serde(default)]
    pub engine: RawEngine,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub traces: RawTraces,
    /// Google APIs grantbridge reads (for `grantbridge check --online` and
    /// `grantbridge functions list`); function calls never go through them.
    #[serde(default)]
    pub google: RawGoogle,
    #[serde(default)]
    pub checks: RawChecks,
    #[serde(default)]
    pub reload: RawReload,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawReload {
    /// Reload by itself when the configuration file or a file it names (the
    /// connector token, push secrets, key files) changes, as on SIGHUP
    /// (default true; Kubernetes updates mounted ConfigMaps and Secrets in place).
    pub watch: Option<bool>,
    /// How often the files are compared (default "5s").
    pub interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawChecks {
    /// Run the online checks (`grantbridge check --online`) periodically in the daemon and
    /// report their verdicts in heartbeats and /readyz (default false; needs the viewer role).
    pub online: Option<bool>,
    /// How often (default "15m").
    pub interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAdmin {
    /// Health, readiness and metrics listener (default "127.0.0.1:9090"; "0.0.0.0:9090" in containers).
    pub listen: Option<String>,
    /// Serve the admin endpoints at all (default true).
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawLog {
    /// Level or filter, e.g. "info" or "grantbridge=debug,info" (default "info"); reloaded on SIGHUP.
    pub level: Option<String>,
    /// "human" (default), "json", or "cloud-logging" (JSON as Google Cloud
    /// Logging reads it: `severity`, trace links).
    pub format: Option<String>,
    /// The GCP project for Cloud Logging trace links
    /// (`projects/PROJECT/traces/TRACE_ID`); default the first integration's.
    pub trace_project: Option<String>,
    /// Write each function call of the audit trail, once recorded in the journal,
    /// as a JSON line on stdout (the shape of `grantbridge audit --json`; default
    /// false). Logs stay on stderr.
    pub audit_stdout: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawTraces {
    /// OTLP/HTTP collector base URL, e.g. "https://otel-collector:4318"; spans go to
    /// its `/v1/traces`. Default: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; unset everywhere: no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans (default `OTEL_SERVICE_NAME`, else "grantbridge").
    pub service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawGoogle {
    /// Cloud Functions API base URL (v1 and v2); default `https://cloudfunctions.googleapis.com`.
    /// Read with each connection's access token to check functions online.
    pub cloudfunctions_api: Option<String>,
    /// Cloud Run Admin API base URL (v2); default `https://run.googleapis.com`.
    /// Read to check a 2nd gen function's invoke permission online.
    pub run_api: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawControlPlane {
    /// Base URL, e.g. "https://cp.example.com".
    pub url: Option<String>,
    /// File holding the connector token (preferred: a mounted Secret).
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the connector token (default GRANTBRIDGE_CONNECTOR_TOKEN).
    pub token_env: Option<String>,
    /// Poll for actions (default true); false: only report results of pushed actions.
    pub poll: Option<bool>,
    /// Actions leased per request (default 50).
    pub max_actions: Option<u32>,
    /// Long-poll wait, 0..30 seconds (default "20s").
    pub wait: Option<String>,
    /// Lease length requested (default "60s"); extended while an action runs.
    pub lease: Option<String>,
    /// Heartbeat interval (default "30s").
    pub heartbeat_interval: Option<String>,
    /// Results per report call (default 100).
    pub report_batch: Option<u32>,
    /// After the control plane refuses the connector token, retry this slowly (default "30s").
    pub unauthorized_retry: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawPush {
    /// Listen address, e.g. "0.0.0.0:8443" (TLS terminates in front: ingress or mesh).
    pub listen: Option<String>,
    /// Files each holding one HMAC secret; several for rotation.
    #[serde(default)]
    pub secret_files: Vec<PathBuf>,
    /// Environment variables each holding one HMAC secret.
    #[serde(default)]
    pub secret_envs: Vec<String>,
    /// Largest accepted request body in bytes (default 1 MiB).
    pub max_body_bytes: Option<usize>,
    /// A request's headers must arrive within this, which is also how long an
    /// idle keep-alive connection is kept (default "10s").
    pub header_timeout: Option<String>,
    /// A request's body must arrive within this, else 408 (default "10s").
    pub body_timeout: Option<String>,
    /// Connections served at once; more are closed on arrival (default 256).
    pub max_connections: Option<usize>,
    /// Request bodies buffered at once, in bytes, across all connections;
    /// past it a request gets 503 with Retry-After (default 32 MiB).
    pub max_buffered_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawJournal {
    /// SQLite file (default "/var/lib/grantbridge/journal.db").
    pub path: Option<PathBuf>,
    /// How long finished actions and audit entries are kept (default "30d").
    pub retention: Option<String>,
    /// `/readyz` fails when the oldest result waiting for the control plane
    /// is older than this: the outbox is not draining (default "5m").
    pub outbox_max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawEngine {
    /// Actions running at once across all integrations (default 64).
    pub max_concurrency: Option<usize>,
    /// Actions running at once per integration (default 8).
    pub per_integration_concurrency: Option<usize>,
    /// Actions accepted but not yet running, before intake pauses (default 10000).
    pub queue_capacity: Option<usize>,
    /// On SIGTERM, how long in-flight actions may run before they are left for resumption (default "30s").
    pub shutdown_grace: Option<String>,
    /// Largest function response body kept in a result, in bytes (default 65536).
    pub result_body_max_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
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
    /// 1 (Cloud Functions 1st gen) or 2 (2nd gen, Cloud Run functions); default:
    /// unstated (1st gen URL rules; `check --online` learns it from the v2 API).
    pub generation: Option<u8>,
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
pub(crate) struct RawTokens {
    /// Refresh a cached ID token this long before it expires (default "5m").
    pub refresh_ahead: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawHttp {
    /// Largest function response read, in bytes (default 10 MiB, the Cloud Functions limit).
    pub max_response_bytes: Option<usize>,
    /// Allow plain `http://` to loopback hosts (local development, the sandbox).
    pub allow_insecure_loopback: Option<bool>,
}

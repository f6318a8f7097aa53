//! The configuration: a TOML file, every key overridable by a
//! `GRANTBRIDGE__SECTION__KEY` environment variable, parsed once into validated
//! types. A bad configuration is refused as a whole, listing every problem with
//! the file, the key and what was expected.
//!
//! It must not contact the network: loading is pure (it reads the key files the
//! configuration names, nothing else).

mod gcp;
mod raw;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

pub use crate::google::functions_api::Generation;
pub use gcp::{DEFAULT_REGION, FIRST_GEN_REGIONS, first_gen_url};
use raw::{
    RawConfig, RawConnection, RawControlPlane, RawEngine, RawGoogle, RawHttp, RawIntegration,
    RawJournal, RawPush,
};

use crate::action::valid_id;
use crate::env::Environment;
use crate::google::key::ServiceAccountKey;
use crate::google::{CredentialsSpec, DEFAULT_IAM_CREDENTIALS_URL};
use crate::http::checked_url;

pub const ENV_PREFIX: &str = "GRANTBRIDGE";
pub const DEFAULT_CLOUDFUNCTIONS_API_URL: &str = "https://cloudfunctions.googleapis.com";
pub const DEFAULT_RUN_API_URL: &str = "https://run.googleapis.com";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(540);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;
pub const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(300);

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (for messages).
    pub source: PathBuf,
    pub connector_id: String,
    pub connections: BTreeMap<String, Connection>,
    pub integrations: BTreeMap<String, Integration>,
    pub tokens: TokenSettings,
    pub http: HttpSettings,
    /// This instance's id (results, leases, heartbeats).
    pub instance_id: String,
    /// Poll mode and result reporting; None: push only, results kept locally.
    pub control_plane: Option<ControlPlaneSettings>,
    /// Push mode endpoint; None: not listening for pushed actions.
    pub push: Option<PushSettings>,
    pub journal: JournalSettings,
    pub engine: EngineSettings,
    /// The admin listener (health, readiness, metrics); None: disabled.
    pub admin: Option<std::net::SocketAddr>,
    pub log: LogSettings,
    /// Where traces are exported; None: they are not.
    pub traces: Option<crate::telemetry::traces::TraceSettings>,
    /// Google APIs read by the online checks.
    pub google: GoogleSettings,
    /// Periodic online checks in the daemon; None: off.
    pub online_checks: Option<Duration>,
    /// How often the configuration's files are compared for a reload, when
    /// watching is on.
    pub watch_interval: Option<Duration>,
    /// The files this configuration was read from: the file itself and every
    /// secret or key file it names (what a change of triggers a reload).
    pub files: Vec<PathBuf>,
    /// What is accepted but worth fixing (a secret file others can read);
    /// `run` logs each one, `check` prints them.
    pub warnings: Vec<String>,
    /// Secrets loading did not read ([`Secrets::IfReadable`] / [`Secrets::Skip`]),
    /// each as `key: why`; empty with [`Secrets::Read`].
    pub unchecked: Vec<String>,
}

/// The `[google]` section: Google APIs grantbridge reads (never calls functions through).
#[derive(Debug, Clone)]
pub struct GoogleSettings {
    /// Cloud Functions API (v1, v2) base URL, e.g. `https://cloudfunctions.googleapis.com`.
    pub cloudfunctions_api: Url,
    /// Cloud Run Admin API (v2) base URL, e.g. `https://run.googleapis.com`.
    pub run_api: Url,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub level: String,
    pub format: crate::telemetry::LogFormat,
    /// The GCP project of Cloud Logging trace links.
    pub trace_project: Option<String>,
    /// Each recorded function call also as a JSON line on stdout.
    pub audit_stdout: bool,
}

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

#[derive(Debug, Clone)]
pub struct ControlPlaneSettings {
    pub url: Url,
    pub token: SecretString,
    pub poll: bool,
    pub max_actions: u32,
    pub wait: Duration,
    pub lease: Duration,
    pub heartbeat_interval: Duration,
    pub report_batch: u32,
    pub unauthorized_retry: Duration,
}

impl ControlPlaneSettings {
    /// Equal in every setting but the token (which a reload may rotate).
    /// Destructured, so a new field cannot be forgotten here.
    pub fn same_but_token(&self, other: &Self) -> bool {
        let Self {
            url,
            token: _,
            poll,
            max_actions,
            wait,
            lease,
            heartbeat_interval,
            report_batch,
            unauthorized_retry,
        } = self;
        (url, poll, max_actions, wait, lease, heartbeat_interval)
            == (
                &other.url,
                &other.poll,
                &other.max_actions,
                &other.wait,
                &other.lease,
                &other.heartbeat_interval,
            )
            && (report_batch, unauthorized_retry)
                == (&other.report_batch, &other.unauthorized_retry)
    }
}

#[derive(Debug, Clone)]
pub struct PushSettings {
    pub listen: std::net::SocketAddr,
    /// HMAC secrets; any one may sign (rotation).
    pub secrets: Vec<SecretString>,
    pub max_body_bytes: usize,
    /// Headers (and the next request on a kept-alive connection) within this.
    pub header_timeout: Duration,
    /// The whole body within this, else 408.
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// Bodies buffered at once across connections, in bytes.
    pub max_buffered_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    pub path: PathBuf,
    pub retention: Duration,
    /// The oldest unreported result may be this old before `/readyz` fails.
    pub outbox_max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    pub max_concurrency: usize,
    pub per_integration_concurrency: usize,
    pub queue_capacity: usize,
    pub shutdown_grace: Duration,
    pub result_body_max_bytes: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_concurrency: 64,
            per_integration_concurrency: 8,
            queue_capacity: 10_000,
            shutdown_grace: Duration::from_secs(30),
            result_body_max_bytes: 64 * 1024,
        }
    }
}

pub const DEFAULT_JOURNAL_PATH: &str = "/var/lib/grantbridge/journal.db";
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_OUTBOX_MAX_AGE: Duration = Duration::from_secs(300);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_PUSH_CONNECTIONS: usize = 256;
pub const DEFAULT_PUSH_BUFFERED_BYTES: usize = 32 * 1024 * 1024;
pub const DEFAULT_TOKEN_ENV: &str = "GRANTBRIDGE_CONNECTOR_TOKEN";

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub refresh_ahead: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub max_response_bytes: usize,
    pub allow_insecure_loopback: bool,
}

#[derive(Debug, Clone)]
pub struct Connection {
    pub name: String,
    pub credentials: CredentialsSpec,
}

#[derive(Debug, Clone)]
pub struct Integration {
    pub name: String,
    pub connection: String,
    pub project_id: String,
    pub region: String,
    pub function: String,
    /// As declared (`generation = 1 | 2`); `None`: not stated.
    pub generation: Option<Generation>,
    pub url: Url,
    pub audience: String,
    pub custom_parameters: serde_json::Map<String, serde_json::Value>,
    pub access_details: Option<Url>,
    pub timeout: Duration,
    pub max_attempts: u32,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration {file}: {message}")]
    Load { file: String, message: String },
    #[error("configuration {file} is invalid:\n{}", problems.iter().map(|p| format!("  - {}: {}", p.key, p.message)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

/// One problem: the key (dotted path) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// The problems, for tests and `grantbridge check`.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            Self::Load { .. } => &[],
        }
    }
}

impl Config {
    /// Loads `path`, applies `GRANTBRIDGE__*` overrides from `env`, validates.
    pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
        Self::load_with(path, env, Secrets::Read)
    }

    /// [`Config::load`], reading secrets as `secrets` says: commands that need
    /// none (`audit`) or validate without them (`check --offline`).
    pub fn load_with(
        path: &Path,
        env: &dyn Environment,
        secrets: Secrets,
    ) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        if !path.is_file() {
            return Err(ConfigError::Load {
                file,
                message: "file not found (pass --config FILE or set GRANTBRIDGE_CONFIG)".into(),
            });
        }
        let source = config::File::from(path).format(config::FileFormat::Toml);
        Self::build(source, path, env, secrets)
    }

    /// Parses TOML text as if it were the file `origin` (tests, `--config -`).
    pub fn from_toml(
        text: &str,
        origin: &Path,
        env: &dyn Environment,
    ) -> Result<Config, ConfigError> {
        let source = config::File::from_str(text, config::FileFormat::Toml);
        Self::build(source, origin, env, Secrets::Read)
    }

    fn build<S>(
        source: S,
        origin: &Path,
        env: &dyn Environment,
        secrets: Secrets,
    ) -> Result<Config, ConfigError>
    where
        S: config::Source + Send + Sync + 'static,
    {
        let file = origin.display().to_string();
        let overrides: config::Map<String, String> = env
            .vars()
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let mut unknown = Vec::new();
        let raw: RawConfig = config::Config::builder()
            .add_source(source)
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build()
            .and_then(|c| serde_ignored::deserialize(c, |path| unknown.push(path.to_string())))
            .map_err(|e| ConfigError::Load {
                file: file.clone(),
                message: e.to_string(),
            })?;
        let base_dir = origin.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut validator = Validator {
            problems: Vec::new(),
            warnings: Vec::new(),
            unchecked: Vec::new(),
            files: Vec::new(),
            base_dir,
            secrets,
        };
        for key in unknown {
            validator.problem(
                key,
                "unknown key (a typo? docs/configuration.md lists every key)",
            );
        }
        validator.validate(raw, origin, env)
    }
}

/// An OTLP base URL's traces endpoint, as the OpenTelemetry specification
/// builds it: `/v1/traces` after the base path.
fn traces_path(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// How loading treats the secrets a configuration names (the connector token,
/// push secrets, key files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Read and check each; a missing one is a problem (`run`).
    Read,
    /// Google key files as [`Secrets::Read`] (tokens are minted with them);
    /// the connector token and push secrets as [`Secrets::IfReadable`]
    /// (`check`, which calls Google but not the control plane).
    ForGoogle,
    /// Check those this shell can read; one it cannot is noted in
    /// [`Config::unchecked`], not a problem (`check --offline`, off-cluster).
    IfReadable,
    /// Read none (`audit` needs the journal only).
    Skip,
}

struct Validator {
    problems: Vec<Problem>,
    warnings: Vec<String>,
    unchecked: Vec<String>,
    /// Every secret or key file read (for [`Config::files`]).
    files: Vec<PathBuf>,
    base_dir: PathBuf,
    secrets: Secrets,
}

impl Validator {
    /// Warns, as ssh does, when a file holding a secret can be read by users
    /// other than its owner.
    fn warn_if_shared(&mut self, key: &str, path: &Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                self.warnings.push(format!(
                    "{key}: {} holds a secret and is accessible to other users (mode {:o}); make it readable by grantbridge's user only: chmod 600 {}",
                    path.display(),
                    meta.permissions().mode() & 0o777,
                    path.display()
                ));
            }
        }
        #[cfg(not(unix))]
        let _ = (key, path);
    }

    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn validate(
        mut self,
        raw: RawConfig,
        origin: &Path,
        env: &dyn Environment,
    ) -> Result<Config, ConfigError> {
        let http = self.http(&raw.http);
        let connector_id = self.connector_id(raw.connector_id);
        let refresh_ahead = self.refresh_ahead(raw.tokens.refresh_ahead.as_deref());
        // Declared names, valid or not: an integration naming a connection that
        // has its own problem should not also be told it does not exist.
        let declared: Vec<String> = raw.connections.keys().cloned().collect();
        let connections = self.connections(raw.connections, &http);
        let integrations = self.integrations(raw.integrations, &declared, &http);
        let instance_id = self.instance_id(raw.instance_id, env);
        let control_plane = raw
            .control_plane
            .and_then(|cp| self.control_plane(cp, &http, env));
        let push = raw.push.and_then(|p| self.push(p, env));
        let journal = self.journal(raw.journal);
        let engine = self.engine(raw.engine);
        let admin = self.admin(raw.admin);
        let log = self.log(raw.log);
        let traces = self.traces(raw.traces, &http, env);
        let online_checks = self.online_checks(raw.checks);
        let watch_interval = self.watch_interval(raw.reload);
        let google = self.google(raw.google, &http);

        // `google` is None only when a problem about it was recorded.
        if let (true, Some(google)) = (self.problems.is_empty(), google) {
            Ok(Config {
                source: origin.to_path_buf(),
                connector_id,
                connections,
                integrations,
                tokens: TokenSettings { refresh_ahead },
                http,
                instance_id,
                control_plane,
                push,
                journal,
                engine,
                admin,
                log,
                traces,
                online_checks,
                watch_interval,
                files: std::iter::once(origin.to_path_buf())
                    .chain(self.files)
                    .collect(),
                google,
                warnings: self.warnings,
                unchecked: self.unchecked,
            })
        } else {
            Err(ConfigError::Invalid {
                file: origin.display().to_string(),
                problems: self.problems,
            })
        }
    }

    fn http(&mut self, raw: &RawHttp) -> HttpSettings {
        let http = HttpSettings {
            max_response_bytes: raw.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            allow_insecure_loopback: raw.allow_insecure_loopback.unwrap_or(false),
        };
        if http.max_response_bytes == 0 {
            self.problem("http.max_response_bytes", "must be at least 1");
        }
        http
    }

    fn connector_id(&mut self, raw: Option<String>) -> String {
        match raw {
            Some(id) if valid_id(&id) => id,
            Some(id) => {
                self.problem("connector_id", format!("`{id}` is not valid; expected 1-128 characters of letters, digits, `.`, `_`, `:` or `-`"));
                String::new()
            }
            None => {
                self.problem("connector_id", "missing; expected the connector id from the control plane, e.g. connector_id = \"conn-prod-1\"");
                String::new()
            }
        }
    }

    fn refresh_ahead(&mut self, raw: Option<&str>) -> Duration {
        let refresh_ahead = self
            .duration("tokens.refresh_ahead", raw)
            .unwrap_or(DEFAULT_REFRESH_AHEAD);
        if refresh_ahead > Duration::from_secs(3000) {
            self.problem(
                "tokens.refresh_ahead",
                "must be well under the 1 hour token lifetime (at most 50m)",
            );
        }
        refresh_ahead
    }

    fn connections(
        &mut self,
        raw: BTreeMap<String, RawConnection>,
        http: &HttpSettings,
    ) -> BTreeMap<String, Connection> {
        let mut connections = BTreeMap::new();
        for (name, rc) in raw {
            let key = format!("connections.{name}");
            if !valid_id(&name) {
                self.problem(
                    &key,
                    "connection names may use letters, digits, `.`, `_`, `:` and `-`",
                );
            }
            if let Some(credentials) = self.credentials(&key, rc, http) {
                connections.insert(name.clone(), Connection { name, credentials });
            }
        }
        connections
    }

    fn integrations(
        &mut self,
        raw: BTreeMap<String, RawIntegration>,
        declared: &[String],
        http: &HttpSettings,
    ) -> BTreeMap<String, Integration> {
        let known: Vec<&str> = declared.iter().map(String::as_str).collect();
        let mut integrations = BTreeMap::new();
        for (name, ri) in raw {
            let key = format!("integrations.{name}");
            if !valid_id(&name) {
                self.problem(
                    &key,
                    "integration names may use letters, digits, `.`, `_`, `:` and `-`",
                );
            }
            if let Some(i) = self.integration(&key, &name, ri, &known, http) {
                integrations.insert(name, i);
            }
        }
        integrations
    }

    fn instance_id(&mut self, raw: Option<String>, env: &dyn Environment) -> String {
        if let Some(id) = raw {
            if !valid_instance_id(&id) {
                self.problem(
                    "instance_id",
                    "expected 1-128 characters of letters, digits, `.`, `_`, `:`, `/` or `-`",
                );
            }
            return id;
        }
        let host = env
            .var("HOSTNAME")
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|h| valid_instance_id(h) && h.len() <= 100)
            .unwrap_or_else(|| "grantbridge".to_owned());
        format!("{host}/{}", hex::encode(rand::random::<[u8; 2]>()))
    }

    /// A secret `key` names could not be read: a problem, or with a lenient
    /// [`Secrets`] policy a note in [`Config::unchecked`].
    fn unreadable_secret(&mut self, key: &str, why: String) {
        match self.secrets {
            Secrets::Read => self.problem(key, why),
            // Key files never get here with `ForGoogle`: `credentials_file`
            // reads them as strictly as `Read` does.
            Secrets::ForGoogle | Secrets::IfReadable | Secrets::Skip => self
                .unchecked
                .push(format!("{key}: not checked here ({why})")),
        }
    }

    /// With [`Secrets::Skip`], notes that `key` was not read and says so.
    fn skips_secret(&mut self, key: &str) -> bool {
        if self.secrets == Secrets::Skip {
            self.unchecked.push(format!("{key}: not read"));
        }
        self.secrets == Secrets::Skip
    }

    /// A secret held in an environment variable.
    fn secret_from_env(
        &mut self,
        key: &str,
        env: &dyn Environment,
        name: &str,
        why: &str,
    ) -> Option<SecretString> {
        if self.skips_secret(key) {
            return Some(SecretString::from(String::new()));
        }
        match env.var(name) {
            Some(t) => Some(SecretString::from(t.trim().to_owned())),
            None => {
                self.unreadable_secret(key, format!("environment variable {name} is not set{why}"));
                None
            }
        }
    }

    fn secret_from_file(&mut self, key: &str, path: &Path) -> Option<SecretString> {
        let path = if path.is_relative() {
            self.base_dir.join(path)
        } else {
            path.to_path_buf()
        };
        if self.skips_secret(key) {
            return Some(SecretString::from(String::new()));
        }
        self.files.push(path.clone());
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                self.warn_if_shared(key, &path);
                Some(SecretString::from(text.trim().to_owned()))
            }
            Ok(_) => {
                self.problem(key, format!("{} is empty", path.display()));
                None
            }
            Err(e) => {
                self.unreadable_secret(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    fn control_plane(
        &mut self,
        cp: RawControlPlane,
        http: &HttpSettings,
        env: &dyn Environment,
    ) -> Option<ControlPlaneSettings> {
        let url = match cp.url.as_deref() {
            Some(u) => checked_url(u, http.allow_insecure_loopback)
                .map_err(|e| self.problem("control_plane.url", e.to_string()))
                .ok(),
            None => {
                self.problem("control_plane.url", "missing; expected the control plane's base URL, e.g. \"https://cp.example.com\"");
                None
            }
        };
        let token = match (&cp.token_file, &cp.token_env) {
            (Some(_), Some(_)) => {
                self.problem(
                    "control_plane.token_file",
                    "set either token_file or token_env, not both",
                );
                None
            }
            (Some(file), None) => self.secret_from_file("control_plane.token_file", file),
            (None, name) => self.secret_from_env(
                "control_plane.token_env",
                env,
                name.as_deref().unwrap_or(DEFAULT_TOKEN_ENV),
                "; expected the connector token (or set control_plane.token_file)",
            ),
        };
        let wait = self
            .duration("control_plane.wait", cp.wait.as_deref())
            .unwrap_or(Duration::from_secs(20));
        if wait > Duration::from_secs(30) {
            self.problem(
                "control_plane.wait",
                "must be at most 30s (the protocol's long-poll limit)",
            );
        }
        let lease = self
            .duration("control_plane.lease", cp.lease.as_deref())
            .unwrap_or(Duration::from_secs(60));
        if lease < Duration::from_secs(2) || lease > Duration::from_secs(3600) {
            self.problem("control_plane.lease", "must be between 2s and 1h");
        }
        let heartbeat_interval = self
            .duration(
                "control_plane.heartbeat_interval",
                cp.heartbeat_interval.as_deref(),
            )
            .unwrap_or(Duration::from_secs(30));
        if heartbeat_interval < Duration::from_secs(1) {
            self.problem("control_plane.heartbeat_interval", "must be at least 1s");
        }
        let max_actions = cp.max_actions.unwrap_or(50);
        if !(1..=1000).contains(&max_actions) {
            self.problem("control_plane.max_actions", "must be between 1 and 1000");
        }
        let report_batch = cp.report_batch.unwrap_or(100);
        if !(1..=1000).contains(&report_batch) {
            self.problem("control_plane.report_batch", "must be between 1 and 1000");
        }
        let unauthorized_retry = self
            .duration(
                "control_plane.unauthorized_retry",
                cp.unauthorized_retry.as_deref(),
            )
            .unwrap_or(Duration::from_secs(30));
        Some(ControlPlaneSettings {
            unauthorized_retry,
            url: url?,
            token: token?,
            poll: cp.poll.unwrap_or(true),
            max_actions,
            wait,
            lease,
            heartbeat_interval,
            report_batch,
        })
    }

    fn push(&mut self, p: RawPush, env: &dyn Environment) -> Option<PushSettings> {
        use secrecy::ExposeSecret;
        let listen = match p.listen.as_deref() {
            Some(l) => l
                .parse()
                .map_err(|_| {
                    self.problem(
                        "push.listen",
                        format!("`{l}` is not an address; expected e.g. \"0.0.0.0:8443\""),
                    )
                })
                .ok(),
            None => {
                self.problem(
                    "push.listen",
                    "missing; expected the address to listen on, e.g. \"0.0.0.0:8443\"",
                );
                None
            }
        };
        let mut secrets = Vec::new();
        for (i, file) in p.secret_files.iter().enumerate() {
            secrets.extend(self.secret_from_file(&format!("push.secret_files[{i}]"), file));
        }
        for (i, name) in p.secret_envs.iter().enumerate() {
            secrets.extend(self.secret_from_env(&format!("push.secret_envs[{i}]"), env, name, ""));
        }
        if self.secrets == Secrets::Skip {
            // Placeholders for secrets not read: nothing to check.
            secrets.clear();
        }
        for secret in &secrets {
            let problem = match crate::daemon::signature::standard_key(secret.expose_secret()) {
                None if secret.expose_secret().len() < 16 => {
                    "every HMAC secret must be at least 16 characters (32 random bytes recommended)"
                }
                Some(Err(_)) => {
                    "a Standard Webhooks secret is `whsec_` and its key in base64; this one's key is not base64"
                }
                Some(Ok(key)) if key.len() < 16 => {
                    "a Standard Webhooks secret's key must be at least 16 bytes (24 to 64 recommended)"
                }
                _ => continue,
            };
            self.problem("push.secret_files", problem);
        }
        if p.secret_files.is_empty() && p.secret_envs.is_empty() {
            self.problem("push.secret_files", "push mode needs at least one HMAC secret (secret_files or secret_envs): pushed requests are authenticated");
        }
        let max_body_bytes = p.max_body_bytes.unwrap_or(1024 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&max_body_bytes) {
            self.problem("push.max_body_bytes", "must be between 1 KiB and 16 MiB");
        }
        let header_timeout = self.bounded_timeout("push.header_timeout", p.header_timeout);
        let body_timeout = self.bounded_timeout("push.body_timeout", p.body_timeout);
        let max_connections = p.max_connections.unwrap_or(DEFAULT_PUSH_CONNECTIONS);
        if !(1..=65_536).contains(&max_connections) {
            self.problem("push.max_connections", "must be between 1 and 65536");
        }
        let max_buffered_bytes = p.max_buffered_bytes.unwrap_or(DEFAULT_PUSH_BUFFERED_BYTES);
        if max_buffered_bytes < max_body_bytes || max_buffered_bytes > u32::MAX as usize {
            self.problem(
                "push.max_buffered_bytes",
                "must be at least push.max_body_bytes (one whole body) and at most 4 GiB",
            );
        }
        Some(PushSettings {
            listen: listen?,
            secrets,
            max_body_bytes,
            header_timeout,
            body_timeout,
            max_connections,
            max_buffered_bytes,
        })
    }

    /// A read timeout between 1s and 5m (default 10s).
    fn bounded_timeout(&mut self, key: &str, raw: Option<String>) -> Duration {
        let timeout = self
            .duration(key, raw.as_deref())
            .unwrap_or(DEFAULT_READ_TIMEOUT);
        if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(300) {
            self.problem(key, "must be between 1s and 5m");
        }
        timeout
    }

    fn admin(&mut self, a: raw::RawAdmin) -> Option<std::net::SocketAddr> {
        if a.enabled == Some(false) {
            return None;
        }
        let listen = a.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
        listen
            .parse()
            .map_err(|_| {
                self.problem(
                    "admin.listen",
                    format!("`{listen}` is not an address; expected e.g. \"127.0.0.1:9090\""),
                )
            })
            .ok()
    }

    fn log(&mut self, l: raw::RawLog) -> LogSettings {
        let level = l.level.unwrap_or_else(|| "info".to_owned());
        if crate::telemetry::parse_filter(&level).is_err() {
            self.problem("log.level", format!("`{level}` is not a level or filter; expected e.g. \"info\" or \"grantbridge=debug,info\""));
        }
        use crate::telemetry::LogFormat;
        let format = match l.format.as_deref() {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some("cloud-logging") => LogFormat::CloudLogging,
            Some(other) => {
                self.problem(
                    "log.format",
                    format!("`{other}` is not a log format; expected \"human\", \"json\" or \"cloud-logging\""),
                );
                LogFormat::Human
            }
        };
        if let Some(Err(m)) = l.trace_project.as_deref().map(gcp::check_project_id) {
            self.problem("log.trace_project", m);
        }
        LogSettings {
            level,
            format,
            trace_project: l.trace_project,
            audit_stdout: l.audit_stdout.unwrap_or(false),
        }
    }

    /// `[traces]`, with the standard OpenTelemetry variables as defaults:
    /// the configuration file wins, as a programmatic setting does in the SDKs.
    fn traces(
        &mut self,
        t: raw::RawTraces,
        http: &HttpSettings,
        env: &dyn Environment,
    ) -> Option<crate::telemetry::traces::TraceSettings> {
        let var = |name: &str| env.var(name).filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
        {
            return None;
        }
        // (key for messages, URL of the traces endpoint)
        let (key, endpoint) = match (
            t.otlp_endpoint,
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(base), _, _) => ("traces.otlp_endpoint", traces_path(&base)),
            (None, Some(exact), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", exact),
            (None, None, Some(base)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", traces_path(&base)),
            (None, None, None) => return None,
        };
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = var(name) {
                if protocol.trim() != "http/protobuf" {
                    self.problem(
                        name,
                        format!("`{protocol}`: grantbridge exports OTLP over HTTP/protobuf only; set \"http/protobuf\" and point the endpoint at the collector's HTTP port (usually 4318)"),
                    );
                }
                break;
            }
        }
        let endpoint = checked_url(&endpoint, http.allow_insecure_loopback)
            .map_err(|e| self.problem(key, e.to_string()))
            .ok()?;
        let service_name = t
            .service_name
            .or_else(|| var("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "grantbridge".to_owned());
        Some(crate::telemetry::traces::TraceSettings {
            endpoint,
            service_name,
        })
    }

    fn google(&mut self, g: RawGoogle, http: &HttpSettings) -> Option<GoogleSettings> {
        let cloudfunctions_api = self.api_base(
            "google.cloudfunctions_api",
            g.cloudfunctions_api.as_deref(),
            DEFAULT_CLOUDFUNCTIONS_API_URL,
            http,
        );
        let run_api = self.api_base(
            "google.run_api",
            g.run_api.as_deref(),
            DEFAULT_RUN_API_URL,
            http,
        );
        Some(GoogleSettings {
            cloudfunctions_api: cloudfunctions_api?,
            run_api: run_api?,
        })
    }

    /// A Google API's base URL: TLS (or allowed loopback), no path.
    fn api_base(
        &mut self,
        key: &str,
        raw: Option<&str>,
        default: &str,
        http: &HttpSettings,
    ) -> Option<Url> {
        let raw = raw.unwrap_or(default);
        let url = checked_url(raw, http.allow_insecure_loopback)
            .map_err(|e| self.problem(key, e.to_string()))
            .ok()?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            self.problem(
                key,
                format!("`{raw}` must be a base URL without a path, e.g. \"{default}\""),
            );
            return None;
        }
        Some(url)
    }

    fn watch_interval(&mut self, r: raw::RawReload) -> Option<Duration> {
        let interval = self
            .duration("reload.interval", r.interval.as_deref())
            .unwrap_or(Duration::from_secs(5));
        if interval < Duration::from_secs(1) || interval > Duration::from_secs(3600) {
            self.problem("reload.interval", "must be between 1s and 1h");
        }
        r.watch.unwrap_or(true).then_some(interval)
    }

    fn online_checks(&mut self, c: raw::RawChecks) -> Option<Duration> {
        let interval = self
            .duration("checks.interval", c.interval.as_deref())
            .unwrap_or(Duration::from_secs(900));
        if interval < Duration::from_secs(10) {
            self.problem("checks.interval", "must be at least 10s (each round calls the Cloud Functions API once per integration)");
        }
        c.online.unwrap_or(false).then_some(interval)
    }

    fn journal(&mut self, j: RawJournal) -> JournalSettings {
        let path = j
            .path
            .unwrap_or_else(|| PathBuf::from(DEFAULT_JOURNAL_PATH));
        let path = if path.is_relative() {
            self.base_dir.join(path)
        } else {
            path
        };
        let retention = self
            .duration("journal.retention", j.retention.as_deref())
            .unwrap_or(DEFAULT_RETENTION);
        if retention < Duration::from_secs(3600) {
            self.problem("journal.retention", "must be at least 1h");
        }
        let outbox_max_age = self
            .duration("journal.outbox_max_age", j.outbox_max_age.as_deref())
            .unwrap_or(DEFAULT_OUTBOX_MAX_AGE);
        if outbox_max_age < Duration::from_secs(10) {
            self.problem("journal.outbox_max_age", "must be at least 10s");
        }
        JournalSettings {
            path,
            retention,
            outbox_max_age,
        }
    }

    fn engine(&mut self, e: RawEngine) -> EngineSettings {
        let d = EngineSettings::default();
        let s = EngineSettings {
            max_concurrency: e.max_concurrency.unwrap_or(d.max_concurrency),
            per_integration_concurrency: e
                .per_integration_concurrency
                .unwrap_or(d.per_integration_concurrency),
            queue_capacity: e.queue_capacity.unwrap_or(d.queue_capacity),
            shutdown_grace: self
                .duration("engine.shutdown_grace", e.shutdown_grace.as_deref())
                .unwrap_or(d.shutdown_grace),
            result_body_max_bytes: e.result_body_max_bytes.unwrap_or(d.result_body_max_bytes),
        };
        for (key, v, max) in [
            ("engine.max_concurrency", s.max_concurrency, 10_000),
            (
                "engine.per_integration_concurrency",
                s.per_integration_concurrency,
                10_000,
            ),
            ("engine.queue_capacity", s.queue_capacity, 10_000_000),
        ] {
            if v == 0 || v > max {
                self.problem(key, format!("must be between 1 and {max}"));
            }
        }
        s
    }

    fn duration(&mut self, key: &str, text: Option<&str>) -> Option<Duration> {
        let text = text?;
        match humantime::parse_duration(text) {
            Ok(d) => Some(d),
            Err(_) => {
                self.problem(
                    key,
                    format!("`{text}` is not a duration; expected e.g. \"30s\", \"5m\""),
                );
                None
            }
        }
    }

    fn key_file(
        &mut self,
        key: &str,
        path: Option<PathBuf>,
        http: &HttpSettings,
    ) -> Option<CredentialsSpec> {
        self.credentials_file(key, path, http, false)
    }

    /// `key_file` as a service-account key, or with `external` as a workload
    /// identity federation credential configuration.
    fn credentials_file(
        &mut self,
        key: &str,
        path: Option<PathBuf>,
        http: &HttpSettings,
        external: bool,
    ) -> Option<CredentialsSpec> {
        let Some(path) = path else {
            self.problem(
                format!("{key}.key_file"),
                if external {
                    "missing; expected the path of the credential configuration (gcloud iam workload-identity-pools create-cred-config)"
                } else {
                    "missing; expected the path of a service-account key JSON file"
                },
            );
            return None;
        };
        let path = if path.is_relative() {
            self.base_dir.join(path)
        } else {
            path
        };
        let key_file = format!("{key}.key_file");
        if self.skips_secret(&key_file) {
            return None;
        }
        if self.secrets == Secrets::IfReadable
            && let Err(e) = std::fs::File::open(&path)
        {
            self.unreadable_secret(&key_file, format!("cannot read {}: {e}", path.display()));
            return None;
        }
        self.files.push(path.clone());
        if external {
            return match crate::google::CredentialsFile::from_file(
                &path,
                http.allow_insecure_loopback,
            ) {
                Ok(crate::google::CredentialsFile::ExternalAccount(account)) => {
                    Some(CredentialsSpec::ExternalAccount {
                        config_file: path,
                        account: Arc::from(account),
                    })
                }
                Ok(_) => {
                    self.problem(key_file, format!("{} is not an `external_account` credential configuration (gcloud iam workload-identity-pools create-cred-config writes one)", path.display()));
                    None
                }
                Err(e) => {
                    self.problem(key_file, e.to_string());
                    None
                }
            };
        }
        match ServiceAccountKey::from_file(&path, http.allow_insecure_loopback) {
            Ok(k) => Some({
                self.warn_if_shared(&format!("{key}.key_file"), &path);
                CredentialsSpec::ServiceAccountKey {
                    key_file: path,
                    key: Arc::new(k),
                }
            }),
            Err(e) => {
                self.problem(format!("{key}.key_file"), e.to_string());
                None
            }
        }
    }

    fn credentials(
        &mut self,
        key: &str,
        rc: RawConnection,
        http: &HttpSettings,
    ) -> Option<CredentialsSpec> {
        let kind = rc.credentials.as_deref().unwrap_or("adc");
        let impersonating = kind == "impersonate";
        if !impersonating {
            for (field, set) in [
                (
                    "target_service_account",
                    rc.target_service_account.is_some(),
                ),
                ("delegates", !rc.delegates.is_empty()),
                ("source", rc.source.is_some()),
                ("iam_credentials_url", rc.iam_credentials_url.is_some()),
            ] {
                if set {
                    self.problem(
                        format!("{key}.{field}"),
                        format!("only used with credentials = \"impersonate\", not \"{kind}\""),
                    );
                }
            }
        }
        match kind {
            "service_account_key" => self.key_file(key, rc.key_file, http),
            "metadata" => {
                self.no_key_file(key, kind, &rc.key_file);
                Some(CredentialsSpec::Metadata {
                    host: rc.metadata_host,
                })
            }
            "adc" => {
                self.no_key_file(key, kind, &rc.key_file);
                Some(CredentialsSpec::Adc)
            }
            "external_account" => self.credentials_file(key, rc.key_file, http, true),
            "impersonate" => {
                let target = match rc.target_service_account {
                    Some(t) => match gcp::check_service_account_email(&t) {
                        Ok(()) => Some(t),
                        Err(m) => {
                            self.problem(format!("{key}.target_service_account"), m);
                            None
                        }
                    },
                    None => {
                        self.problem(
                            format!("{key}.target_service_account"),
                            "missing; expected the email of the service account to impersonate",
                        );
                        None
                    }
                };
                for (i, d) in rc.delegates.iter().enumerate() {
                    if let Err(m) = gcp::check_service_account_email(d) {
                        self.problem(format!("{key}.delegates[{i}]"), m);
                    }
                }
                let iam = rc
                    .iam_credentials_url
                    .as_deref()
                    .unwrap_or(DEFAULT_IAM_CREDENTIALS_URL);
                let iam = match checked_url(iam, http.allow_insecure_loopback) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        self.problem(format!("{key}.iam_credentials_url"), e.to_string());
                        None
                    }
                };
                let default_source = if rc.key_file.is_some() {
                    "service_account_key"
                } else {
                    "adc"
                };
                let source = match rc.source.as_deref().unwrap_or(default_source) {
                    "service_account_key" => self.key_file(key, rc.key_file, http),
                    "metadata" => Some(CredentialsSpec::Metadata {
                        host: rc.metadata_host,
                    }),
                    "adc" => Some(CredentialsSpec::Adc),
                    other => {
                        self.problem(format!("{key}.source"), format!("`{other}` is not a credential source; expected \"service_account_key\", \"metadata\" or \"adc\""));
                        None
                    }
                };
                Some(CredentialsSpec::Impersonate {
                    target: target?,
                    delegates: rc.delegates,
                    source: Box::new(source?),
                    iam_credentials_url: iam?,
                })
            }
            other => {
                self.problem(format!("{key}.credentials"), format!("`{other}` is not a credentials type; expected \"service_account_key\", \"metadata\", \"impersonate\", \"adc\" or \"external_account\""));
                None
            }
        }
    }

    fn no_key_file(&mut self, key: &str, kind: &str, key_file: &Option<PathBuf>) {
        if key_file.is_some() {
            self.problem(format!("{key}.key_file"), format!("not used with credentials = \"{kind}\"; did you mean credentials = \"service_account_key\"?"));
        }
    }

    fn required(
        &mut self,
        key: &str,
        field: &str,
        value: Option<String>,
        expected: &str,
    ) -> Option<String> {
        if value.is_none() {
            self.problem(
                format!("{key}.{field}"),
                format!("missing; expected {expected}"),
            );
        }
        value
    }

    fn integration(
        &mut self,
        key: &str,
        name: &str,
        ri: RawIntegration,
        connections: &[&str],
        http: &HttpSettings,
    ) -> Option<Integration> {
        let connection = self.connection_ref(key, ri.connection, connections);
        let project_id = self.required(
            key,
            "project_id",
            ri.project_id,
            "the GCP project id, e.g. \"acme-prod\"",
        );
        if let Some(Err(m)) = project_id.as_deref().map(gcp::check_project_id) {
            self.problem(format!("{key}.project_id"), m);
        }
        let function = self.required(key, "function", ri.function, "the Cloud Function's name");
        if let Some(Err(m)) = function.as_deref().map(gcp::check_function_name) {
            self.problem(format!("{key}.function"), m);
        }
        let region = ri.region.unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let generation = match ri.generation {
            None => None,
            Some(1) => Some(Generation::Gen1),
            Some(2) => Some(Generation::Gen2),
            Some(n) => {
                self.problem(
                    format!("{key}.generation"),
                    format!("{n} is not a Cloud Functions generation; expected 1 (1st gen) or 2 (2nd gen, Cloud Run functions)"),
                );
                None
            }
        };
        if ri.url.is_none()
            && generation != Some(Generation::Gen2)
            && let Err(m) = gcp::check_region(&region)
        {
            self.problem(format!("{key}.region"), m);
        }
        if generation == Some(Generation::Gen2) {
            let target = FunctionTarget {
                region: &region,
                project_id: project_id.as_deref(),
                function: function.as_deref(),
            };
            self.gen2_url_and_audience(key, ri.url.as_deref(), ri.audience.is_some(), target);
        }
        let run_app = ri
            .url
            .as_deref()
            .and_then(|u| Url::parse(u).ok())
            .is_some_and(|u| u.host_str().is_some_and(|h| h.ends_with(".run.app")));
        if generation == Some(Generation::Gen1) && run_app {
            self.problem(
                format!("{key}.url"),
                "a 1st gen function has no run.app URL: set generation = 2, or use its cloudfunctions.net URL",
            );
        }
        let target = FunctionTarget {
            region: &region,
            project_id: project_id.as_deref(),
            function: function.as_deref(),
        };
        let (url, audience) = self.url_and_audience(key, ri.url, ri.audience, target, http);
        let timeout = self
            .duration(&format!("{key}.timeout"), ri.timeout.as_deref())
            .unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            self.problem(
                format!("{key}.timeout"),
                "must be between 1s and 540s (the Cloud Functions maximum)",
            );
        }
        let max_attempts = ri.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=20).contains(&max_attempts) {
            self.problem(
                format!("{key}.max_attempts"),
                format!("{max_attempts} is out of range; expected 1 to 20"),
            );
        }
        let access_details = ri.access_details.and_then(|a| {
            Url::parse(&a)
                .map_err(|_| {
                    self.problem(
                        format!("{key}.access_details"),
                        format!("`{a}` is not a URL"),
                    )
                })
                .ok()
        });
        Some(Integration {
            name: name.to_owned(),
            connection: connection?,
            project_id: project_id?,
            region,
            function: function?,
            generation,
            url: url?,
            audience: audience?,
            custom_parameters: ri.custom_parameters,
            access_details,
            timeout,
            max_attempts,
        })
    }

    /// A 2nd gen function has no URL grantbridge can derive, and its ID
    /// tokens carry its Cloud Run service URL as audience (whichever of its
    /// two URLs is called), which cannot be derived either.
    fn gen2_url_and_audience(
        &mut self,
        key: &str,
        url: Option<&str>,
        has_audience: bool,
        target: FunctionTarget<'_>,
    ) {
        let describe = format!(
            "gcloud functions describe {} --region={} --project={} --format='value(serviceConfig.uri)'",
            target.function.unwrap_or("FUNCTION"),
            target.region,
            target.project_id.unwrap_or("PROJECT")
        );
        let Some(url) = url else {
            self.problem(
                format!("{key}.url"),
                format!("required for a 2nd gen function (generation = 2): its Cloud Run URL ({describe})"),
            );
            return;
        };
        let on_cloudfunctions_net = Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.ends_with(".cloudfunctions.net")))
            .unwrap_or(false);
        if on_cloudfunctions_net && !has_audience {
            self.problem(
                format!("{key}.audience"),
                format!("required when a 2nd gen function is called at its cloudfunctions.net URL: its Cloud Run URL, the audience Cloud Run accepts ({describe})"),
            );
        }
    }

    /// `connection`: present, and one of the declared connections.
    fn connection_ref(
        &mut self,
        key: &str,
        raw: Option<String>,
        connections: &[&str],
    ) -> Option<String> {
        let connection = self.required(
            key,
            "connection",
            raw,
            "the name of a [connections.NAME] section",
        );
        if let Some(c) = &connection
            && !connections.contains(&c.as_str())
        {
            let known = if connections.is_empty() {
                "none are configured".to_owned()
            } else {
                connections.join(", ")
            };
            self.problem(
                format!("{key}.connection"),
                format!("`{c}` is not a configured connection (known: {known})"),
            );
        }
        connection
    }

    /// The URL to call (as configured, else the 1st gen default) and the
    /// audience of the ID token (as configured, else the URL exactly as
    /// written: normalising would add a trailing `/` to a host-only URL, a
    /// Cloud Run service, which is another audience).
    fn url_and_audience(
        &mut self,
        key: &str,
        raw_url: Option<String>,
        raw_audience: Option<String>,
        target: FunctionTarget<'_>,
        http: &HttpSettings,
    ) -> (Option<Url>, Option<String>) {
        let url = match (&raw_url, target.project_id, target.function) {
            (Some(u), _, _) => checked_url(u, http.allow_insecure_loopback)
                .map_err(|e| self.problem(format!("{key}.url"), e.to_string()))
                .ok(),
            (None, Some(p), Some(f)) => Url::parse(&first_gen_url(target.region, p, f)).ok(),
            _ => None,
        };
        if let Some(u) = &url
            && (u.query().is_some() || u.fragment().is_some())
        {
            self.problem(
                format!("{key}.url"),
                "must not carry a query string or fragment",
            );
        }
        let audience = raw_audience.or_else(|| match (&raw_url, &url) {
            (Some(raw), Some(_)) => Some(raw.trim().to_owned()),
            (None, Some(derived)) => Some(derived.as_str().to_owned()),
            _ => None,
        });
        if audience.as_deref().is_some_and(str::is_empty) {
            self.problem(format!("{key}.audience"), "must not be empty");
        }
        (url, audience)
    }
}

/// Where an integration's function is, as far as the file says.
#[derive(Clone, Copy)]
struct FunctionTarget<'a> {
    region: &'a str,
    project_id: Option<&'a str>,
    function: Option<&'a str>,
}

/// Instance ids may also carry `/` (host/suffix).
pub fn valid_instance_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '/'))
}

#[cfg(test)]
mod tests;

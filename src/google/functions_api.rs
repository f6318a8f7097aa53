//! Cloud Functions API client: read a function and list a project's
//! functions through v2 (which shows both generations), `testIamPermissions`
//! and `getIamPolicy` of a 1st gen function through v1, and of a 2nd gen
//! function's Cloud Run service (where its invoke permission lives) through
//! the Cloud Run Admin API v2; authenticated with a connection's access token.
//! Answers are parsed into typed values once, here; Google's JSON error shape
//! is classified (401, 403, 404, retryable) and every error says what to do
//! next.
//!
//! It must only read: it never deploys, changes or calls a function, and never
//! sets an IAM policy. It must only call the configured API base URL, read
//! bounded bodies, and never put a token in an error.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::error::retryable_status;
use super::token::AccessToken;
use crate::http::{ExchangeError, transport_reason};
use crate::retry::Backoff;

/// Largest answer read from the API (one function, one policy, or one list page).
const MAX_RESPONSE: usize = 4 * 1024 * 1024;
/// Functions asked for per list page.
const PAGE_SIZE: u32 = 100;
/// Pages followed before `list_functions` gives up (a bound against a runaway token, not an expectation).
const MAX_PAGES: usize = 100;
/// Per-request timeout: these are small metadata reads.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per call for transient failures (5xx, 429, network).
const ATTEMPTS: u32 = 3;

/// The permission to invoke a 1st gen HTTP function (in `roles/cloudfunctions.invoker`).
pub const INVOKE_PERMISSION: &str = "cloudfunctions.functions.invoke";
/// The role that holds [`INVOKE_PERMISSION`].
pub const INVOKER_ROLE: &str = "roles/cloudfunctions.invoker";
/// Read-only access to functions (get, list); it does not include `getIamPolicy`.
pub const VIEWER_ROLE: &str = "roles/cloudfunctions.viewer";
/// The permission `getIamPolicy` needs (not in [`VIEWER_ROLE`]).
pub const GET_IAM_POLICY_PERMISSION: &str = "cloudfunctions.functions.getIamPolicy";

/// The permission to invoke a 2nd gen function: on its Cloud Run service (in `roles/run.invoker`).
pub const RUN_INVOKE_PERMISSION: &str = "run.routes.invoke";
/// The role that holds [`RUN_INVOKE_PERMISSION`].
pub const RUN_INVOKER_ROLE: &str = "roles/run.invoker";
/// Read access to Cloud Run services, their IAM policy included.
pub const RUN_VIEWER_ROLE: &str = "roles/run.viewer";

/// The Cloud Functions API at a base URL (`https://cloudfunctions.googleapis.com`),
/// and the Cloud Run Admin API at another (`https://run.googleapis.com`).
#[derive(Debug, Clone)]
pub struct CloudFunctionsApi {
    http: reqwest::Client,
    base: Url,
    run_base: Url,
    backoff: Backoff,
}

/// A Cloud Run service's resource name: `projects/{project}/locations/{region}/services/{service}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ServiceName {
    pub project: String,
    pub region: String,
    pub service: String,
}

impl ServiceName {
    /// Parses `projects/P/locations/R/services/S`.
    pub fn parse(name: &str) -> Option<Self> {
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["projects", p, "locations", r, "services", s]
                if !p.is_empty() && !r.is_empty() && !s.is_empty() =>
            {
                Some(Self {
                    project: (*p).to_owned(),
                    region: (*r).to_owned(),
                    service: (*s).to_owned(),
                })
            }
            _ => None,
        }
    }

    /// The service Cloud Functions creates for a 2nd gen function: same
    /// project, region and name.
    pub fn of_function(f: &FunctionName) -> Self {
        Self {
            project: f.project.clone(),
            region: f.region.clone(),
            service: f.function.clone(),
        }
    }

    /// `gcloud run services` flags naming this service: `S --project=P --region=R`.
    pub fn gcloud_args(&self) -> String {
        format!(
            "{} --project={} --region={}",
            self.service, self.project, self.region
        )
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "projects/{}/locations/{}/services/{}",
            self.project, self.region, self.service
        )
    }
}

/// A function's resource name: `projects/{project}/locations/{region}/functions/{function}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct FunctionName {
    pub project: String,
    pub region: String,
    pub function: String,
}

impl FunctionName {
    pub fn new(
        project: impl Into<String>,
        region: impl Into<String>,
        function: impl Into<String>,
    ) -> Self {
        Self {
            project: project.into(),
            region: region.into(),
            function: function.into(),
        }
    }

    /// Parses `projects/P/locations/R/functions/F`.
    pub fn parse(name: &str) -> Option<Self> {
        let mut parts = name.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (
                Some("projects"),
                Some(p),
                Some("locations"),
                Some(r),
                Some("functions"),
                Some(f),
                None,
            ) if !p.is_empty() && !r.is_empty() && !f.is_empty() => Some(Self::new(p, r, f)),
            _ => None,
        }
    }

    /// `gcloud` flags naming this function: `F --project=P --region=R`.
    pub fn gcloud_args(&self) -> String {
        format!(
            "{} --project={} --region={}",
            self.function, self.project, self.region
        )
    }
}

impl std::fmt::Display for FunctionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "projects/{}/locations/{}/functions/{}",
            self.project, self.region, self.function
        )
    }
}

/// `state` of a function (v2 `Function.state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FunctionState {
    Active,
    Failed,
    Deploying,
    Deleting,
    Unknown,
    /// A value this version does not know, kept as Google wrote it.
    Other(String),
}

impl FunctionState {
    fn parse(s: &str) -> Self {
        match s {
            "ACTIVE" => Self::Active,
            "FAILED" => Self::Failed,
            "DEPLOYING" => Self::Deploying,
            "DELETING" => Self::Deleting,
            "UNKNOWN" => Self::Unknown,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Active => "ACTIVE",
            Self::Failed => "FAILED",
            Self::Deploying => "DEPLOYING",
            Self::Deleting => "DELETING",
            Self::Unknown => "UNKNOWN",
            Self::Other(s) => s,
        }
    }
}

/// `ingressSettings`: which networks may reach the function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Ingress {
    AllowAll,
    AllowInternalOnly,
    AllowInternalAndGclb,
    Other(String),
}

impl Ingress {
    fn parse(s: &str) -> Self {
        match s {
            "ALLOW_ALL" => Self::AllowAll,
            "ALLOW_INTERNAL_ONLY" => Self::AllowInternalOnly,
            "ALLOW_INTERNAL_AND_GCLB" => Self::AllowInternalAndGclb,
            // Unset means Google's default.
            "INGRESS_SETTINGS_UNSPECIFIED" => Self::AllowAll,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::AllowAll => "ALLOW_ALL",
            Self::AllowInternalOnly => "ALLOW_INTERNAL_ONLY",
            Self::AllowInternalAndGclb => "ALLOW_INTERNAL_AND_GCLB",
            Self::Other(s) => s,
        }
    }
}

/// 1st gen (Cloud Functions) or 2nd gen (Cloud Run functions), from the v2 `environment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Generation {
    Gen1,
    Gen2,
}

impl Generation {
    /// `1` or `2`, as `integrations.NAME.generation` writes it.
    pub fn number(&self) -> u8 {
        match self {
            Self::Gen1 => 1,
            Self::Gen2 => 2,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Gen1 => "GEN_1",
            Self::Gen2 => "GEN_2",
        }
    }
}

/// A function as the v2 API describes it (the fields grantbridge uses), for
/// either generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudFunction {
    pub name: FunctionName,
    pub state: FunctionState,
    pub generation: Generation,
    /// `url`: the function's cloudfunctions.net URL (an HTTP 1st gen
    /// function's trigger URL; a 2nd gen function answers there too).
    pub url: Option<String>,
    /// `serviceConfig.uri`: a 2nd gen function's Cloud Run service URL
    /// (`*.run.app`), the audience its ID tokens must carry.
    pub service_uri: Option<String>,
    /// `serviceConfig.service`: a 2nd gen function's Cloud Run service,
    /// where its invoker role is granted.
    pub service: Option<ServiceName>,
    /// `eventTrigger.eventType` of an event-driven function.
    pub event_type: Option<String>,
    /// `serviceConfig.timeoutSeconds` (Google's default, 60s, when not reported).
    pub timeout: Option<Duration>,
    /// `serviceConfig.ingressSettings` (Google's default, `ALLOW_ALL`, when not reported).
    pub ingress: Ingress,
    pub runtime: Option<String>,
    pub entry_point: Option<String>,
    /// `serviceConfig.availableMemory` ("256M").
    pub available_memory: Option<String>,
    pub service_account_email: Option<String>,
    pub update_time: Option<String>,
    /// `stateMessages[].message`: why a function is not ACTIVE.
    pub state_messages: Vec<String>,
}

/// The function's IAM policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct IamPolicy {
    #[serde(default)]
    pub version: i32,
    #[serde(default)]
    pub etag: String,
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Binding {
    pub role: String,
    #[serde(default)]
    pub members: Vec<String>,
    /// An IAM condition: the binding grants only when it holds. Google sends
    /// it only in a version-3 policy (`options.requestedPolicyVersion=3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// An IAM condition (a CEL `expression`, with a `title`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Condition {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub expression: String,
}

/// A member holding a role that can invoke, and the condition it holds it on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublicInvoker<'a> {
    pub member: &'a str,
    pub role: &'a str,
    pub condition: Option<&'a Condition>,
}

impl PartialOrd for Condition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Condition {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.title, &self.expression).cmp(&(&other.title, &other.expression))
    }
}

/// The base role of a binding: a version-1 answer names a conditional
/// binding `ROLE_withcond_<hash>` (its condition left out).
fn base_role(role: &str) -> &str {
    role.split_once("_withcond_").map_or(role, |(base, _)| base)
}

/// Members that mean "anyone".
pub const PUBLIC_MEMBERS: [&str; 2] = ["allUsers", "allAuthenticatedUsers"];

impl IamPolicy {
    /// Members holding `role` (unconditionally or not: a condition is still a grant).
    pub fn members_of(&self, role: &str) -> Vec<&str> {
        self.bindings
            .iter()
            .filter(|b| base_role(&b.role) == role)
            .flat_map(|b| b.members.iter().map(String::as_str))
            .collect()
    }

    /// `allUsers` / `allAuthenticatedUsers` holding a role that can invoke the
    /// function or service (an invoker role, or the broad roles that contain
    /// `cloudfunctions.functions.invoke` / `run.routes.invoke`).
    /// A conditional binding is one too (with its condition, when the policy
    /// is version 3; a version-1 answer's `_withcond_` role counts as well).
    pub fn public_invokers(&self) -> Vec<PublicInvoker<'_>> {
        const INVOKING_ROLES: [&str; 7] = [
            INVOKER_ROLE,
            "roles/cloudfunctions.admin",
            RUN_INVOKER_ROLE,
            "roles/run.admin",
            "roles/run.developer",
            "roles/owner",
            "roles/editor",
        ];
        let mut out: Vec<PublicInvoker<'_>> = self
            .bindings
            .iter()
            .filter(|b| INVOKING_ROLES.contains(&base_role(&b.role)))
            .flat_map(|b| {
                b.members
                    .iter()
                    .filter(|m| PUBLIC_MEMBERS.contains(&m.as_str()))
                    .map(move |m| PublicInvoker {
                        member: m.as_str(),
                        role: base_role(&b.role),
                        condition: b.condition.as_ref(),
                    })
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// What kind of refusal Google answered, for callers that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// 401: the access token was not accepted.
    Unauthenticated,
    /// 403: the account lacks the permission (or the API is disabled).
    PermissionDenied,
    /// 404: no such function (or project/region).
    NotFound,
    /// 408/429/5xx: transient; try again.
    Unavailable,
    /// Any other refusal (400, ...).
    Rejected,
}

/// Why a Cloud Functions API call failed.
#[derive(Debug, thiserror::Error)]
pub enum FunctionsApiError {
    /// Google answered with an error status.
    #[error(
        "{} {method} {resource} answered HTTP {status}{}: {message}. {}",
        if resource.contains("/services/") { "Cloud Run Admin API" } else { "Cloud Functions API" },
        if google_status.is_empty() { String::new() } else { format!(" {google_status}") },
        advice(*kind, method, resource, account.as_deref())
    )]
    Api {
        kind: ApiErrorKind,
        method: &'static str,
        resource: String,
        status: u16,
        google_status: String,
        message: String,
        /// The account the token speaks for, when the caller knows it (for advice).
        account: Option<String>,
    },
    /// No answer (connect, timeout, TLS).
    #[error(
        "Cloud Functions API {method} {url}: {reason}. Check network access to the Cloud Functions API ([google] cloudfunctions_api)"
    )]
    Transport {
        method: &'static str,
        url: String,
        reason: String,
    },
    /// A 2xx answer that is not what the API promises.
    #[error("Cloud Functions API {method} {url} returned an unexpected answer: {reason}")]
    BadResponse {
        method: &'static str,
        url: String,
        reason: String,
    },
    /// `list` kept returning pages.
    #[error(
        "Cloud Functions API list {parent}: more than {MAX_PAGES} pages; list one region at a time (--region)"
    )]
    TooManyPages { parent: String },
}

impl FunctionsApiError {
    /// Worth trying again (transient Google errors and the network).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { kind, .. } => *kind == ApiErrorKind::Unavailable,
            Self::Transport { .. } => true,
            Self::BadResponse { .. } | Self::TooManyPages { .. } => false,
        }
    }

    /// The kind of refusal, for `Api` errors.
    pub fn kind(&self) -> Option<ApiErrorKind> {
        match self {
            Self::Api { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// What to do next, for `Api` errors (also part of the message).
    pub fn advice(&self) -> Option<String> {
        match self {
            Self::Api {
                kind,
                method,
                resource,
                account,
                ..
            } => Some(advice(*kind, method, resource, account.as_deref())),
            _ => None,
        }
    }

    /// Names the account the token spoke for, so the advice can name it too.
    pub fn for_account(mut self, email: Option<&str>) -> Self {
        if let Self::Api { account, .. } = &mut self {
            *account = email.map(str::to_owned);
        }
        self
    }
}

/// `serviceAccount:EMAIL` (or `user:EMAIL`) for gcloud `--member`.
pub fn member(email: &str) -> String {
    if email.ends_with(".gserviceaccount.com") {
        format!("serviceAccount:{email}")
    } else {
        format!("user:{email}")
    }
}

/// What to do next about a Cloud Run Admin API refusal.
fn service_advice(kind: ApiErrorKind, method: &str, s: &ServiceName, who: &str) -> String {
    match kind {
        ApiErrorKind::PermissionDenied if method == "getIamPolicy" => format!(
            "Reading a Cloud Run service's IAM policy needs run.services.getIamPolicy: grant {who} {RUN_VIEWER_ROLE} on the service (gcloud run services add-iam-policy-binding {args} --member={who} --role={RUN_VIEWER_ROLE}) or on the project; also check that the Cloud Run Admin API is enabled in project {p} (gcloud services enable run.googleapis.com --project={p})",
            args = s.gcloud_args(),
            p = s.project
        ),
        ApiErrorKind::PermissionDenied => format!(
            "Check that the Cloud Run Admin API is enabled in project {p} (gcloud services enable run.googleapis.com --project={p})",
            p = s.project
        ),
        ApiErrorKind::NotFound => format!(
            "No Cloud Run service {} in region {} of project {}: the function's service is gone; redeploy the function",
            s.service, s.region, s.project
        ),
        ApiErrorKind::Unauthenticated => "The connection's access token was not accepted: check the connection's credentials (grantbridge check) and that the token is for the cloud-platform scope".to_owned(),
        ApiErrorKind::Unavailable => "A transient Google error; try again".to_owned(),
        ApiErrorKind::Rejected => "Google refused the request; check the project, region and service names".to_owned(),
    }
}

/// What to do next, per status and method.
fn advice(kind: ApiErrorKind, method: &str, resource: &str, account: Option<&str>) -> String {
    let who = account.map(member);
    let who = who.as_deref().unwrap_or("serviceAccount:ACCOUNT_EMAIL");
    let name = FunctionName::parse(resource);
    if let Some(service) = ServiceName::parse(resource) {
        return service_advice(kind, method, &service, who);
    }
    match kind {
        ApiErrorKind::Unauthenticated => "The connection's access token was not accepted: check the connection's credentials (grantbridge check) and that the token is for the cloud-platform scope".to_owned(),
        ApiErrorKind::PermissionDenied => match (method, name) {
            ("getIamPolicy", Some(n)) => format!(
                "Reading a function's IAM policy needs {GET_IAM_POLICY_PERMISSION}, which {VIEWER_ROLE} does not include: grant a role that has it, e.g. a custom role (gcloud iam roles create grantbridgeChecker --project={p} --permissions=cloudfunctions.functions.get,cloudfunctions.functions.list,{GET_IAM_POLICY_PERMISSION}) bound with gcloud functions add-iam-policy-binding {args} --member={who} --role=projects/{p}/roles/grantbridgeChecker, or roles/iam.securityReviewer on the project. Also check that the Cloud Functions API is enabled in project {p}",
                p = n.project,
                args = n.gcloud_args()
            ),
            (_, Some(n)) => format!(
                "Grant {who} {VIEWER_ROLE} on the function (gcloud functions add-iam-policy-binding {args} --member={who} --role={VIEWER_ROLE}) or on the project; also check that the Cloud Functions API is enabled in project {p} (gcloud services enable cloudfunctions.googleapis.com --project={p})",
                args = n.gcloud_args(),
                p = n.project
            ),
            _ => {
                let project = resource
                    .strip_prefix("projects/")
                    .and_then(|r| r.split('/').next())
                    .unwrap_or("PROJECT");
                format!(
                    "Listing functions needs {VIEWER_ROLE} on the project: gcloud projects add-iam-policy-binding {project} --member={who} --role={VIEWER_ROLE}; also check that the Cloud Functions API is enabled in project {project}"
                )
            }
        },
        ApiErrorKind::NotFound => match name {
            Some(n) => format!(
                "No function {} in region {} of project {}: check integrations.*.function, region and project_id (grantbridge functions list shows what exists)",
                n.function, n.region, n.project
            ),
            None => "Check the project id and region".to_owned(),
        },
        ApiErrorKind::Unavailable => "A transient Google error; try again".to_owned(),
        ApiErrorKind::Rejected => "Google refused the request; check the project, region and function names".to_owned(),
    }
}

/// The v2 `Function` JSON, as written (unknown fields ignored: Google adds fields).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFunction {
    name: String,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    build_config: Option<RawBuildConfig>,
    #[serde(default)]
    service_config: Option<RawServiceConfig>,
    #[serde(default)]
    event_trigger: Option<RawEventTrigger>,
    #[serde(default)]
    update_time: Option<String>,
    #[serde(default)]
    state_messages: Vec<RawStateMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBuildConfig {
    #[serde(default)]
    runtime: Option<String>,
    #[serde(default)]
    entry_point: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawServiceConfig {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
    #[serde(default)]
    available_memory: Option<String>,
    #[serde(default)]
    ingress_settings: Option<String>,
    #[serde(default)]
    service_account_email: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEventTrigger {
    #[serde(default)]
    event_type: Option<String>,
}

#[derive(Deserialize)]
struct RawStateMessage {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawList {
    #[serde(default)]
    functions: Vec<RawFunction>,
    #[serde(default)]
    next_page_token: Option<String>,
    /// Locations that could not be reached; the answer has none of their functions.
    #[serde(default)]
    unreachable: Vec<String>,
}

/// What `list` found: the functions, and the locations Google could not
/// reach (`ListFunctionsResponse.unreachable`), whose functions are missing.
#[derive(Debug, Default)]
pub struct Listing {
    pub functions: Vec<CloudFunction>,
    pub unreachable: Vec<String>,
}

/// Reads `body` every way an answer of this API is read (for fuzzing):
/// a function, a page of functions, an IAM policy, a permission set, an error.
#[cfg(feature = "fuzzing")]
pub(crate) fn read_every_answer(body: &[u8]) {
    #[derive(Deserialize)]
    struct Permissions {
        #[serde(default)]
        _permissions: Vec<String>,
    }
    let url = Url::parse("https://cloudfunctions.googleapis.com/").expect("a URL");
    if let Ok(raw) = CloudFunctionsApi::parse::<RawFunction>("get", &url, body) {
        let _ = CloudFunction::try_from(raw);
    }
    if let Ok(page) = CloudFunctionsApi::parse::<RawList>("list", &url, body) {
        for raw in page.functions {
            let _ = CloudFunction::try_from(raw);
        }
    }
    if let Ok(policy) = CloudFunctionsApi::parse::<IamPolicy>("getIamPolicy", &url, body) {
        let _ = policy.public_invokers();
        let _ = policy.members_of("roles/cloudfunctions.invoker");
    }
    let _ = CloudFunctionsApi::parse::<Permissions>("testIamPermissions", &url, body);
    let _ = super::error::google_api_error(body);
}

impl TryFrom<RawFunction> for CloudFunction {
    type Error = String;

    fn try_from(r: RawFunction) -> Result<Self, String> {
        let name = FunctionName::parse(&r.name).ok_or_else(|| {
            format!(
                "`name` {:?} is not projects/P/locations/R/functions/F",
                r.name
            )
        })?;
        let service = r.service_config.as_ref().and_then(|c| c.service.as_deref());
        let service = match service.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(ServiceName::parse(s).ok_or_else(|| {
                format!("`serviceConfig.service` {s:?} is not projects/P/locations/R/services/S")
            })?),
        };
        let generation = match r.environment.as_deref() {
            Some("GEN_2") => Generation::Gen2,
            Some("GEN_1") => Generation::Gen1,
            // Unset: only a 2nd gen function has a Cloud Run service.
            _ if service.is_some() => Generation::Gen2,
            _ => Generation::Gen1,
        };
        let config = r.service_config;
        let build = r.build_config;
        Ok(Self {
            name,
            state: FunctionState::parse(r.state.as_deref().unwrap_or("UNKNOWN")),
            generation,
            url: r.url.filter(|u| !u.is_empty()),
            service_uri: config
                .as_ref()
                .and_then(|c| c.uri.clone())
                .filter(|u| !u.is_empty()),
            service,
            event_type: r.event_trigger.and_then(|t| t.event_type),
            timeout: config
                .as_ref()
                .and_then(|c| c.timeout_seconds)
                .map(Duration::from_secs),
            ingress: Ingress::parse(
                config
                    .as_ref()
                    .and_then(|c| c.ingress_settings.as_deref())
                    .unwrap_or("ALLOW_ALL"),
            ),
            runtime: build.as_ref().and_then(|b| b.runtime.clone()),
            entry_point: build.and_then(|b| b.entry_point),
            available_memory: config.as_ref().and_then(|c| c.available_memory.clone()),
            service_account_email: config.and_then(|c| c.service_account_email),
            update_time: r.update_time,
            state_messages: r
                .state_messages
                .into_iter()
                .map(|m| m.message)
                .filter(|m| !m.is_empty())
                .collect(),
        })
    }
}

impl CloudFunctionsApi {
    /// Both are already checked against the URL policy by the configuration.
    /// `base` is the Cloud Functions API's origin, `run_base` the Cloud Run
    /// Admin API's (`https://run.googleapis.com`).
    pub fn new(http: reqwest::Client, base: Url, run_base: Url) -> Self {
        Self {
            http,
            base,
            run_base,
            backoff: Backoff::default(),
        }
    }

    /// Shortens retry pauses (tests).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// `BASE/VERSION/{segments...}`, each segment percent-encoded as a path segment.
    fn url(base: &Url, version: &str, segments: &[&str]) -> Url {
        let mut url = base.clone();
        url.path_segments_mut()
            .expect("http(s) base URL")
            .pop_if_empty()
            .push(version)
            .extend(segments);
        url
    }

    fn function_url(&self, version: &str, name: &FunctionName, verb: Option<&str>) -> Url {
        let last = match verb {
            Some(v) => format!("{}:{v}", name.function),
            None => name.function.clone(),
        };
        Self::url(
            &self.base,
            version,
            &[
                "projects",
                &name.project,
                "locations",
                &name.region,
                "functions",
                &last,
            ],
        )
    }

    fn service_url(&self, name: &ServiceName, verb: &str) -> Url {
        Self::url(
            &self.run_base,
            "v2",
            &[
                "projects",
                &name.project,
                "locations",
                &name.region,
                "services",
                &format!("{}:{verb}", name.service),
            ],
        )
    }

    /// One call with retries for transient failures; returns the 2xx body.
    async fn call(
        &self,
        method: &'static str,
        resource: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, FunctionsApiError> {
        let mut attempt = 1;
        loop {
            match self.call_once(method, resource, request()).await {
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                    let delay = self.backoff.delay(attempt, None);
                    tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "Cloud Functions API call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn call_once(
        &self,
        method: &'static str,
        resource: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, FunctionsApiError> {
        let request = request.timeout(REQUEST_TIMEOUT).build().map_err(|e| {
            FunctionsApiError::BadResponse {
                method,
                url: resource.to_owned(),
                reason: format!("building the request: {e}"),
            }
        })?;
        let shown = request.url().to_string();
        let request = reqwest::RequestBuilder::from_parts(self.http.clone(), request);
        let answer = crate::http::exchange(request, MAX_RESPONSE)
            .await
            .map_err(|e| match e {
                ExchangeError::Send(e) => FunctionsApiError::Transport {
                    method,
                    url: shown.clone(),
                    reason: transport_reason(&e),
                },
                ExchangeError::Body { source, .. } => FunctionsApiError::BadResponse {
                    method,
                    url: shown.clone(),
                    reason: source.to_string(),
                },
            })?;
        let (status, body) = (answer.status, answer.body);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let (google_status, message) = super::error::google_api_error(&body);
        let kind = match status {
            401 => ApiErrorKind::Unauthenticated,
            403 => ApiErrorKind::PermissionDenied,
            404 => ApiErrorKind::NotFound,
            s if retryable_status(s) => ApiErrorKind::Unavailable,
            _ => ApiErrorKind::Rejected,
        };
        Err(FunctionsApiError::Api {
            kind,
            method,
            resource: resource.to_owned(),
            status,
            google_status,
            message,
            account: None,
        })
    }

    fn parse<T: for<'de> Deserialize<'de>>(
        method: &'static str,
        url: &Url,
        body: &[u8],
    ) -> Result<T, FunctionsApiError> {
        serde_json::from_slice(body).map_err(|e| FunctionsApiError::BadResponse {
            method,
            url: url.to_string(),
            reason: format!("not the JSON the API documents: {e}"),
        })
    }

    /// `GET /v2/projects/P/locations/R/functions/F` (either generation).
    pub async fn get_function(
        &self,
        token: &AccessToken,
        name: &FunctionName,
    ) -> Result<CloudFunction, FunctionsApiError> {
        let url = self.function_url("v2", name, None);
        let body = self
            .call("get", &name.to_string(), || {
                self.http.get(url.clone()).bearer_auth(token.expose())
            })
            .await?;
        let raw: RawFunction = Self::parse("get", &url, &body)?;
        CloudFunction::try_from(raw).map_err(|reason| FunctionsApiError::BadResponse {
            method: "get",
            url: url.to_string(),
            reason,
        })
    }

    /// Every function in `project` and `region` (`"-"`: all regions), of both
    /// generations (v2), following `nextPageToken` up to a bound. Sorted as
    /// Google returns them.
    pub async fn list_functions(
        &self,
        token: &AccessToken,
        project: &str,
        region: &str,
    ) -> Result<Listing, FunctionsApiError> {
        let parent = format!("projects/{project}/locations/{region}");
        let base = Self::url(
            &self.base,
            "v2",
            &["projects", project, "locations", region, "functions"],
        );
        let mut out = Listing::default();
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = base.clone();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("pageSize", &PAGE_SIZE.to_string());
                if let Some(t) = &page_token {
                    q.append_pair("pageToken", t);
                }
            }
            let body = self
                .call("list", &parent, || {
                    self.http.get(url.clone()).bearer_auth(token.expose())
                })
                .await?;
            let page: RawList = Self::parse("list", &url, &body)?;
            for location in page.unreachable {
                if !out.unreachable.contains(&location) {
                    out.unreachable.push(location);
                }
            }
            for raw in page.functions {
                out.functions
                    .push(CloudFunction::try_from(raw).map_err(|reason| {
                        FunctionsApiError::BadResponse {
                            method: "list",
                            url: url.to_string(),
                            reason,
                        }
                    })?);
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if Some(&t) == page_token.as_ref() => {
                    return Err(FunctionsApiError::BadResponse {
                        method: "list",
                        url: url.to_string(),
                        reason: "nextPageToken repeats the page just read".into(),
                    });
                }
                Some(t) => page_token = Some(t),
                None => return Ok(out),
            }
        }
        Err(FunctionsApiError::TooManyPages { parent })
    }

    /// `POST /v1/{name}:testIamPermissions`: which of `permissions` the token's
    /// account holds on the (1st gen) function (needs no extra permission).
    pub async fn test_iam_permissions(
        &self,
        token: &AccessToken,
        name: &FunctionName,
        permissions: &[&str],
    ) -> Result<Vec<String>, FunctionsApiError> {
        let url = self.function_url("v1", name, Some("testIamPermissions"));
        self.test_permissions(token, url, &name.to_string(), permissions)
            .await
    }

    /// `POST /v2/{service}:testIamPermissions` on the Cloud Run Admin API:
    /// which of `permissions` the token's account holds on a 2nd gen
    /// function's service (needs no extra permission).
    pub async fn test_service_permissions(
        &self,
        token: &AccessToken,
        service: &ServiceName,
        permissions: &[&str],
    ) -> Result<Vec<String>, FunctionsApiError> {
        let url = self.service_url(service, "testIamPermissions");
        self.test_permissions(token, url, &service.to_string(), permissions)
            .await
    }

    async fn test_permissions(
        &self,
        token: &AccessToken,
        url: Url,
        resource: &str,
        permissions: &[&str],
    ) -> Result<Vec<String>, FunctionsApiError> {
        #[derive(Serialize)]
        struct Req<'a> {
            permissions: &'a [&'a str],
        }
        #[derive(Deserialize)]
        struct Reply {
            // Google omits the field when none is held.
            #[serde(default)]
            permissions: Vec<String>,
        }
        let req = Req { permissions };
        let body = self
            .call("testIamPermissions", resource, || {
                self.http
                    .post(url.clone())
                    .bearer_auth(token.expose())
                    .json(&req)
            })
            .await?;
        let reply: Reply = Self::parse("testIamPermissions", &url, &body)?;
        Ok(reply.permissions)
    }

    /// `GET /v1/{name}:getIamPolicy` (needs `cloudfunctions.functions.getIamPolicy`).
    pub async fn get_iam_policy(
        &self,
        token: &AccessToken,
        name: &FunctionName,
    ) -> Result<IamPolicy, FunctionsApiError> {
        let url = self.function_url("v1", name, Some("getIamPolicy"));
        self.policy(token, url, &name.to_string()).await
    }

    /// `GET /v2/{service}:getIamPolicy` on the Cloud Run Admin API (needs
    /// `run.services.getIamPolicy`, in `roles/run.viewer`).
    pub async fn get_service_iam_policy(
        &self,
        token: &AccessToken,
        service: &ServiceName,
    ) -> Result<IamPolicy, FunctionsApiError> {
        let url = self.service_url(service, "getIamPolicy");
        self.policy(token, url, &service.to_string()).await
    }

    async fn policy(
        &self,
        token: &AccessToken,
        mut url: Url,
        resource: &str,
    ) -> Result<IamPolicy, FunctionsApiError> {
        // Version 3, or Google hides conditional bindings' conditions (and
        // renames their roles `ROLE_withcond_<hash>`).
        url.query_pairs_mut()
            .append_pair("options.requestedPolicyVersion", "3");
        let body = self
            .call("getIamPolicy", resource, || {
                self.http.get(url.clone()).bearer_auth(token.expose())
            })
            .await?;
        Self::parse("getIamPolicy", &url, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> CloudFunctionsApi {
        CloudFunctionsApi::new(
            reqwest::Client::new(),
            Url::parse("https://cloudfunctions.googleapis.com").unwrap(),
            Url::parse("https://run.googleapis.com").unwrap(),
        )
    }

    #[test]
    fn urls_follow_the_resource_names() {
        let n = FunctionName::new("acme-prod", "us-central1", "grant-db");
        assert_eq!(
            api().function_url("v2", &n, None).as_str(),
            "https://cloudfunctions.googleapis.com/v2/projects/acme-prod/locations/us-central1/functions/grant-db"
        );
        assert_eq!(
            api().function_url("v1", &n, Some("getIamPolicy")).as_str(),
            "https://cloudfunctions.googleapis.com/v1/projects/acme-prod/locations/us-central1/functions/grant-db:getIamPolicy"
        );
        assert_eq!(
            api()
                .service_url(&ServiceName::of_function(&n), "testIamPermissions")
                .as_str(),
            "https://run.googleapis.com/v2/projects/acme-prod/locations/us-central1/services/grant-db:testIamPermissions"
        );
        // A hostile name cannot escape its path segment.
        let evil = FunctionName::new("p/../../x", "r", "f?x=1");
        let u = api().function_url("v2", &evil, None);
        assert!(u.path().starts_with("/v2/projects/p%2F"), "{u}");
        assert_eq!(u.query(), None);
    }

    #[test]
    fn names_parse_and_print() {
        let n = FunctionName::parse("projects/p/locations/r/functions/f").unwrap();
        assert_eq!(n, FunctionName::new("p", "r", "f"));
        assert_eq!(n.to_string(), "projects/p/locations/r/functions/f");
        assert!(FunctionName::parse("projects/p/locations/r/functions").is_none());
        assert!(FunctionName::parse("projects/p/locations/r/functions/f/x").is_none());
        assert!(FunctionName::parse("projects//locations/r/functions/f").is_none());
    }

    #[test]
    fn a_function_parses_with_googles_defaults() {
        let raw: RawFunction = serde_json::from_value(serde_json::json!({
            "name": "projects/p/locations/us-central1/functions/f",
            "environment": "GEN_1",
            "state": "ACTIVE",
            "url": "https://us-central1-p.cloudfunctions.net/f",
            "serviceConfig": {"timeoutSeconds": 120, "uri": "https://us-central1-p.cloudfunctions.net/f"},
            "somethingNew": {"x": 1}
        }))
        .unwrap();
        let f = CloudFunction::try_from(raw).unwrap();
        assert_eq!(f.state, FunctionState::Active);
        assert_eq!(f.generation, Generation::Gen1);
        assert_eq!(f.ingress, Ingress::AllowAll);
        assert_eq!(f.timeout, Some(Duration::from_secs(120)));
        assert_eq!(
            f.url.as_deref(),
            Some("https://us-central1-p.cloudfunctions.net/f")
        );
        assert!(f.service.is_none());

        let raw: RawFunction = serde_json::from_value(serde_json::json!({
            "name": "projects/p/locations/r/functions/g",
            "state": "SOMETHING_ELSE",
            "serviceConfig": {
                "service": "projects/p/locations/r/services/g",
                "uri": "https://g-abc-uc.a.run.app",
                "ingressSettings": "ALLOW_INTERNAL_ONLY"
            },
            "stateMessages": [{"severity": "ERROR", "message": "broken"}],
            "eventTrigger": {"eventType": "google.cloud.pubsub.topic.v1.messagePublished"}
        }))
        .unwrap();
        let g = CloudFunction::try_from(raw).unwrap();
        assert_eq!(g.state, FunctionState::Other("SOMETHING_ELSE".into()));
        assert_eq!(
            g.generation,
            Generation::Gen2,
            "no environment, but a service"
        );
        assert_eq!(g.ingress, Ingress::AllowInternalOnly);
        assert_eq!(g.service_uri.as_deref(), Some("https://g-abc-uc.a.run.app"));
        assert_eq!(
            g.service.unwrap().to_string(),
            "projects/p/locations/r/services/g"
        );
        assert_eq!(g.state_messages, ["broken"]);
        assert_eq!(
            g.event_type.as_deref(),
            Some("google.cloud.pubsub.topic.v1.messagePublished")
        );

        let raw: RawFunction = serde_json::from_value(serde_json::json!({"name": "f"})).unwrap();
        assert!(CloudFunction::try_from(raw).is_err());
        let raw: RawFunction = serde_json::from_value(serde_json::json!({
            "name": "projects/p/locations/r/functions/g",
            "serviceConfig": {"service": "services/g"}
        }))
        .unwrap();
        assert!(
            CloudFunction::try_from(raw).is_err(),
            "a malformed service name"
        );
    }

    #[test]
    fn public_invokers_are_found_in_any_invoking_role() {
        let policy: IamPolicy = serde_json::from_value(serde_json::json!({
            "version": 1, "etag": "BwX=",
            "bindings": [
                {"role": "roles/cloudfunctions.invoker", "members": ["serviceAccount:a@p.iam.gserviceaccount.com", "allUsers"]},
                {"role": "roles/cloudfunctions.viewer", "members": ["allAuthenticatedUsers"]},
                {"role": "roles/cloudfunctions.admin", "members": ["allAuthenticatedUsers"]}
            ]
        }))
        .unwrap();
        let pairs = |p: &IamPolicy| -> Vec<(String, String)> {
            p.public_invokers()
                .iter()
                .map(|i| (i.member.to_owned(), i.role.to_owned()))
                .collect()
        };
        assert_eq!(
            pairs(&policy),
            [
                (
                    "allAuthenticatedUsers".to_owned(),
                    "roles/cloudfunctions.admin".to_owned()
                ),
                ("allUsers".to_owned(), INVOKER_ROLE.to_owned())
            ]
        );
        assert_eq!(
            policy.members_of(INVOKER_ROLE),
            vec!["serviceAccount:a@p.iam.gserviceaccount.com", "allUsers"]
        );
        assert!(IamPolicy::default().public_invokers().is_empty());
    }

    /// A conditional public binding is still public: with its condition in a
    /// version-3 policy, and under the `_withcond_` name Google gives its role
    /// in a version-1 answer.
    #[test]
    fn conditional_public_invokers_are_found_in_either_policy_version() {
        let v3: IamPolicy = serde_json::from_value(serde_json::json!({
            "version": 3, "etag": "BwX=",
            "bindings": [{"role": "roles/cloudfunctions.invoker", "members": ["allUsers"],
                          "condition": {"title": "office hours", "expression": "request.time.getHours('Europe/Berlin') < 18"}}]
        }))
        .unwrap();
        let found = v3.public_invokers();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].role, INVOKER_ROLE);
        assert_eq!(found[0].condition.unwrap().title, "office hours");
        let v1: IamPolicy = serde_json::from_value(serde_json::json!({
            "version": 1,
            "bindings": [{"role": "roles/cloudfunctions.invoker_withcond_2f6a9d1c0e", "members": ["allUsers"]}]
        }))
        .unwrap();
        let found = v1.public_invokers();
        assert_eq!((found[0].member, found[0].role), ("allUsers", INVOKER_ROLE));
        assert!(found[0].condition.is_none());
    }

    #[test]
    fn errors_say_what_to_do_next() {
        let e = FunctionsApiError::Api {
            kind: ApiErrorKind::PermissionDenied,
            method: "get",
            resource: "projects/p/locations/r/functions/f".into(),
            status: 403,
            google_status: "PERMISSION_DENIED".into(),
            message: "Permission 'cloudfunctions.functions.get' denied".into(),
            account: None,
        }
        .for_account(Some("gb@p.iam.gserviceaccount.com"));
        let text = e.to_string();
        assert!(text.contains("HTTP 403 PERMISSION_DENIED"), "{text}");
        assert!(text.contains("gcloud functions add-iam-policy-binding f --project=p --region=r --member=serviceAccount:gb@p.iam.gserviceaccount.com --role=roles/cloudfunctions.viewer"), "{text}");
        assert!(!e.is_retryable());

        let e = FunctionsApiError::Api {
            kind: ApiErrorKind::PermissionDenied,
            method: "getIamPolicy",
            resource: "projects/p/locations/r/functions/f".into(),
            status: 403,
            google_status: String::new(),
            message: String::new(),
            account: None,
        };
        assert!(e.to_string().contains(GET_IAM_POLICY_PERMISSION));
        assert!(e.to_string().contains("ACCOUNT_EMAIL"));

        let e = FunctionsApiError::Api {
            kind: ApiErrorKind::Unavailable,
            method: "list",
            resource: "projects/p/locations/-".into(),
            status: 503,
            google_status: "UNAVAILABLE".into(),
            message: "try later".into(),
            account: None,
        };
        assert!(e.is_retryable());
        assert_eq!(
            member("alice@example.com"),
            "user:alice@example.com".to_owned()
        );
    }

    #[test]
    fn service_names_parse_and_print() {
        let s = ServiceName::parse("projects/p/locations/r/services/s").unwrap();
        assert_eq!(s.to_string(), "projects/p/locations/r/services/s");
        assert_eq!(s.gcloud_args(), "s --project=p --region=r");
        assert!(ServiceName::parse("projects/p/locations/r/services/").is_none());
        assert!(ServiceName::parse("projects/p/locations/r/functions/s").is_none());
    }

    #[test]
    fn run_service_refusals_say_what_to_grant() {
        let e = FunctionsApiError::Api {
            kind: ApiErrorKind::PermissionDenied,
            method: "getIamPolicy",
            resource: "projects/p/locations/r/services/s".into(),
            status: 403,
            google_status: "PERMISSION_DENIED".into(),
            message: "denied".into(),
            account: Some("gb@p.iam.gserviceaccount.com".into()),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("Cloud Run Admin API getIamPolicy"),
            "{text}"
        );
        assert!(
            text.contains("gcloud run services add-iam-policy-binding s --project=p --region=r --member=serviceAccount:gb@p.iam.gserviceaccount.com --role=roles/run.viewer"),
            "{text}"
        );
    }
}

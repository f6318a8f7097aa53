//! The Cloud Functions API (`cloudfunctions.googleapis.com`) v1 and v2 and
//! the Cloud Run Admin API v2 (`run.googleapis.com`) for the functions
//! deployed on the sandbox front end: `get`, `list` (pages, `-` for every
//! region), `testIamPermissions` and `getIamPolicy`, with each function's
//! metadata ([`FunctionMeta`]: project, region, status, timeout, ingress, ...)
//! and its invoker list as the IAM policy.
//!
//! As at Google, v1 shows 1st gen functions only and describes them as the v1
//! `CloudFunction`; v2 shows both generations as the v2 `Function`
//! (`environment`, `state`, `serviceConfig`); a 2nd gen function's invokers
//! are `roles/run.invoker` on its Cloud Run service, read through the Run
//! Admin API (`projects/P/locations/R/services/NAME`).
//!
//! Callers authenticate with an access token this sandbox issued. As at Google,
//! `get`/`list` need `roles/cloudfunctions.viewer` (on the function or the
//! project; `list` on the project), `getIamPolicy` needs
//! `cloudfunctions.functions.getIamPolicy` (which the viewer role does not
//! include), and `testIamPermissions` needs nothing: it answers what the caller
//! holds. Every failure uses Google's JSON error shape. It must not change a
//! function (read-only API) and must not reveal whether a function exists to a
//! caller without read rights.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;

use super::api_error::ApiError;
use axum::body::Body;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::functions::Function;
use super::{Inner, Sandbox, State};

const MAX_BODY_BYTES: usize = 64 * 1024;
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;
const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
const INVOKER_ROLE: &str = "roles/cloudfunctions.invoker";
const RUN_INVOKER_ROLE: &str = "roles/run.invoker";
/// The `run.*` permissions the sandbox's services answer `testIamPermissions` for.
const KNOWN_RUN_PERMISSIONS: [&str; 6] = [
    "routes.invoke",
    "services.get",
    "services.getIamPolicy",
    "services.setIamPolicy",
    "services.update",
    "services.delete",
];
const PUBLIC: [&str; 2] = ["allUsers", "allAuthenticatedUsers"];
/// The `cloudfunctions.functions.*` permissions `testIamPermissions` accepts.
const KNOWN_PERMISSIONS: [&str; 11] = [
    "call",
    "create",
    "delete",
    "get",
    "getIamPolicy",
    "invoke",
    "list",
    "setIamPolicy",
    "sourceCodeGet",
    "sourceCodeSet",
    "update",
];

/// What the Cloud Functions API reports about a deployed function. Defaults:
/// the sandbox project, `us-central1`, `ACTIVE`, 60s, `ALLOW_ALL`, `python312`,
/// an HTTPS trigger, the project's App Engine default service account. The
/// generation follows from how it was deployed
/// ([`Sandbox::deploy_gen2_function`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionMeta {
    /// `None`: the sandbox's project.
    pub project: Option<String>,
    pub region: String,
    /// `ACTIVE`, `OFFLINE`, `DEPLOY_IN_PROGRESS`, `DELETE_IN_PROGRESS`, `UNKNOWN`.
    pub status: String,
    pub timeout: Duration,
    /// `ALLOW_ALL`, `ALLOW_INTERNAL_ONLY`, `ALLOW_INTERNAL_AND_GCLB`.
    pub ingress: String,
    pub runtime: String,
    /// The runtime service account; `None`: `PROJECT@appspot.gserviceaccount.com`.
    pub service_account: Option<String>,
    /// `false`: an event-driven function (Pub/Sub trigger), no `httpsTrigger`.
    pub https_trigger: bool,
    pub entry_point: String,
    pub available_memory_mb: u32,
}

impl Default for FunctionMeta {
    fn default() -> Self {
        Self {
            project: None,
            region: "us-central1".to_owned(),
            status: "ACTIVE".to_owned(),
            timeout: Duration::from_secs(60),
            ingress: "ALLOW_ALL".to_owned(),
            runtime: "python312".to_owned(),
            service_account: None,
            https_trigger: true,
            entry_point: "handler".to_owned(),
            available_memory_mb: 256,
        }
    }
}

/// A read grant on the API: `resource` is `projects/P` or a function's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Grant {
    resource: String,
    member: String,
    role: ReadRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ReadRole {
    /// `roles/cloudfunctions.viewer`: get, list.
    Viewer,
    /// `cloudfunctions.functions.getIamPolicy` (a custom role, or roles/iam.securityReviewer).
    PolicyViewer,
    /// `roles/run.viewer`: `run.services.get`, `run.services.getIamPolicy`.
    RunViewer,
}

/// Which API a request came in on: what it shows and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// Cloud Functions v1: 1st gen functions only.
    V1,
    /// Cloud Functions v2: both generations.
    V2,
    /// Cloud Run Admin v2: the services of 2nd gen functions.
    Run,
}

impl Api {
    fn shows(self, f: &Function) -> bool {
        match self {
            Self::V1 => f.run_url.is_none(),
            Self::V2 => true,
            Self::Run => f.run_url.is_some(),
        }
    }
    fn collection(self) -> &'static str {
        match self {
            Self::Run => "services",
            Self::V1 | Self::V2 => "functions",
        }
    }
    fn invoker_role(self) -> &'static str {
        match self {
            Self::Run => RUN_INVOKER_ROLE,
            Self::V1 | Self::V2 => INVOKER_ROLE,
        }
    }
}

impl Sandbox {
    /// `http://127.0.0.1:P`, the Cloud Functions API (like `https://cloudfunctions.googleapis.com`).
    pub fn cloudfunctions_api_url(&self) -> String {
        format!("http://{}", self.state.urls.functions_api)
    }

    /// `http://127.0.0.1:P`, the Cloud Run Admin API (like
    /// `https://run.googleapis.com`): the Cloud Functions API's listener,
    /// whose `/v2/.../services/` paths it answers.
    pub fn cloud_run_api_url(&self) -> String {
        self.cloudfunctions_api_url()
    }

    /// Replace what the API reports about a deployed function (bumps `versionId`).
    pub fn set_function_meta(&self, name: &str, meta: FunctionMeta) {
        let now = self.state.now();
        if let Some(f) = self.state.lock().functions.get_mut(name) {
            f.meta = meta;
            f.version += 1;
            f.updated_at = now;
        }
    }

    /// What the API reports about a deployed function.
    pub fn function_meta(&self, name: &str) -> Option<FunctionMeta> {
        self.state
            .lock()
            .functions
            .get(name)
            .map(|f| f.meta.clone())
    }

    /// Grant `member_email` `roles/cloudfunctions.viewer` (get, list) on a
    /// function (its name) or a project (`projects/PROJECT`; needed for list).
    pub fn grant_viewer(&self, function_or_project: &str, member_email: &str) {
        self.grant(function_or_project, member_email, ReadRole::Viewer);
    }

    /// Grant `member_email` `cloudfunctions.functions.getIamPolicy` on a
    /// function or a project (`projects/PROJECT`), as a custom role or
    /// `roles/iam.securityReviewer` would.
    pub fn grant_iam_policy_viewer(&self, function_or_project: &str, member_email: &str) {
        self.grant(function_or_project, member_email, ReadRole::PolicyViewer);
    }

    /// Grant `member_email` `roles/run.viewer` (`run.services.get`,
    /// `run.services.getIamPolicy`) on a 2nd gen function's service (the
    /// function's name) or a project (`projects/PROJECT`).
    pub fn grant_run_viewer(&self, function_or_project: &str, member_email: &str) {
        self.grant(function_or_project, member_email, ReadRole::RunViewer);
    }

    /// Remove every read grant of `member_email` on a function or project.
    pub fn revoke_read_grants(&self, function_or_project: &str, member_email: &str) {
        self.state
            .lock()
            .cf_grants
            .retain(|g| !(g.resource == function_or_project && g.member == member_email));
    }

    fn grant(&self, resource: &str, member: &str, role: ReadRole) {
        self.state.lock().cf_grants.insert(Grant {
            resource: resource.to_owned(),
            member: member.to_owned(),
            role,
        });
    }
}

/// Cloud Functions v1 and v2 and, on the same listener (the paths do not
/// overlap), the Cloud Run Admin API v2.
pub(crate) fn router(state: Arc<State>) -> Router {
    macro_rules! on {
        ($handler:ident, $api:expr) => {
            |s: AxState<Arc<State>>,
             p: Path<Vec<String>>,
             q: Query<HashMap<String, String>>,
             h: HeaderMap,
             b: Body| { $handler($api, s, p, q, h, b) }
        };
    }
    Router::new()
        .route(
            "/v1/projects/{project}/locations/{location}/functions",
            get(on!(list, Api::V1)),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/functions/{name}",
            get(on!(get_or_policy, Api::V1)).post(on!(test_permissions, Api::V1)),
        )
        .route(
            "/v2/projects/{project}/locations/{location}/functions",
            get(on!(list, Api::V2)),
        )
        .route(
            "/v2/projects/{project}/locations/{location}/functions/{name}",
            get(on!(get_or_policy, Api::V2)).post(on!(test_permissions, Api::V2)),
        )
        .route(
            "/v2/projects/{project}/locations/{location}/services/{name}",
            get(on!(get_or_policy, Api::Run)).post(on!(test_permissions, Api::Run)),
        )
        .fallback(|| async { ApiError::not_found("Not Found").into_response() })
        .with_state(state)
}

/// `(project, location, name?)` from the path.
fn path3(p: &[String]) -> (&str, &str, &str) {
    let at = |i: usize| p.get(i).map(String::as_str).unwrap_or_default();
    (at(0), at(1), at(2))
}

impl ApiError {
    fn denied_on(permission: &str, resource: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!(
                "Permission '{permission}' denied on resource '{resource}' (or resource may not exist)."
            ),
        )
    }
    fn no_function(api: Api, project: &str, region: &str, name: &str) -> Self {
        match api {
            Api::Run => Self::not_found(format!(
                "Resource 'projects/{project}/locations/{region}/services/{name}' was not found"
            )),
            Api::V1 | Api::V2 => Self::not_found(format!(
                "Function {name} in region {region} in project {project} does not exist"
            )),
        }
    }
}

fn reply(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The account an access token in `Authorization: Bearer` was issued to.
fn caller(state: &State, headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| state.access_token_owner(t.trim()))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", UNAUTHENTICATED))
}

fn project_of<'a>(state: &'a State, f: &'a Function) -> &'a str {
    f.meta.project.as_deref().unwrap_or(&state.project_id)
}

fn has_role(
    inner: &Inner,
    member: &str,
    project: &str,
    function: Option<&str>,
    role: ReadRole,
) -> bool {
    let project_resource = format!("projects/{project}");
    inner.cf_grants.iter().any(|g| {
        g.member == member
            && g.role == role
            && (g.resource == project_resource || Some(g.resource.as_str()) == function)
    })
}

/// The deployed function `name` if it lives in `project`/`region` and `api` shows it.
fn find<'a>(
    state: &State,
    inner: &'a Inner,
    api: Api,
    project: &str,
    region: &str,
    name: &str,
) -> Option<&'a Function> {
    inner
        .functions
        .get(name)
        .filter(|f| project_of(state, f) == project && f.meta.region == region && api.shows(f))
}

fn google_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

fn service_account(project: &str, m: &FunctionMeta) -> String {
    m.service_account
        .clone()
        .unwrap_or_else(|| format!("{project}@appspot.gserviceaccount.com"))
}

/// The v1 `CloudFunction` JSON for a deployed (1st gen) function.
fn describe(state: &State, name: &str, f: &Function) -> Value {
    let project = project_of(state, f);
    let m = &f.meta;
    let mut v = json!({
        "name": format!("projects/{project}/locations/{}/functions/{name}", m.region),
        "status": m.status,
        "entryPoint": m.entry_point,
        "runtime": m.runtime,
        "timeout": google_duration(m.timeout),
        "availableMemoryMb": m.available_memory_mb,
        "serviceAccountEmail": service_account(project, m),
        "updateTime": State::rfc3339(f.updated_at),
        "versionId": f.version.to_string(),
        "ingressSettings": m.ingress,
        "maxInstances": 3000,
    });
    if m.https_trigger {
        v["httpsTrigger"] = json!({
            "url": format!("http://{}/{name}", state.urls.functions),
            "securityLevel": "SECURE_ALWAYS",
        });
    } else {
        v["eventTrigger"] = json!({
            "eventType": "google.pubsub.topic.publish",
            "resource": format!("projects/{project}/topics/{name}"),
            "service": "pubsub.googleapis.com",
            "failurePolicy": {},
        });
    }
    v
}

/// The v2 `Function` JSON for a deployed function of either generation: a
/// 2nd gen function names its Cloud Run service and that service's URL in
/// `serviceConfig`; both have the cloudfunctions.net `url`.
fn describe_v2(state: &State, name: &str, f: &Function) -> Value {
    let project = project_of(state, f);
    let m = &f.meta;
    let region = &m.region;
    let gen2 = f.run_url.is_some();
    let function_url = format!("http://{}/{name}", state.urls.functions);
    let v2_state = match m.status.as_str() {
        "ACTIVE" => "ACTIVE",
        "OFFLINE" => "FAILED",
        "DEPLOY_IN_PROGRESS" => "DEPLOYING",
        "DELETE_IN_PROGRESS" => "DELETING",
        _ => "UNKNOWN",
    };
    let mut service = json!({
        "timeoutSeconds": m.timeout.as_secs(),
        "availableMemory": format!("{}M", m.available_memory_mb),
        "ingressSettings": m.ingress,
        "serviceAccountEmail": service_account(project, m),
        "maxInstanceCount": if gen2 { 100 } else { 3000 },
        "allTrafficOnLatestRevision": true,
        "securityLevel": "SECURE_ALWAYS",
    });
    if let Some(run) = &f.run_url {
        service["service"] = json!(format!(
            "projects/{project}/locations/{region}/services/{name}"
        ));
        service["uri"] = json!(run);
        service["revision"] = json!(format!("{name}-{:05}-sbx", f.version));
        service["availableCpu"] = json!("0.1666");
        service["maxInstanceRequestConcurrency"] = json!(1);
    } else if m.https_trigger {
        service["uri"] = json!(function_url);
    }
    let mut v = json!({
        "name": format!("projects/{project}/locations/{region}/functions/{name}"),
        "environment": if gen2 { "GEN_2" } else { "GEN_1" },
        "state": v2_state,
        "updateTime": State::rfc3339(f.updated_at),
        "buildConfig": {
            "runtime": m.runtime,
            "entryPoint": m.entry_point,
            "dockerRegistry": "ARTIFACT_REGISTRY",
        },
        "serviceConfig": service,
    });
    if gen2 || m.https_trigger {
        v["url"] = json!(function_url);
    }
    if !m.https_trigger {
        v["eventTrigger"] = json!({
            "eventType": if gen2 { "google.cloud.pubsub.topic.v1.messagePublished" } else { "google.pubsub.topic.publish" },
            "pubsubTopic": format!("projects/{project}/topics/{name}"),
            "retryPolicy": "RETRY_POLICY_DO_NOT_RETRY",
        });
    }
    if v2_state == "FAILED" {
        v["stateMessages"] = json!([{
            "severity": "ERROR",
            "type": "DeploymentFailure",
            "message": "Function failed on loading user code.",
        }]);
    }
    v
}

/// `options.requestedPolicyVersion`: 0, 1 or 3 (Google refuses others).
fn policy_version(query: &HashMap<String, String>) -> Result<u8, ApiError> {
    match query
        .get("options.requestedPolicyVersion")
        .map(String::as_str)
    {
        None | Some("0") | Some("1") => Ok(1),
        Some("3") => Ok(3),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid requested policy version {other}; valid values are 0, 1 and 3."
        ))),
    }
}

/// `GET .../NAME` and `GET .../NAME:getIamPolicy`.
async fn get_or_policy(
    api: Api,
    AxState(state): AxState<Arc<State>>,
    Path(path): Path<Vec<String>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    _body: Body,
) -> Response {
    let (project, location, name) = path3(&path);
    reply(policy_version(&query).and_then(|version| {
        get_or_policy_inner(&state, api, project, location, name, &headers, version)
    }))
}

fn get_or_policy_inner(
    state: &State,
    api: Api,
    project: &str,
    region: &str,
    name: &str,
    headers: &HeaderMap,
    version: u8,
) -> Result<Value, ApiError> {
    let caller = caller(state, headers)?;
    let (function, verb) = match name.split_once(':') {
        Some((f, v)) => (f, Some(v)),
        None => (name, None),
    };
    let resource = format!(
        "projects/{project}/locations/{region}/{}/{function}",
        api.collection()
    );
    let inner = state.lock();
    let (permission, role) = match (api, verb) {
        (Api::Run, None) => return Err(ApiError::not_found("Not Found")),
        (Api::Run, Some("getIamPolicy")) => ("run.services.getIamPolicy", ReadRole::RunViewer),
        (_, None) => ("cloudfunctions.functions.get", ReadRole::Viewer),
        (_, Some("getIamPolicy")) => (
            "cloudfunctions.functions.getIamPolicy",
            ReadRole::PolicyViewer,
        ),
        (_, Some(_)) => return Err(ApiError::not_found("Not Found")),
    };
    if !has_role(&inner, &caller, project, Some(function), role) {
        return Err(ApiError::denied_on(permission, &resource));
    }
    let f = find(state, &inner, api, project, region, function)
        .ok_or_else(|| ApiError::no_function(api, project, region, function))?;
    Ok(match (api, verb) {
        (Api::V1, None) => describe(state, function, f),
        (_, None) => describe_v2(state, function, f),
        // A 2nd gen function's invokers are on its service, not the function.
        (Api::V2, _) if f.run_url.is_some() => json!({"version": 1, "etag": "ACAB"}),
        _ => policy(f, version, api.invoker_role()),
    })
}

/// An invoker as an IAM member (`serviceAccount:...`, `user:...`, `allUsers`).
fn member(i: &str) -> String {
    if PUBLIC.contains(&i) {
        i.to_owned()
    } else if i.ends_with(".gserviceaccount.com") {
        format!("serviceAccount:{i}")
    } else {
        format!("user:{i}")
    }
}

/// The function's IAM policy: its invoker list as `role`, and its
/// conditional invoker bindings as `version` asks: with their conditions
/// (version 3), or, as Google answers a version-1 request for a policy with
/// conditions, under the role `ROLE_withcond_<hash>` without them.
fn policy(f: &Function, version: u8, role: &str) -> Value {
    let members: BTreeSet<String> = f.invokers.iter().map(|i| member(i)).collect();
    if members.is_empty() && f.conditional_invokers.is_empty() {
        // Google's empty policy.
        return json!({"version": 1, "etag": "ACAB"});
    }
    let mut bindings = Vec::new();
    if !members.is_empty() {
        bindings.push(json!({"role": role, "members": members}));
    }
    for (who, title, expression) in &f.conditional_invokers {
        let hash = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("{title}\n{expression}").as_bytes(),
        );
        bindings.push(if version >= 3 {
            json!({"role": role, "members": [member(who)],
                   "condition": {"title": title, "expression": expression}})
        } else {
            json!({"role": format!("{role}_withcond_{}", hex::encode(&hash.as_ref()[..10])),
                   "members": [member(who)]})
        });
    }
    let etag_source = format!(
        "{}:{}",
        f.version,
        serde_json::to_string(&bindings).unwrap_or_default()
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, etag_source.as_bytes());
    let etag = base64::engine::general_purpose::STANDARD.encode(&digest.as_ref()[..8]);
    let version = if version >= 3 && !f.conditional_invokers.is_empty() {
        3
    } else {
        1
    };
    json!({"version": version, "etag": etag, "bindings": bindings})
}

#[derive(Deserialize)]
struct TestRequest {
    #[serde(default)]
    permissions: Vec<String>,
}

/// `POST .../NAME:testIamPermissions`.
async fn test_permissions(
    api: Api,
    AxState(state): AxState<Arc<State>>,
    Path(path): Path<Vec<String>>,
    _query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (project, location, name) = path3(&path);
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::invalid("Request payload size exceeds the limit.").into_response();
    };
    reply(test_permissions_inner(
        &state, api, project, location, name, &headers, &body,
    ))
}

fn known_permission(api: Api, p: &str) -> bool {
    match api {
        Api::Run => p
            .strip_prefix("run.")
            .is_some_and(|verb| KNOWN_RUN_PERMISSIONS.contains(&verb)),
        Api::V1 | Api::V2 => p
            .strip_prefix("cloudfunctions.functions.")
            .is_some_and(|verb| KNOWN_PERMISSIONS.contains(&verb)),
    }
}

fn test_permissions_inner(
    state: &State,
    api: Api,
    project: &str,
    region: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let caller = caller(state, headers)?;
    let Some(function) = name.strip_suffix(":testIamPermissions") else {
        return Err(ApiError::not_found("Not Found"));
    };
    let req: TestRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("Invalid JSON payload received. {e}")))?;
    if let Some(p) = req.permissions.iter().find(|p| !known_permission(api, p)) {
        return Err(ApiError::invalid(format!(
            "Permission {p} is not valid for this resource."
        )));
    }
    let inner = state.lock();
    let Some(f) = find(state, &inner, api, project, region, function) else {
        // The method's own description (cloudfunctions.v1 discovery document):
        // "If the function does not exist, this will return an empty set of
        // permissions, not a NOT_FOUND error." (The Run Admin API does not
        // say; the sandbox answers it the same way.)
        return Ok(json!({}));
    };
    let invoker = f
        .invokers
        .iter()
        .any(|i| PUBLIC.contains(&i.as_str()) || *i == caller);
    let holds = |permission: &str| -> bool {
        let role = |r| has_role(&inner, &caller, project, Some(function), r);
        match permission {
            "run.routes.invoke" => invoker,
            "run.services.get" | "run.services.getIamPolicy" => role(ReadRole::RunViewer),
            // A 2nd gen function is invoked through its service.
            "cloudfunctions.functions.invoke" => invoker && f.run_url.is_none(),
            "cloudfunctions.functions.get" | "cloudfunctions.functions.list" => {
                role(ReadRole::Viewer)
            }
            "cloudfunctions.functions.getIamPolicy" => role(ReadRole::PolicyViewer),
            _ => false,
        }
    };
    let granted: Vec<&String> = req.permissions.iter().filter(|p| holds(p)).collect();
    if granted.is_empty() {
        // Google omits the field when nothing is held.
        Ok(json!({}))
    } else {
        Ok(json!({ "permissions": granted }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    page_size: Option<usize>,
    page_token: Option<String>,
}

/// `GET .../locations/{region or -}/functions?pageSize&pageToken`.
async fn list(
    api: Api,
    AxState(state): AxState<Arc<State>>,
    Path(path): Path<Vec<String>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    _body: Body,
) -> Response {
    let (project, location, _) = path3(&path);
    let q = ListQuery {
        page_size: query.get("pageSize").and_then(|s| s.parse().ok()),
        page_token: query.get("pageToken").cloned(),
    };
    reply(list_inner(&state, api, project, location, q, &headers))
}

fn list_inner(
    state: &State,
    api: Api,
    project: &str,
    location: &str,
    q: ListQuery,
    headers: &HeaderMap,
) -> Result<Value, ApiError> {
    let caller = caller(state, headers)?;
    let inner = state.lock();
    if !has_role(&inner, &caller, project, None, ReadRole::Viewer) {
        return Err(ApiError::denied_on(
            "cloudfunctions.functions.list",
            &format!("projects/{project}/locations/{location}/functions"),
        ));
    }
    let offset = match q.page_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => decode_page_token(t).ok_or_else(|| ApiError::invalid("Invalid page token."))?,
    };
    let size = match q.page_size {
        None | Some(0) => DEFAULT_PAGE_SIZE,
        Some(n) => n.min(MAX_PAGE_SIZE),
    };
    let mut all: Vec<(String, Value)> = inner
        .functions
        .iter()
        .filter(|(_, f)| {
            project_of(state, f) == project
                && api.shows(f)
                && (location == "-" || f.meta.region == location)
                && !(location == "-" && inner.unreachable_regions.contains(&f.meta.region))
        })
        .map(|(name, f)| {
            let v = match api {
                Api::V1 => describe(state, name, f),
                _ => describe_v2(state, name, f),
            };
            (v["name"].as_str().unwrap_or_default().to_owned(), v)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(size)
        .map(|(_, v)| v.clone())
        .collect();
    let mut out = json!({});
    if !page.is_empty() {
        out["functions"] = Value::Array(page);
    }
    if offset + size < all.len() {
        out["nextPageToken"] = Value::String(encode_page_token(offset + size));
    }
    if location == "-" && !inner.unreachable_regions.is_empty() {
        // `ListFunctionsResponse.unreachable`: what a `-` listing left out.
        out["unreachable"] = json!(
            inner
                .unreachable_regions
                .iter()
                .map(|r| format!("projects/{project}/locations/{r}"))
                .collect::<Vec<_>>()
        );
    }
    Ok(out)
}

fn encode_page_token(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

fn decode_page_token(token: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{FunctionImpl, Sandbox};
    use super::*;

    const FN: &str = "grant-db";

    async fn setup() -> (Sandbox, String) {
        let sb = sandbox().await;
        sb.create_service_account(SA);
        sb.deploy_function(FN, FunctionImpl::Sample, &[SA]);
        let (token, _) = sb.state.mint_access_token(SA, 3600);
        (sb, token)
    }

    fn fn_url(sb: &Sandbox, name: &str) -> String {
        format!(
            "{}/v1/projects/sandbox-project/locations/us-central1/functions/{name}",
            sb.cloudfunctions_api_url()
        )
    }

    async fn get_json(url: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = client().get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }

    async fn test_iam(sb: &Sandbox, name: &str, token: &str, perms: Value) -> (u16, Value) {
        let resp = client()
            .post(format!("{}:testIamPermissions", fn_url(sb, name)))
            .bearer_auth(token)
            .json(&json!({ "permissions": perms }))
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }

    #[tokio::test]
    async fn get_describes_the_function_like_the_v1_api() {
        let (sb, token) = setup().await;
        sb.grant_viewer(FN, SA);
        let (status, v) = get_json(&fn_url(&sb, FN), Some(&token)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["name"],
            "projects/sandbox-project/locations/us-central1/functions/grant-db"
        );
        assert_eq!(v["status"], "ACTIVE");
        assert_eq!(v["timeout"], "60s");
        assert_eq!(v["runtime"], "python312");
        assert!(v.get("environment").is_none(), "not a v1 field: {v}");
        assert_eq!(v["ingressSettings"], "ALLOW_ALL");
        assert_eq!(v["httpsTrigger"]["url"], sb.function_url(FN).as_str());
        assert_eq!(v["httpsTrigger"]["securityLevel"], "SECURE_ALWAYS");
        assert_eq!(
            v["serviceAccountEmail"],
            "sandbox-project@appspot.gserviceaccount.com"
        );
        assert_eq!(v["versionId"], "1");
        assert!(v.get("buildEnvironmentVariables").is_none());

        sb.set_function_meta(
            FN,
            FunctionMeta {
                status: "OFFLINE".into(),
                timeout: Duration::from_millis(1500),
                https_trigger: false,
                ..FunctionMeta::default()
            },
        );
        let (_, v) = get_json(&fn_url(&sb, FN), Some(&token)).await;
        assert_eq!(v["status"], "OFFLINE");
        assert_eq!(v["timeout"], "1.5s");
        assert_eq!(v["versionId"], "2");
        assert!(v.get("httpsTrigger").is_none());
        assert_eq!(
            v["eventTrigger"]["eventType"],
            "google.pubsub.topic.publish"
        );
    }

    #[tokio::test]
    async fn get_needs_a_token_and_the_viewer_role_before_revealing_anything() {
        let (sb, token) = setup().await;
        let (status, v) = get_json(&fn_url(&sb, FN), None).await;
        assert_eq!(status, 401);
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
        let (status, _) = get_json(&fn_url(&sb, FN), Some("ya29.forged")).await;
        assert_eq!(status, 401);

        // No viewer role: 403 whether or not the function exists.
        let (status, v) = get_json(&fn_url(&sb, FN), Some(&token)).await;
        assert_eq!(status, 403);
        assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cloudfunctions.functions.get")
        );
        let (status, _) = get_json(&fn_url(&sb, "nope"), Some(&token)).await;
        assert_eq!(status, 403);

        // Viewer on the project: the missing one is a 404.
        sb.grant_viewer("projects/sandbox-project", SA);
        let (status, v) = get_json(&fn_url(&sb, "nope"), Some(&token)).await;
        assert_eq!(status, 404);
        assert_eq!(
            v["error"]["message"],
            "Function nope in region us-central1 in project sandbox-project does not exist"
        );
        // Wrong region: not found either.
        let url = fn_url(&sb, FN).replace("us-central1", "europe-west1");
        assert_eq!(get_json(&url, Some(&token)).await.0, 404);
        assert_eq!(get_json(&fn_url(&sb, FN), Some(&token)).await.0, 200);
    }

    #[tokio::test]
    async fn test_iam_permissions_answers_what_the_caller_holds() {
        let (sb, token) = setup().await;
        let all = json!([
            "cloudfunctions.functions.invoke",
            "cloudfunctions.functions.get",
            "cloudfunctions.functions.getIamPolicy"
        ]);
        let (status, v) = test_iam(&sb, FN, &token, all.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(
            v,
            json!({"permissions": ["cloudfunctions.functions.invoke"]})
        );

        sb.set_invokers(FN, &[]);
        let (_, v) = test_iam(&sb, FN, &token, all.clone()).await;
        assert_eq!(v, json!({}), "the field is omitted when nothing is held");

        sb.set_invokers(FN, &["allAuthenticatedUsers"]);
        sb.grant_viewer(FN, SA);
        sb.grant_iam_policy_viewer("projects/sandbox-project", SA);
        let (_, v) = test_iam(&sb, FN, &token, all.clone()).await;
        assert_eq!(v["permissions"].as_array().unwrap().len(), 3);
        sb.revoke_read_grants(FN, SA);
        let (_, v) = test_iam(&sb, FN, &token, all).await;
        assert_eq!(
            v["permissions"],
            json!([
                "cloudfunctions.functions.invoke",
                "cloudfunctions.functions.getIamPolicy"
            ]),
            "the project-level grant stays"
        );

        let (status, v) = test_iam(&sb, FN, &token, json!(["storage.buckets.get"])).await;
        assert_eq!(status, 400);
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
        // Google: "If the function does not exist, this will return an empty
        // set of permissions, not a NOT_FOUND error."
        let (status, v) = test_iam(
            &sb,
            "nope",
            &token,
            json!(["cloudfunctions.functions.invoke"]),
        )
        .await;
        assert_eq!((status, v), (200, json!({})));
    }

    #[tokio::test]
    async fn get_iam_policy_lists_invokers_as_members_and_needs_its_own_permission() {
        let (sb, token) = setup().await;
        let url = format!("{}:getIamPolicy", fn_url(&sb, FN));
        sb.grant_viewer(FN, SA);
        let (status, v) = get_json(&url, Some(&token)).await;
        assert_eq!(status, 403, "the viewer role does not include getIamPolicy");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cloudfunctions.functions.getIamPolicy")
        );
        sb.grant_iam_policy_viewer(FN, SA);
        sb.set_invokers(FN, &[SA, "allUsers", "alice@example.com"]);
        let (status, v) = get_json(&url, Some(&token)).await;
        assert_eq!(status, 200);
        assert_eq!(v["version"], 1);
        assert!(!v["etag"].as_str().unwrap().is_empty());
        assert_eq!(
            v["bindings"],
            json!([{"role": "roles/cloudfunctions.invoker", "members": [
                "allUsers",
                format!("serviceAccount:{SA}"),
                "user:alice@example.com",
            ]}])
        );
        sb.set_invokers(FN, &[]);
        let (_, v) = get_json(&url, Some(&token)).await;
        assert_eq!(v, json!({"version": 1, "etag": "ACAB"}));
    }

    /// A conditional binding as Google shows it: with its condition only in a
    /// version-3 policy; a version-1 answer renames the role `_withcond_<hash>`.
    #[tokio::test]
    async fn conditional_bindings_follow_the_requested_policy_version() {
        let (sb, token) = setup().await;
        sb.grant_iam_policy_viewer(FN, SA);
        sb.add_conditional_invoker(
            FN,
            "allUsers",
            "t",
            "request.time < timestamp('2027-01-01T00:00:00Z')",
        );
        let url = format!("{}:getIamPolicy", fn_url(&sb, FN));
        let (_, v1) = get_json(&url, Some(&token)).await;
        assert_eq!(v1["version"], 1);
        let conditional = &v1["bindings"][1];
        assert!(
            conditional["role"]
                .as_str()
                .unwrap()
                .starts_with("roles/cloudfunctions.invoker_withcond_"),
            "{v1}"
        );
        assert!(conditional.get("condition").is_none());
        let (_, v3) = get_json(
            &format!("{url}?options.requestedPolicyVersion=3"),
            Some(&token),
        )
        .await;
        assert_eq!(v3["version"], 3);
        assert_eq!(v3["bindings"][1]["role"], "roles/cloudfunctions.invoker");
        assert_eq!(v3["bindings"][1]["condition"]["title"], "t");
        let (status, _) = get_json(
            &format!("{url}?options.requestedPolicyVersion=2"),
            Some(&token),
        )
        .await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn list_pages_and_filters_by_region() {
        let (sb, token) = setup().await;
        for i in 0..4 {
            sb.deploy_function(&format!("f{i}"), FunctionImpl::Sample, &[]);
        }
        sb.set_function_meta(
            "f3",
            FunctionMeta {
                region: "europe-west1".into(),
                ..FunctionMeta::default()
            },
        );
        sb.set_function_meta(
            "f2",
            FunctionMeta {
                project: Some("other-project".into()),
                ..FunctionMeta::default()
            },
        );
        let base = format!(
            "{}/v1/projects/sandbox-project/locations",
            sb.cloudfunctions_api_url()
        );
        // Function-level viewer does not allow listing the project.
        sb.grant_viewer(FN, SA);
        let (status, v) = get_json(&format!("{base}/-/functions"), Some(&token)).await;
        assert_eq!(status, 403, "{v}");
        sb.grant_viewer("projects/sandbox-project", SA);

        let (status, v) = get_json(&format!("{base}/-/functions?pageSize=2"), Some(&token)).await;
        assert_eq!(status, 200, "{v}");
        let names = |v: &Value| -> Vec<String> {
            v["functions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|f| {
                            f["name"]
                                .as_str()
                                .unwrap()
                                .rsplit('/')
                                .next()
                                .unwrap()
                                .to_owned()
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        // Sorted by resource name: europe-west1 before us-central1.
        assert_eq!(names(&v), ["f3", "f0"]);
        let token2 = v["nextPageToken"].as_str().unwrap().to_owned();
        let (_, v) = get_json(
            &format!("{base}/-/functions?pageSize=2&pageToken={token2}"),
            Some(&token),
        )
        .await;
        assert_eq!(names(&v), ["f1", "grant-db"]);
        assert!(v.get("nextPageToken").is_none());

        let (_, v) = get_json(&format!("{base}/us-central1/functions"), Some(&token)).await;
        assert_eq!(names(&v), ["f0", "f1", "grant-db"]);
        let (_, v) = get_json(&format!("{base}/asia-east1/functions"), Some(&token)).await;
        assert_eq!(v, json!({}));
        let (status, _) = get_json(
            &format!("{base}/-/functions?pageToken=garbage"),
            Some(&token),
        )
        .await;
        assert_eq!(status, 400);
    }

    fn v2_url(sb: &Sandbox, collection: &str, name: &str) -> String {
        format!(
            "{}/v2/projects/sandbox-project/locations/us-central1/{collection}/{name}",
            sb.cloudfunctions_api_url()
        )
    }

    /// v1 shows 1st gen functions only; v2 shows both, with `environment`,
    /// `state` and the Cloud Run service of a 2nd gen function.
    #[tokio::test]
    async fn v2_describes_both_generations_and_v1_hides_the_second() {
        let (sb, token) = setup().await;
        let run = sb
            .deploy_gen2_function("grant-crm", FunctionImpl::Sample, &[SA])
            .await
            .unwrap();
        sb.grant_viewer("projects/sandbox-project", SA);
        let (status, v) = get_json(&v2_url(&sb, "functions", "grant-crm"), Some(&token)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["environment"], "GEN_2");
        assert_eq!(v["state"], "ACTIVE");
        assert_eq!(v["url"], sb.function_url("grant-crm").as_str());
        assert_eq!(v["serviceConfig"]["uri"], run.as_str());
        assert_eq!(
            v["serviceConfig"]["service"],
            "projects/sandbox-project/locations/us-central1/services/grant-crm"
        );
        assert_eq!(v["serviceConfig"]["timeoutSeconds"], 60);
        assert_eq!(v["buildConfig"]["runtime"], "python312");

        let (_, v) = get_json(&v2_url(&sb, "functions", FN), Some(&token)).await;
        assert_eq!(v["environment"], "GEN_1");
        assert_eq!(v["serviceConfig"]["uri"], sb.function_url(FN).as_str());
        assert!(v["serviceConfig"].get("service").is_none());

        // v1 does not know the 2nd gen one.
        let (status, _) = get_json(&fn_url(&sb, "grant-crm"), Some(&token)).await;
        assert_eq!(status, 404);
        let list = |version: &str| {
            format!(
                "{}/{version}/projects/sandbox-project/locations/-/functions",
                sb.cloudfunctions_api_url()
            )
        };
        let (_, v1) = get_json(&list("v1"), Some(&token)).await;
        assert_eq!(v1["functions"].as_array().unwrap().len(), 1, "{v1}");
        let (_, v2) = get_json(&list("v2"), Some(&token)).await;
        assert_eq!(v2["functions"].as_array().unwrap().len(), 2, "{v2}");

        sb.set_function_meta(
            "grant-crm",
            FunctionMeta {
                status: "OFFLINE".into(),
                ..FunctionMeta::default()
            },
        );
        let (_, v) = get_json(&v2_url(&sb, "functions", "grant-crm"), Some(&token)).await;
        assert_eq!(v["state"], "FAILED");
        assert_eq!(v["stateMessages"][0]["severity"], "ERROR");
    }

    /// A 2nd gen function's invokers are `roles/run.invoker` on its service,
    /// read and tested through the Run Admin API.
    #[tokio::test]
    async fn the_run_admin_api_answers_for_a_second_gen_functions_service() {
        let (sb, token) = setup().await;
        sb.deploy_gen2_function("grant-crm", FunctionImpl::Sample, &[SA, "allUsers"])
            .await
            .unwrap();
        let service = v2_url(&sb, "services", "grant-crm");
        let test = |name: &str, perms: Value| {
            let url = format!("{}:testIamPermissions", v2_url(&sb, "services", name));
            let token = token.clone();
            async move {
                let resp = client()
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({ "permissions": perms }))
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
            }
        };
        let (status, v) = test(
            "grant-crm",
            json!(["run.routes.invoke", "run.services.getIamPolicy"]),
        )
        .await;
        assert_eq!(
            (status, v),
            (200, json!({"permissions": ["run.routes.invoke"]}))
        );
        let (status, _) = test("grant-crm", json!(["cloudfunctions.functions.invoke"])).await;
        assert_eq!(status, 400, "not a Cloud Run permission");
        // A 1st gen function has no service.
        assert_eq!(
            test(FN, json!(["run.routes.invoke"])).await,
            (200, json!({}))
        );

        let policy = format!("{service}:getIamPolicy");
        let (status, v) = get_json(&policy, Some(&token)).await;
        assert_eq!(status, 403);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("run.services.getIamPolicy")
        );
        sb.grant_run_viewer("grant-crm", SA);
        let (status, v) = get_json(&policy, Some(&token)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["bindings"],
            json!([{"role": "roles/run.invoker", "members": ["allUsers", format!("serviceAccount:{SA}")]}])
        );
        // The function's own v2 policy holds no invokers.
        sb.grant_iam_policy_viewer("grant-crm", SA);
        let (_, v) = get_json(
            &format!("{}:getIamPolicy", v2_url(&sb, "functions", "grant-crm")),
            Some(&token),
        )
        .await;
        assert!(v.get("bindings").is_none(), "{v}");
    }

    #[test]
    fn durations_are_written_like_protobuf_json() {
        assert_eq!(google_duration(Duration::from_secs(60)), "60s");
        assert_eq!(google_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(decode_page_token(&encode_page_token(42)), Some(42));
    }
}

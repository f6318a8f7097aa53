//! The Cloud Functions API v1 (`cloudfunctions.googleapis.com`) for the
//! functions deployed on the sandbox front end: `get`, `list` (pages, `-` for
//! every region), `testIamPermissions` and `getIamPolicy`, with each function's
//! metadata ([`FunctionMeta`]: project, region, status, timeout, ingress, ...)
//! and its invoker list as the IAM policy.
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
/// `GEN_1`, an HTTPS trigger, the project's App Engine default service account.
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
    /// `environment`: `GEN_1` or `GEN_2`.
    pub generation: String,
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
            generation: "GEN_1".to_owned(),
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
}

impl Sandbox {
    /// `http://127.0.0.1:P`, the Cloud Functions API (like `https://cloudfunctions.googleapis.com`).
    pub fn cloudfunctions_api_url(&self) -> String {
        format!("http://{}", self.state.urls.functions_api)
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

    /// Remove both read grants of `member_email` on a function or project.
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

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route(
            "/v1/projects/{project}/locations/{location}/functions",
            get(list),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/functions/{name}",
            get(get_or_policy).post(test_permissions),
        )
        .fallback(|| async { ApiError::not_found("Not Found").into_response() })
        .with_state(state)
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
    fn no_function(project: &str, region: &str, name: &str) -> Self {
        Self::not_found(format!(
            "Function {name} in region {region} in project {project} does not exist"
        ))
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

/// The deployed function `name` if it lives in `project`/`region`.
fn find<'a>(
    state: &State,
    inner: &'a Inner,
    project: &str,
    region: &str,
    name: &str,
) -> Option<&'a Function> {
    inner
        .functions
        .get(name)
        .filter(|f| project_of(state, f) == project && f.meta.region == region)
}

fn google_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

/// The v1 `CloudFunction` JSON for a deployed function.
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
        "serviceAccountEmail": m.service_account.clone().unwrap_or_else(|| format!("{project}@appspot.gserviceaccount.com")),
        "updateTime": State::rfc3339(f.updated_at),
        "versionId": f.version.to_string(),
        "ingressSettings": m.ingress,
        "environment": m.generation,
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

/// `GET .../functions/NAME` and `GET .../functions/NAME:getIamPolicy`.
async fn get_or_policy(
    AxState(state): AxState<Arc<State>>,
    Path((project, location, name)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // `options.requestedPolicyVersion`: 0, 1 or 3 (Google refuses others).
    let version = match query
        .get("options.requestedPolicyVersion")
        .map(String::as_str)
    {
        None | Some("0") | Some("1") => 1,
        Some("3") => 3,
        Some(other) => {
            return reply(Err(ApiError::invalid(format!(
                "Invalid requested policy version {other}; valid values are 0, 1 and 3."
            ))));
        }
    };
    reply(get_or_policy_inner(
        &state, &project, &location, &name, &headers, version,
    ))
}

fn get_or_policy_inner(
    state: &State,
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
    let resource = format!("projects/{project}/locations/{region}/functions/{function}");
    let inner = state.lock();
    match verb {
        None => {
            if !has_role(&inner, &caller, project, Some(function), ReadRole::Viewer) {
                return Err(ApiError::denied_on(
                    "cloudfunctions.functions.get",
                    &resource,
                ));
            }
            let f = find(state, &inner, project, region, function)
                .ok_or_else(|| ApiError::no_function(project, region, function))?;
            Ok(describe(state, function, f))
        }
        Some("getIamPolicy") => {
            if !has_role(
                &inner,
                &caller,
                project,
                Some(function),
                ReadRole::PolicyViewer,
            ) {
                return Err(ApiError::denied_on(
                    "cloudfunctions.functions.getIamPolicy",
                    &resource,
                ));
            }
            let f = find(state, &inner, project, region, function)
                .ok_or_else(|| ApiError::no_function(project, region, function))?;
            Ok(policy(f, version))
        }
        Some(_) => Err(ApiError::not_found("Not Found")),
    }
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

/// The function's IAM policy: its invoker list as `roles/cloudfunctions.invoker`,
/// and its conditional invoker bindings as `version` asks: with their
/// conditions (version 3), or, as Google answers a version-1 request for a
/// policy with conditions, under the role `ROLE_withcond_<hash>` without them.
fn policy(f: &Function, version: u8) -> Value {
    let members: BTreeSet<String> = f.invokers.iter().map(|i| member(i)).collect();
    if members.is_empty() && f.conditional_invokers.is_empty() {
        // Google's empty policy.
        return json!({"version": 1, "etag": "ACAB"});
    }
    let mut bindings = Vec::new();
    if !members.is_empty() {
        bindings.push(json!({"role": INVOKER_ROLE, "members": members}));
    }
    for (who, title, expression) in &f.conditional_invokers {
        let hash = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("{title}\n{expression}").as_bytes(),
        );
        bindings.push(if version >= 3 {
            json!({"role": INVOKER_ROLE, "members": [member(who)],
                   "condition": {"title": title, "expression": expression}})
        } else {
            json!({"role": format!("{INVOKER_ROLE}_withcond_{}", hex::encode(&hash.as_ref()[..10])),
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

/// `POST .../functions/NAME:testIamPermissions`.
async fn test_permissions(
    AxState(state): AxState<Arc<State>>,
    Path((project, location, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::invalid("Request payload size exceeds the limit.").into_response();
    };
    reply(test_permissions_inner(
        &state, &project, &location, &name, &headers, &body,
    ))
}

fn test_permissions_inner(
    state: &State,
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
    for p in &req.permissions {
        let known = p
            .strip_prefix("cloudfunctions.functions.")
            .is_some_and(|verb| KNOWN_PERMISSIONS.contains(&verb));
        if !known {
            return Err(ApiError::invalid(format!(
                "Permission {p} is not valid for this resource."
            )));
        }
    }
    let inner = state.lock();
    let Some(f) = find(state, &inner, project, region, function) else {
        // The method's own description (cloudfunctions.v1 discovery document):
        // "If the function does not exist, this will return an empty set of
        // permissions, not a NOT_FOUND error."
        return Ok(json!({}));
    };
    let holds = |permission: &str| -> bool {
        match permission.trim_start_matches("cloudfunctions.functions.") {
            "invoke" => f
                .invokers
                .iter()
                .any(|i| PUBLIC.contains(&i.as_str()) || *i == caller),
            "get" | "list" => has_role(&inner, &caller, project, Some(function), ReadRole::Viewer),
            "getIamPolicy" => has_role(
                &inner,
                &caller,
                project,
                Some(function),
                ReadRole::PolicyViewer,
            ),
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
    AxState(state): AxState<Arc<State>>,
    Path((project, location)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    reply(list_inner(&state, &project, &location, q, &headers))
}

fn list_inner(
    state: &State,
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
                && (location == "-" || f.meta.region == location)
                && !(location == "-" && inner.unreachable_regions.contains(&f.meta.region))
        })
        .map(|(name, f)| {
            let v = describe(state, name, f);
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
        assert_eq!(v["environment"], "GEN_1");
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
                generation: "GEN_2".into(),
                https_trigger: false,
                ..FunctionMeta::default()
            },
        );
        let (_, v) = get_json(&fn_url(&sb, FN), Some(&token)).await;
        assert_eq!(v["status"], "OFFLINE");
        assert_eq!(v["timeout"], "1.5s");
        assert_eq!(v["environment"], "GEN_2");
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

    #[test]
    fn durations_are_written_like_protobuf_json() {
        assert_eq!(google_duration(Duration::from_secs(60)), "60s");
        assert_eq!(google_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(decode_page_token(&encode_page_token(42)), Some(42));
    }
}

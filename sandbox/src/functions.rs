//! The Cloud Functions front end (`REGION-PROJECT.cloudfunctions.net`): checks
//! the caller's Google ID token and invoker permission like Google, applies the
//! per-function fault knobs, then runs a built-in sample function (speaking the
//! function contract, docs/protocol.md §1) or proxies to a local upstream server.
//! It records every call that passed auth, and serves a small admin API under
//! `/_sandbox/` for people injecting faults with curl.
//!
//! It must not let an unauthenticated or non-invoker call reach a function, and
//! must never hold the state lock across an `.await`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::{State, keys};

/// Largest request body the front end accepts (Google: 10 MB for HTTP functions).
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
const ALL_USERS: &str = "allUsers";
const ALL_AUTHENTICATED_USERS: &str = "allAuthenticatedUsers";

/// What runs behind a deployed function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionImpl {
    /// A built-in function speaking the function contract.
    Sample,
    /// Forward every call to this upstream server (e.g. a local functions-framework).
    Proxy(Url),
}

/// Fault knobs, applied after auth and before the function runs. Counts go
/// down by one per call; the first non-zero knob in the order hang, throttle,
/// fail, respond decides the call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Delay before every answer (admin JSON: `"250ms"`).
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// `(count, status)`: the next `count` calls answer `status` with "Service Unavailable".
    pub fail_next: (u32, u16),
    /// `(count, retry_after_secs)`: the next `count` calls answer 429 with `Retry-After`.
    pub throttle_next: (u32, u64),
    /// The next `count` calls never answer (until the client gives up).
    pub hang_next: u32,
    /// `(count, status, body)`: the next `count` calls answer exactly this.
    pub respond_next: (u32, u16, String),
}

/// One call that passed the front end's auth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invocation {
    pub function: String,
    pub method: String,
    /// `HTTP/1.1` or `HTTP/2.0`, as the front end received the call.
    pub http_version: String,
    /// The path below the function (`/` for the function itself), plus any query.
    pub path: String,
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    /// The caller's service account (from the token's `email`, else its `sub`).
    pub caller_email: Option<String>,
    /// The request body: parsed JSON, or the raw text as a JSON string.
    pub body: Value,
    /// The status answered; 0 when the call was made to hang.
    pub status: u16,
    /// Which fault knob answered, if any (`latency` is not counted).
    pub fault: Option<String>,
    /// A sample function answered from its `Idempotency-Key` memory.
    pub duplicate: bool,
    /// When the front end had the call's headers, before it checked the
    /// caller's token.
    pub arrived_at: std::time::SystemTime,
    /// When the front end let the call through (after auth) and had read
    /// its body.
    pub received_at: std::time::SystemTime,
    /// From then until the answer was ready: what the function (and the
    /// front end's hop to it) took.
    pub duration: Duration,
}

/// A deployed function.
pub(crate) struct Function {
    pub(crate) imp: FunctionImpl,
    pub(crate) invokers: Vec<String>,
    /// IAM-conditional invoker bindings (member, title, expression): shown in
    /// the IAM policy only; they grant no invoke in the sandbox.
    pub(crate) conditional_invokers: Vec<(String, String, String)>,
    pub(crate) faults: Faults,
    pub(crate) invocations: Vec<Invocation>,
    /// Sample functions: first answer per `Idempotency-Key`.
    seen: HashMap<String, (u16, Value)>,
    pub(crate) duplicates: u64,
    /// What the Cloud Functions API reports about it.
    pub(crate) meta: super::FunctionMeta,
    /// `versionId`, bumped by every metadata change.
    pub(crate) version: u64,
    /// `updateTime` (Unix seconds, sandbox clock).
    pub(crate) updated_at: i64,
    /// A 2nd gen function: the URL of its Cloud Run service (`*.run.app`),
    /// the audience its ID tokens must carry at either of its URLs.
    pub(crate) run_url: Option<String>,
}

impl Function {
    pub(crate) fn new(imp: FunctionImpl, invokers: Vec<String>) -> Self {
        Self {
            imp,
            invokers,
            conditional_invokers: Vec::new(),
            faults: Faults::default(),
            invocations: Vec::new(),
            seen: HashMap::new(),
            duplicates: 0,
            meta: super::FunctionMeta::default(),
            version: 1,
            updated_at: 0,
            run_url: None,
        }
    }
}

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/_sandbox/functions", get(admin_list))
        .route(
            "/_sandbox/functions/{name}/faults",
            post(admin_set_faults).get(admin_get_faults),
        )
        .route(
            "/_sandbox/functions/{name}/invocations",
            get(admin_invocations),
        )
        .route(
            "/_sandbox/functions/{name}/invokers",
            post(admin_set_invokers),
        )
        .fallback(front_end)
        .with_state(state)
}

fn google_html(status: StatusCode, title: &str, h1: &str, h2: &str) -> Response {
    let body = format!(
        "<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n<title>{} {title}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n<h1>Error: {h1}</h1>\n<h2>{h2}</h2>\n<h2></h2>\n</body></html>",
        status.as_u16()
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
        body,
    )
        .into_response()
}

fn unauthorized(path: &str) -> Response {
    let mut resp = google_html(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Unauthorized",
        &format!(
            "Your client does not have permission to the requested URL <code>{}</code>.",
            html_escape(path)
        ),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer error=\"invalid_token\" error_description=\"The access token could not be verified\"",
        ),
    );
    resp
}

fn forbidden(path: &str) -> Response {
    google_html(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "Forbidden",
        &format!(
            "Your client does not have permission to get URL <code>{}</code> from this server.",
            html_escape(path)
        ),
    )
}

/// What the front end answers when the function ran past its timeout.
fn timed_out() -> Response {
    google_html(
        StatusCode::REQUEST_TIMEOUT,
        "Request Timeout",
        "Request Timeout",
        "The function did not finish within its timeout.",
    )
}

fn could_not_handle() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Error: could not handle the request\n",
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Who is calling, once the front end has let the call through.
enum Auth {
    Allowed(Option<String>),
    Denied(Response),
}

fn authenticate(
    state: &State,
    headers: &HeaderMap,
    audience: &str,
    path: &str,
    invokers: &[String],
) -> Auth {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let verified = token.map(|t| state.verify_id_token(t, audience));
    let caller = match &verified {
        Some(Ok(claims)) => claims
            .email
            .clone()
            .or_else(|| state.lock().email_by_unique_id(&claims.sub)),
        _ => None,
    };
    if invokers.iter().any(|i| i == ALL_USERS) {
        return Auth::Allowed(caller);
    }
    match verified {
        // No token at all: the 1st gen front end answers 403, not 401.
        None => Auth::Denied(forbidden(path)),
        Some(Err(reason)) => {
            tracing::debug!(%reason, "sandbox front end: ID token rejected");
            Auth::Denied(unauthorized(path))
        }
        Some(Ok(_)) => {
            let allowed = invokers.iter().any(|i| i == ALL_AUTHENTICATED_USERS)
                || caller.as_ref().is_some_and(|c| invokers.contains(c));
            if allowed {
                Auth::Allowed(caller)
            } else {
                Auth::Denied(forbidden(path))
            }
        }
    }
}

/// The decision the fault knobs make for one call.
enum FaultAction {
    None,
    Hang,
    Answer(Response, &'static str),
}

fn take_fault(faults: &mut Faults) -> FaultAction {
    if faults.hang_next > 0 {
        faults.hang_next -= 1;
        return FaultAction::Hang;
    }
    if faults.throttle_next.0 > 0 {
        faults.throttle_next.0 -= 1;
        let resp = (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, faults.throttle_next.1.to_string())],
            "Rate exceeded.",
        )
            .into_response();
        return FaultAction::Answer(resp, "throttle");
    }
    if faults.fail_next.0 > 0 {
        faults.fail_next.0 -= 1;
        let status =
            StatusCode::from_u16(faults.fail_next.1).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let text = status.canonical_reason().unwrap_or("Service Unavailable");
        return FaultAction::Answer((status, text.to_owned()).into_response(), "fail");
    }
    if faults.respond_next.0 > 0 {
        faults.respond_next.0 -= 1;
        let status = StatusCode::from_u16(faults.respond_next.1).unwrap_or(StatusCode::OK);
        let body = faults.respond_next.2.clone();
        let ct = if serde_json::from_str::<Value>(&body).is_ok() {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        return FaultAction::Answer(
            (status, [(header::CONTENT_TYPE, ct)], body).into_response(),
            "respond",
        );
    }
    FaultAction::None
}

fn header_string(
    headers: &HeaderMap,
    name: impl axum::http::header::AsHeaderName,
) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The Cloud Functions front end (`REGION-PROJECT.cloudfunctions.net/NAME`):
/// the first path segment names the function.
async fn front_end(
    AxState(state): AxState<Arc<State>>,
    request: axum::extract::Request,
) -> Response {
    serve_front_end(&state, "http", request).await
}

/// The same front end behind TLS (`Sandbox::functions_tls`), where HTTP/2
/// is negotiated as Google's front end does.
pub(crate) fn tls_router(state: Arc<State>) -> Router {
    Router::new()
        .fallback(
            |AxState(state): AxState<Arc<State>>, request: axum::extract::Request| async move {
                serve_front_end(&state, "https", request).await
            },
        )
        .with_state(state)
}

/// A call at `scheme://HOST/NAME...`: the URL it came in on is the
/// audience a 1st gen function expects (HTTP/2 names the host in
/// `:authority`, HTTP/1.1 in `Host`).
async fn serve_front_end(
    state: &Arc<State>,
    scheme: &str,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let (name, rest) = split_function_path(&path);
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| header_string(&parts.headers, header::HOST))
        .unwrap_or_else(|| state.urls.functions.to_string());
    let own_url = Some(format!("{scheme}://{host}/{name}"));
    let call = Call {
        name,
        path,
        rest,
        own_url,
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
    };
    serve_call(state, call, body).await
}

/// A 2nd gen function's Cloud Run service (`https://SERVICE-HASH.a.run.app`):
/// one listener per service, every path goes to it.
pub(crate) fn run_router(state: Arc<State>, name: String) -> Router {
    Router::new()
        .fallback(
            |AxState((state, name)): AxState<(Arc<State>, String)>,
             request: axum::extract::Request| async move {
                let (parts, body) = request.into_parts();
                let path = parts.uri.path().to_owned();
                let call = Call {
                    name,
                    rest: path.clone(),
                    path,
                    own_url: None,
                    method: parts.method,
                    uri: parts.uri,
                    version: parts.version,
                    headers: parts.headers,
                };
                serve_call(&state, call, body).await
            },
        )
        .with_state((state, name))
}

/// One call reaching a front end.
struct Call {
    name: String,
    /// The request path, as error pages quote it.
    path: String,
    /// The path below the function.
    rest: String,
    /// The cloudfunctions.net URL the call came in on; `None`: its run.app URL.
    own_url: Option<String>,
    method: Method,
    uri: Uri,
    version: axum::http::Version,
    headers: HeaderMap,
}

/// Find the function, authenticate the caller as Google does (the audience
/// of a 1st gen function is its own URL; of a 2nd gen function, at either
/// URL, its Cloud Run service URL), record the invocation, then answer with
/// a fault, the sample function or the proxied upstream.
async fn serve_call(state: &Arc<State>, call: Call, body: Body) -> Response {
    let arrived_at = std::time::SystemTime::now();
    let Call {
        name,
        path,
        rest,
        own_url,
        method,
        uri,
        version,
        headers,
    } = call;
    let found = {
        let inner = state.lock();
        inner.functions.get(&name).map(|f| {
            (
                f.invokers.clone(),
                f.faults.latency,
                f.run_url.clone(),
                f.meta.timeout,
            )
        })
    };
    let audience = match (&found, own_url) {
        (Some((_, _, Some(run), _)), _) => run.clone(),
        (Some((_, _, None, _)), Some(own)) => own,
        // A 1st gen URL with no function behind it gets the same 403 as a
        // caller without the invoker role: existence is not revealed.
        _ => return forbidden(&path),
    };
    let Some((invokers, latency, _, timeout)) = found else {
        return forbidden(&path);
    };
    let caller = match authenticate(state, &headers, &audience, &path, &invokers) {
        Auth::Allowed(c) => c,
        Auth::Denied(resp) => return resp,
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return google_html(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request Entity Too Large",
            "Request Entity Too Large",
            "Your client issued a request that was too large.",
        );
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    let mut invocation = Invocation {
        function: name.clone(),
        method: method.to_string(),
        http_version: format!("{version:?}"),
        path: path_and_query.clone(),
        idempotency_key: header_string(&headers, "idempotency-key"),
        traceparent: header_string(&headers, "traceparent"),
        user_agent: header_string(&headers, header::USER_AGENT),
        content_type: header_string(&headers, header::CONTENT_TYPE),
        caller_email: caller,
        body: serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        status: 0,
        fault: None,
        duplicate: false,
        arrived_at,
        received_at: std::time::SystemTime::now(),
        duration: Duration::ZERO,
    };
    let started = std::time::Instant::now();
    let request = Request {
        method: &method,
        path_and_query: &path_and_query,
        headers: &headers,
        bytes,
    };
    // Google stops a function that runs past its timeout and answers 408.
    let run = async {
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        execute(state, &name, request, &mut invocation).await
    };
    let outcome = tokio::time::timeout(timeout, run).await;
    let mut resp = match outcome {
        Ok(Some(Ok(resp))) => resp,
        // Recorded already (a hang that ended with the sandbox).
        Ok(Some(Err(resp))) => return resp,
        Ok(None) => return forbidden(&path),
        Err(_) => {
            let resp = timed_out();
            invocation.status = resp.status().as_u16();
            if invocation.fault.is_none() {
                invocation.fault = Some("timeout".into());
            }
            // A hang recorded itself already; a slow call is recorded now.
            if invocation.fault.as_deref() != Some("hang") {
                record(state, invocation);
            }
            return resp;
        }
    };
    invocation.status = resp.status().as_u16();
    invocation.duration = started.elapsed();
    record(state, invocation);
    if let Ok(v) = HeaderValue::from_str(&keys::random_token(12)) {
        resp.headers_mut().insert("function-execution-id", v);
    }
    resp
}

/// `/NAME/rest` → (`NAME`, `/rest`).
fn split_function_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((n, r)) => (n.to_owned(), format!("/{r}")),
        None => (trimmed.to_owned(), "/".to_owned()),
    }
}

/// What the front end passes on to the function.
struct Request<'a> {
    method: &'a Method,
    path_and_query: &'a str,
    headers: &'a HeaderMap,
    bytes: bytes::Bytes,
}

/// Runs the function (or its injected fault); `None` when it was deleted
/// meanwhile. A hanging fault records the invocation itself and returns
/// (as `Err`) only when the sandbox shuts down.
async fn execute(
    state: &Arc<State>,
    name: &str,
    request: Request<'_>,
    invocation: &mut Invocation,
) -> Option<Result<Response, Response>> {
    let (action, imp) = {
        let mut inner = state.lock();
        let f = inner.functions.get_mut(name)?;
        (take_fault(&mut f.faults), f.imp.clone())
    };
    match action {
        FaultAction::Hang => {
            invocation.fault = Some("hang".into());
            record(state, invocation.clone());
            // Never answer: wait until the client drops the connection (which
            // drops this future) or the sandbox shuts down.
            state.cancel.cancelled().await;
            Some(Err(could_not_handle()))
        }
        FaultAction::Answer(resp, knob) => {
            invocation.fault = Some(knob.into());
            Some(Ok(resp))
        }
        FaultAction::None => match imp {
            FunctionImpl::Sample => {
                let (status, value, duplicate) = {
                    let mut inner = state.lock();
                    let f = inner.functions.get_mut(name)?;
                    sample(f, invocation.idempotency_key.as_deref(), &request.bytes)
                };
                invocation.duplicate = duplicate;
                Some(Ok((status, Json(value)).into_response()))
            }
            FunctionImpl::Proxy(upstream) => Some(Ok(proxy(
                state,
                &upstream,
                request.method,
                request.path_and_query,
                request.headers,
                request.bytes,
            )
            .await)),
        },
    }
}

fn record(state: &State, invocation: Invocation) {
    if let Some(f) = state.lock().functions.get_mut(&invocation.function) {
        f.invocations.push(invocation);
    }
    state.recorded.notify_waiters();
}

/// The built-in sample function. Returns (status, body, answered-from-memory).
fn sample(
    f: &mut Function,
    idempotency_key: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value, bool) {
    if let Some((status, value)) = idempotency_key.and_then(|k| f.seen.get(k)) {
        f.duplicates += 1;
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
        return (status, value.clone(), true);
    }
    let (status, value) = sample_answer(body);
    if let Some(k) = idempotency_key {
        f.seen
            .insert(k.to_owned(), (status.as_u16(), value.clone()));
    }
    (status, value, false)
}

fn sample_answer(body: &[u8]) -> (StatusCode, Value) {
    let error = |message: String| {
        (
            StatusCode::BAD_REQUEST,
            json!({"status": "error", "message": message}),
        )
    };
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(format!("invalid JSON body: {e}")),
    };
    let Some(event_type) = request.get("event_type").and_then(Value::as_str) else {
        return error("missing event_type".to_owned());
    };
    let params = request.get("params").cloned().unwrap_or(Value::Null);
    let ok = (StatusCode::OK, json!({"status": "ok"}));
    match event_type {
        "grant-access" | "revoke-access" | "get-status" | "delete-credentials" => ok,
        "list-resources" => {
            let resource_type = params.get("resource_type").cloned().unwrap_or(Value::Null);
            (
                StatusCode::OK,
                json!({
                    "resources": [
                        {"id": "orders", "name": "orders", "type": resource_type},
                        {"id": "customers", "name": "customers", "type": resource_type},
                    ],
                    "permissions": [{"id": "read", "name": "Read"}, {"id": "write", "name": "Write"}],
                }),
            )
        }
        "list-resources-tags" => (StatusCode::OK, json!({"tags": []})),
        "create-credentials" | "reset-credentials" => {
            let username = params
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or("sandbox-user");
            (
                StatusCode::OK,
                json!({"status": "ok", "credentials": {"username": username, "password": keys::random_token(24)}}),
            )
        }
        _ => error("unsupported event_type".to_owned()),
    }
}

/// Headers that belong to one hop and are not forwarded either way.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

async fn proxy(
    state: &State,
    upstream: &Url,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let base = upstream.as_str().trim_end_matches('/');
    let target = format!("{base}{path_and_query}");
    let mut forwarded = HeaderMap::new();
    for (k, v) in headers {
        if !hop_by_hop(k) {
            forwarded.append(k.clone(), v.clone());
        }
    }
    let result = state
        .http
        .request(method.clone(), &target)
        .headers(forwarded)
        .body(body)
        .send()
        .await;
    let upstream_resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, %target, "sandbox proxy: upstream unreachable");
            return could_not_handle();
        }
    };
    let status = upstream_resp.status();
    let mut out_headers = HeaderMap::new();
    for (k, v) in upstream_resp.headers() {
        if !hop_by_hop(k) {
            out_headers.append(k.clone(), v.clone());
        }
    }
    match upstream_resp.bytes().await {
        Ok(b) => {
            let mut resp = (status, b).into_response();
            resp.headers_mut().extend(out_headers);
            resp
        }
        Err(e) => {
            tracing::warn!(error = %e, %target, "sandbox proxy: upstream body failed");
            could_not_handle()
        }
    }
}

// ---- admin API (/_sandbox/) ----

async fn admin_list(AxState(state): AxState<Arc<State>>) -> Response {
    let inner = state.lock();
    let mut list: Vec<Value> = inner
        .functions
        .iter()
        .map(|(name, f)| {
            json!({
                "name": name,
                "url": format!("http://{}/{name}", state.urls.functions),
                "invokers": f.invokers,
                "proxy": match &f.imp { FunctionImpl::Proxy(u) => Some(u.to_string()), FunctionImpl::Sample => None },
                "invocations": f.invocations.len(),
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(list).into_response()
}

fn admin_not_found(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"status": "error", "message": format!("no function named {name}")})),
    )
        .into_response()
}

async fn admin_set_faults(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"status": "error", "message": format!("invalid faults JSON: {e}")})),
            )
                .into_response();
        }
    };
    match state.lock().functions.get_mut(&name) {
        Some(f) => {
            f.faults = faults;
            Json(json!({"status": "ok"})).into_response()
        }
        None => admin_not_found(&name),
    }
}

async fn admin_get_faults(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> Response {
    match state.lock().functions.get(&name) {
        Some(f) => Json(f.faults.clone()).into_response(),
        None => admin_not_found(&name),
    }
}

async fn admin_invocations(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> Response {
    match state.lock().functions.get(&name) {
        Some(f) => Json(f.invocations.clone()).into_response(),
        None => admin_not_found(&name),
    }
}

async fn admin_set_invokers(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> Response {
    let invokers: Vec<String> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"status": "error", "message": format!("expected a JSON array of members: {e}")})),
            )
                .into_response();
        }
    };
    match state.lock().functions.get_mut(&name) {
        Some(f) => {
            f.invokers = invokers;
            Json(json!({"status": "ok"})).into_response()
        }
        None => admin_not_found(&name),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{Clock, Sandbox};
    use super::*;

    const FN: &str = "grant-db";

    async fn setup() -> (Sandbox, String, String) {
        let sb = sandbox().await;
        sb.create_service_account(SA);
        let url = sb.deploy_function(FN, FunctionImpl::Sample, &[SA]);
        let token = sb.mint_id_token(SA, &url).expect("mint");
        (sb, url, token)
    }

    async fn invoke(url: &str, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut req = client()
            .post(url)
            .header("Idempotency-Key", "act-1")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("User-Agent", "grantbridge/test")
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("send")
    }

    fn grant() -> Value {
        json!({"event_type": "grant-access", "params": {"grant_id": "g-1", "username": "alice", "resource_type": "db", "resources": ["orders"], "permission": "read"}})
    }

    #[tokio::test]
    async fn invoker_gets_200_and_the_call_is_recorded() {
        let (sb, url, token) = setup().await;
        assert_eq!(url, sb.function_url(FN));
        let resp = invoke(&url, Some(&token), grant()).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("function-execution-id"));
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            json!({"status": "ok"})
        );
        let calls = sb.invocations(FN);
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(call.function, FN);
        assert_eq!(call.method, "POST");
        assert_eq!(call.idempotency_key.as_deref(), Some("act-1"));
        assert_eq!(
            call.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(call.user_agent.as_deref(), Some("grantbridge/test"));
        assert_eq!(call.content_type.as_deref(), Some("application/json"));
        assert_eq!(call.caller_email.as_deref(), Some(SA));
        assert_eq!(call.body, grant());
        assert_eq!(call.status, 200);
        assert!(!call.duplicate);
    }

    /// Behind TLS the front end negotiates HTTP/2 (ALPN) with a client that
    /// offers it, HTTP/1.1 with one that does not; the audience is the URL
    /// called there.
    #[tokio::test]
    async fn the_tls_front_end_speaks_http2_and_http1_with_its_own_audience() {
        let (sb, plain_url, plain_token) = setup().await;
        let tls = sb.functions_tls().await.expect("TLS front end");
        let url = tls.function_url(FN);
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        let ca = reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).expect("CA");
        let token = sb.mint_id_token(SA, &url).expect("mint");
        for (http1_only, version) in [(false, "HTTP/2.0"), (true, "HTTP/1.1")] {
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .tls_certs_only([ca.clone()]);
            if http1_only {
                builder = builder.http1_only();
            }
            let client = builder.build().expect("client");
            let resp = client
                .post(&url)
                .bearer_auth(&token)
                .json(&grant())
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 200, "{version}");
            assert_eq!(
                resp.version().to_owned(),
                if http1_only {
                    reqwest::Version::HTTP_11
                } else {
                    reqwest::Version::HTTP_2
                }
            );
            let calls = sb.invocations(FN);
            let call = calls.last().expect("recorded");
            assert_eq!(call.http_version, version);
            assert_eq!(call.body, grant());
            // The plain front end's URL is another audience.
            let refused = client
                .post(&url)
                .bearer_auth(&plain_token)
                .json(&grant())
                .send()
                .await
                .expect("send");
            assert_eq!(refused.status(), 401, "{version}");
        }
        assert_eq!(
            invoke(&plain_url, Some(&plain_token), grant())
                .await
                .status(),
            200
        );
        assert_eq!(sb.invocations(FN).last().unwrap().http_version, "HTTP/1.1");
    }

    /// The 1st gen front end: no token is 403 (the Forbidden page), a token
    /// it cannot accept (wrong audience, garbage, expired) is 401 with
    /// `WWW-Authenticate: Bearer error="invalid_token"`.
    #[tokio::test]
    async fn no_token_is_403_and_wrong_or_expired_tokens_get_401() {
        let (sb, url, token) = setup().await;
        let resp = invoke(&url, None, grant()).await;
        assert_eq!(resp.status(), 403);
        assert!(resp.text().await.expect("text").contains(&format!(
            "Your client does not have permission to get URL <code>/{FN}</code> from this server."
        )));
        let resp = invoke(&url, Some("garbage"), grant()).await;
        assert_eq!(resp.status(), 401);
        assert!(
            resp.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .starts_with("Bearer error=\"invalid_token\"")
        );
        let html = resp.text().await.expect("text");
        assert_eq!(
            html,
            format!(
                "<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n<title>401 Unauthorized</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n<h1>Error: Unauthorized</h1>\n<h2>Your client does not have permission to the requested URL <code>/{FN}</code>.</h2>\n<h2></h2>\n</body></html>"
            )
        );

        let wrong_aud = sb.mint_id_token(SA, "https://elsewhere").expect("mint");
        assert_eq!(invoke(&url, Some(&wrong_aud), grant()).await.status(), 401);
        assert_eq!(invoke(&url, Some("garbage"), grant()).await.status(), 401);

        sb.set_clock(Clock::system().skewed(3601));
        assert_eq!(invoke(&url, Some(&token), grant()).await.status(), 401);
        assert!(
            sb.invocations(FN).is_empty(),
            "nothing reached the function"
        );
    }

    /// A 2nd gen function answers at its cloudfunctions.net URL and at its
    /// Cloud Run URL; at both, the audience is the Cloud Run URL.
    #[tokio::test]
    async fn a_second_gen_function_answers_at_both_urls_for_its_run_audience() {
        let sb = sandbox().await;
        sb.create_service_account(SA);
        let run = sb
            .deploy_gen2_function("grant-crm", FunctionImpl::Sample, &[SA])
            .await
            .expect("deploy");
        assert_eq!(sb.run_url("grant-crm").as_deref(), Some(run.as_str()));
        let cf = sb.function_url("grant-crm");
        let run_token = sb.mint_id_token(SA, &run).expect("mint");
        let cf_token = sb.mint_id_token(SA, &cf).expect("mint");
        assert_eq!(invoke(&run, Some(&run_token), grant()).await.status(), 200);
        assert_eq!(
            invoke(&format!("{run}/sub/path"), Some(&run_token), grant())
                .await
                .status(),
            200
        );
        assert_eq!(invoke(&cf, Some(&run_token), grant()).await.status(), 200);
        assert_eq!(invoke(&cf, Some(&cf_token), grant()).await.status(), 401);
        assert_eq!(invoke(&run, None, grant()).await.status(), 403);
        let paths: Vec<String> = sb
            .invocations("grant-crm")
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert_eq!(paths, ["/", "/sub/path", "/"]);
        sb.set_invokers("grant-crm", &[]);
        assert_eq!(invoke(&run, Some(&run_token), grant()).await.status(), 403);
    }

    /// A function that runs past its timeout is stopped with a 408.
    #[tokio::test]
    async fn a_function_past_its_timeout_answers_408() {
        let (sb, url, token) = setup().await;
        sb.set_function_meta(
            FN,
            super::super::FunctionMeta {
                timeout: Duration::from_millis(200),
                ..Default::default()
            },
        );
        sb.set_faults(
            FN,
            Faults {
                latency: Duration::from_millis(600),
                ..Faults::default()
            },
        );
        let resp = invoke(&url, Some(&token), grant()).await;
        assert_eq!(resp.status(), 408);
        assert!(resp.text().await.unwrap().contains("Request Timeout"));
        let calls = sb.invocations(FN);
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (calls[0].status, calls[0].fault.as_deref()),
            (408, Some("timeout"))
        );
        sb.set_faults(FN, Faults::default());
        assert_eq!(invoke(&url, Some(&token), grant()).await.status(), 200);
    }

    #[tokio::test]
    async fn non_invoker_gets_403_and_public_functions_need_no_token() {
        let (sb, url, _) = setup().await;
        let other = "other@sandbox-project.iam.gserviceaccount.com";
        sb.create_service_account(other);
        let token = sb.mint_id_token(other, &url).expect("mint");
        let resp = invoke(&url, Some(&token), grant()).await;
        assert_eq!(resp.status(), 403);
        let html = resp.text().await.expect("text");
        assert!(html.contains("<h1>Error: Forbidden</h1>"));
        assert!(html.contains(&format!(
            "Your client does not have permission to get URL <code>/{FN}</code> from this server."
        )));

        sb.set_invokers(FN, &["allAuthenticatedUsers"]);
        assert_eq!(invoke(&url, Some(&token), grant()).await.status(), 200);
        assert_eq!(invoke(&url, None, grant()).await.status(), 403);
        sb.set_invokers(FN, &["allUsers"]);
        assert_eq!(invoke(&url, None, grant()).await.status(), 200);
        let calls = sb.invocations(FN);
        assert_eq!(calls[0].caller_email.as_deref(), Some(other));
        assert_eq!(calls[1].caller_email, None);
    }

    #[tokio::test]
    async fn token_without_email_is_matched_by_sub() {
        let (sb, url, _) = setup().await;
        let token = sb
            .state
            .mint_id_token(SA, &url, crate::IdTokenFormat::Standard)
            .expect("mint");
        assert_eq!(invoke(&url, Some(&token), grant()).await.status(), 200);
        assert_eq!(sb.invocations(FN)[0].caller_email.as_deref(), Some(SA));
    }

    /// No function at that URL: the same 403 Forbidden page as a caller
    /// without the invoker role, never a 404.
    #[tokio::test]
    async fn an_unknown_function_is_403_like_a_refused_caller() {
        let (sb, _, token) = setup().await;
        let resp = invoke(&sb.function_url("nope"), Some(&token), grant()).await;
        assert_eq!(resp.status(), 403);
        assert!(resp.text().await.expect("text").contains(
            "Your client does not have permission to get URL <code>/nope</code> from this server."
        ));
    }

    #[tokio::test]
    async fn sample_function_speaks_the_contract() {
        let (sb, url, token) = setup().await;
        let call = |body: Value, key: &'static str| {
            let url = url.clone();
            let token = token.clone();
            async move {
                let resp = client()
                    .post(&url)
                    .bearer_auth(&token)
                    .header("Idempotency-Key", key)
                    .json(&body)
                    .send()
                    .await
                    .expect("send");
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.expect("json"))
            }
        };
        let (s, v) = call(
            json!({"event_type": "list-resources", "params": {"resource_type": "db"}}),
            "k1",
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(
            v["resources"][0],
            json!({"id": "orders", "name": "orders", "type": "db"})
        );
        assert_eq!(v["permissions"][1], json!({"id": "write", "name": "Write"}));
        assert_eq!(
            call(json!({"event_type": "list-resources-tags"}), "k2").await,
            (200, json!({"tags": []}))
        );
        let (s, created) = call(
            json!({"event_type": "create-credentials", "params": {"username": "bob"}}),
            "k3",
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(created["credentials"]["username"], "bob");
        assert!(
            !created["credentials"]["password"]
                .as_str()
                .expect("pw")
                .is_empty()
        );
        // Same key: the first answer again, password included.
        let (_, again) = call(
            json!({"event_type": "create-credentials", "params": {"username": "bob"}}),
            "k3",
        )
        .await;
        assert_eq!(again, created);
        assert_eq!(sb.duplicate_calls(FN), 1);
        assert!(sb.invocations(FN)[3].duplicate);
        assert_eq!(
            call(json!({"event_type": "explode"}), "k4").await,
            (
                400,
                json!({"status": "error", "message": "unsupported event_type"})
            )
        );
        let resp = client()
            .post(&url)
            .bearer_auth(&token)
            .body("{not json")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.json::<Value>().await.expect("json")["status"], "error");
    }

    #[tokio::test]
    async fn fault_knobs_count_down() {
        let (sb, url, token) = setup().await;
        sb.set_faults(
            FN,
            Faults {
                fail_next: (2, 503),
                throttle_next: (1, 7),
                respond_next: (
                    1,
                    200,
                    r#"{"status":"error","message":"no such user"}"#.into(),
                ),
                ..Faults::default()
            },
        );
        let r = invoke(&url, Some(&token), grant()).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        for _ in 0..2 {
            let r = invoke(&url, Some(&token), grant()).await;
            assert_eq!(r.status(), 503);
            assert_eq!(r.text().await.expect("text"), "Service Unavailable");
        }
        let r = invoke(&url, Some(&token), grant()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().await.expect("json"),
            json!({"status": "error", "message": "no such user"})
        );
        let r = invoke(&url, Some(&token), grant()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().await.expect("json"),
            json!({"status": "ok"})
        );
        let statuses: Vec<(u16, Option<String>)> = sb
            .invocations(FN)
            .into_iter()
            .map(|i| (i.status, i.fault))
            .collect();
        assert_eq!(
            statuses,
            vec![
                (429, Some("throttle".into())),
                (503, Some("fail".into())),
                (503, Some("fail".into())),
                (200, Some("respond".into())),
                (200, None),
            ]
        );
    }

    #[tokio::test]
    async fn hang_never_answers_until_the_sandbox_stops() {
        let (sb, url, token) = setup().await;
        sb.set_faults(
            FN,
            Faults {
                hang_next: 1,
                ..Faults::default()
            },
        );
        let hung = tokio::spawn(async move { invoke(&url, Some(&token), grant()).await.status() });
        let calls = tokio::time::timeout(Duration::from_secs(10), sb.wait_for_invocations(FN, 1))
            .await
            .expect("the hung call arrives");
        assert_eq!(calls[0].fault.as_deref(), Some("hang"));
        assert_eq!(calls[0].status, 0);
        assert!(!hung.is_finished(), "a hung call has no answer");
        drop(sb);
        let status = tokio::time::timeout(Duration::from_secs(10), hung)
            .await
            .expect("stopping the sandbox releases the call")
            .expect("task");
        assert_eq!(status, 500);
    }

    #[tokio::test]
    async fn latency_delays_the_answer() {
        let (sb, url, token) = setup().await;
        sb.set_faults(
            FN,
            Faults {
                latency: Duration::from_millis(200),
                ..Faults::default()
            },
        );
        let started = std::time::Instant::now();
        assert_eq!(invoke(&url, Some(&token), grant()).await.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(sb.invocations(FN)[0].fault, None);
    }

    #[tokio::test]
    async fn proxy_forwards_to_upstream_and_relays_the_answer() {
        use axum::routing::any;
        let upstream = Router::new().route(
            "/{*rest}",
            any(
                |method: Method, uri: Uri, headers: HeaderMap, body: String| async move {
                    (
                        StatusCode::CREATED,
                        [("x-upstream", "yes")],
                        Json(json!({
                            "method": method.as_str(),
                            "uri": uri.to_string(),
                            "auth": headers.get("authorization").and_then(|v| v.to_str().ok()),
                            "key": headers.get("idempotency-key").and_then(|v| v.to_str().ok()),
                            "body": body,
                        })),
                    )
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, upstream).await.ok();
        });

        let sb = sandbox().await;
        sb.create_service_account(SA);
        let upstream_url = Url::parse(&format!("http://{addr}/")).expect("url");
        let url = sb.deploy_function("proxied", FunctionImpl::Proxy(upstream_url), &[SA]);
        let token = sb.mint_id_token(SA, &url).expect("mint");
        let resp = client()
            .put(format!("{url}/sub/path?x=1"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "k")
            .body("hello")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.headers()["x-upstream"], "yes");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["method"], "PUT");
        assert_eq!(v["uri"], "/sub/path?x=1");
        assert_eq!(v["auth"], format!("Bearer {token}"));
        assert_eq!(v["key"], "k");
        assert_eq!(v["body"], "hello");
        let calls = sb.invocations("proxied");
        assert_eq!(
            (calls[0].status, calls[0].path.as_str()),
            (201, "/sub/path?x=1")
        );

        server.abort();
    }

    #[tokio::test]
    async fn unreachable_upstream_is_googles_500() {
        // A port nothing listens on: bind, note the address, close.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let sb = sandbox().await;
        sb.create_service_account(SA);
        let upstream = Url::parse(&format!("http://{addr}")).expect("url");
        let url = sb.deploy_function("gone", FunctionImpl::Proxy(upstream), &[SA]);
        let token = sb.mint_id_token(SA, &url).expect("mint");
        let resp = invoke(&url, Some(&token), grant()).await;
        assert_eq!(resp.status(), 500);
        assert_eq!(
            resp.text().await.expect("text"),
            "Error: could not handle the request\n"
        );
        assert_eq!(sb.invocations("gone")[0].status, 500);
    }

    #[tokio::test]
    async fn admin_api_sets_faults_and_lists_invocations() {
        let (sb, url, token) = setup().await;
        let base = sb.functions_base_url();
        let r = client()
            .post(format!("{base}/_sandbox/functions/{FN}/faults"))
            .json(&json!({"fail_next": [1, 502], "latency": "1ms"}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(invoke(&url, Some(&token), grant()).await.status(), 502);
        let calls: Value = client()
            .get(format!("{base}/_sandbox/functions/{FN}/invocations"))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(calls[0]["status"], 502);
        assert_eq!(calls[0]["caller_email"], SA);
        let r = client()
            .post(format!("{base}/_sandbox/functions/{FN}/faults"))
            .json(&json!({"bogus": 1}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400);
        let r = client()
            .post(format!("{base}/_sandbox/functions/nope/faults"))
            .json(&json!({}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 404);

        let list: Value = client()
            .get(format!("{base}/_sandbox/functions"))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(list[0]["name"], FN);
        assert_eq!(list[0]["url"], url.as_str());
        assert_eq!(list[0]["invokers"], json!([SA]));
        let r = client()
            .post(format!("{base}/_sandbox/functions/{FN}/invokers"))
            .json(&json!(["someone@else"]))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(invoke(&url, Some(&token), grant()).await.status(), 403);
    }
}

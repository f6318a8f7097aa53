//! The control plane's HTTP face: the four §3 calls under `/v1` (behind a
//! gatekeeper that applies latency, outages, injected failures, the connector
//! token and the connector id, in that order, and counts every answer), and
//! the knobs under `/_admin/` for people driving the sandbox with curl.
//!
//! It must not hold the state lock across an `.await`, must not fail a whole
//! `/results` batch for one bad entry, and must not require a token on
//! `/_admin/` (it is a sandbox; it only listens on 127.0.0.1).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::ledger::{Extend, ResultRecord};
use super::net::ConnHandle;
use super::{Endpoint, Outage, Shared};
use crate::keys;
use crate::protocol::{parse_rfc3339, rfc3339};

/// Largest request body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Bounds of the lease call's numbers.
const MAX_WAIT_SECONDS: u64 = 30;
const MAX_LEASE_SECONDS: u64 = 3600;
const MAX_ACTIONS_PER_LEASE: u64 = 1000;

pub(crate) fn router(state: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/connectors/{connector_id}/lease", post(lease))
        .route(
            "/v1/connectors/{connector_id}/actions/{action_id}/extend",
            post(extend),
        )
        .route("/v1/connectors/{connector_id}/results", post(results))
        .route("/v1/connectors/{connector_id}/heartbeat", post(heartbeat))
        .route("/_admin/actions", post(admin_enqueue))
        .route("/_admin/results", get(admin_results))
        .route("/_admin/state", get(admin_state))
        .route("/_admin/outage", post(admin_outage))
        .route("/_admin/fail_next", post(admin_fail_next))
        .route("/_admin/latency", post(admin_latency))
        .route("/_admin/tokens", post(admin_tokens))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Added last, so outermost: the gatekeeper sees every call (unknown
        // paths too) before any handler or body limit.
        .layer(middleware::from_fn_with_state(state.clone(), gatekeeper))
        .with_state(state)
}

/// An error answer: `{"error": code, "message": ...}` with `status`.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

fn problem(status: StatusCode, code: &'static str, message: impl Into<String>) -> Problem {
    Problem {
        status,
        code,
        message: message.into(),
    }
}

/// [`problem`], as a response.
fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    problem(status, code, message).into_response()
}

/// What a handler answers: a response, or an error answer.
type Answer = Result<Response, Problem>;

fn bad_request(message: impl Into<String>) -> Problem {
    problem(StatusCode::BAD_REQUEST, "invalid_request", message)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

fn unauthenticated() -> Response {
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "connector token is missing, wrong or revoked",
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn with_retry_after(mut resp: Response, secs: Option<u64>) -> Response {
    if let Some(v) = secs.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// What the gatekeeper decided before the handler runs.
enum Admission {
    Pass,
    Answer(Response),
}

/// Every `/v1` call: counted, delayed, failed on purpose, authenticated,
/// checked for the connector id. An in-flight call dies with its connection
/// when a refuse outage starts.
async fn gatekeeper(AxState(s): AxState<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !path.starts_with("/v1/") {
        return next.run(req).await;
    }
    let cut = s.net.cut_token();
    let endpoint = Endpoint::of(&path);
    let latency = {
        let mut inner = s.lock();
        inner.calls.arrived(endpoint);
        inner.latency
    };
    let answer = async {
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match admit(&s, &path, req.headers()) {
            Admission::Answer(resp) => resp,
            Admission::Pass => next.run(req).await,
        }
    };
    let resp = tokio::select! {
        resp = answer => resp,
        // The connection is cut too, so this answer is never delivered.
        () = cut.cancelled() => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "cut"),
    };
    s.lock().calls.answered(resp.status().as_u16());
    resp
}

fn admit(s: &Shared, path: &str, headers: &HeaderMap) -> Admission {
    let mut inner = s.lock();
    if inner.outage == Outage::Unavailable {
        return Admission::Answer(with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the control plane is temporarily unavailable; retry later",
            ),
            Some(1),
        ));
    }
    if let Some(fail) = inner.fail_next.as_mut()
        && fail.count > 0
    {
        fail.count -= 1;
        let status = StatusCode::from_u16(fail.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let resp = (
            status,
            Json(json!({"error": snake_reason(status), "message": "injected failure (fail_next)"})),
        )
            .into_response();
        return Admission::Answer(with_retry_after(resp, fail.retry_after));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if !token.is_some_and(|t| inner.tokens.contains(t)) {
        return Admission::Answer(unauthenticated());
    }
    let connector = path
        .strip_prefix("/v1/connectors/")
        .and_then(|rest| rest.split('/').next());
    if connector != Some(s.connector_id.as_str()) {
        return Admission::Answer(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no connector {:?} here; check control_plane.connector_id",
                connector.unwrap_or_default()
            ),
        ));
    }
    Admission::Pass
}

/// `too_many_requests` for 429: the reason phrase as an error code.
fn snake_reason(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace([' ', '-'], "_")
}

/// The JSON body of a `/v1` call, or the answer to give instead.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, Problem> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let bytes = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            bad_request(format!("cannot read the body: {}", rej.body_text()))
        }
    })?;
    if !is_json {
        return Err(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("the body is not JSON: {e}")))
}

/// Field `name` of `body` as an integer within `range`.
fn int_field(
    body: &Value,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, Problem> {
    body.get(name)
        .and_then(Value::as_u64)
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            bad_request(format!(
                "`{name}` must be an integer from {} to {}",
                range.start(),
                range.end()
            ))
        })
}

fn string_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, Problem> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_request(format!("`{name}` must be a non-empty string")))
}

fn object(body: &Value) -> Result<(), Problem> {
    if body.is_object() {
        Ok(())
    } else {
        Err(bad_request("the body must be a JSON object"))
    }
}

// ---- /v1 ----

async fn lease(
    AxState(s): AxState<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = json_body(&headers, body)?;
    object(&body)?;
    string_field(&body, "instance_id")?;
    let max = int_field(&body, "max_actions", 1..=MAX_ACTIONS_PER_LEASE)?;
    let wait = int_field(&body, "wait_seconds", 0..=MAX_WAIT_SECONDS)?;
    let lease_secs = int_field(&body, "lease_seconds", 1..=MAX_LEASE_SECONDS)?;
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let max = s.lock().lease_overflow.unwrap_or(max);
    let lease_for = Duration::from_secs(lease_secs);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        // Register for wake-ups before looking, so an enqueue between the
        // look and the wait is not missed.
        let changed = s.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = s.now();
        let (actions, next_expiry) = {
            let mut inner = s.lock();
            let actions = inner.ledger.lease(now, max, lease_for, || {
                format!("lt_{}", keys::random_token(32))
            });
            (actions, inner.ledger.next_expiry())
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !actions.is_empty() || remaining.is_zero() {
            return Ok(Json(json!({ "actions": actions })).into_response());
        }
        // Wake when the earliest lease ends (it can be handed out again) or
        // at the deadline, whichever is first.
        let nap = next_expiry
            .map(|t| t.duration_since(now).unwrap_or_default())
            .map_or(remaining, |d| d.min(remaining))
            .max(Duration::from_millis(1));
        let _held = Held::new(&s.held);
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(nap) => {}
            () = s.cancel.cancelled() => {
                return Err(problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the control plane is shutting down"));
            }
        }
    }
}

/// Counts a held long poll for as long as it lives.
struct Held<'a>(&'a tokio::sync::watch::Sender<usize>);

impl<'a> Held<'a> {
    fn new(count: &'a tokio::sync::watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Held(count)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

async fn extend(
    AxState(s): AxState<Arc<Shared>>,
    Path((_connector, action_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = json_body(&headers, body)?;
    object(&body)?;
    let token = string_field(&body, "lease_token")?;
    let secs = int_field(&body, "lease_seconds", 1..=MAX_LEASE_SECONDS)?;
    let now = s.now();
    let outcome = s
        .lock()
        .ledger
        .extend(now, &action_id, token, Duration::from_secs(secs));
    match outcome {
        Extend::Extended(t) => Ok(Json(json!({"expires_at": rfc3339(t)})).into_response()),
        Extend::UnknownAction => Err(problem(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("unknown action {action_id}"),
        )),
        Extend::LeaseLost(why) => Err(problem(
            StatusCode::CONFLICT,
            "lease_lost",
            format!("lease of {action_id} lost: {why}; stop working on it or report the result"),
        )),
    }
}

async fn results(
    AxState(s): AxState<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = json_body(&headers, body)?;
    let Some(reports) = body.get("results").and_then(Value::as_array) else {
        return Err(bad_request("`results` must be an array of results"));
    };
    let now = s.now();
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    {
        let mut inner = s.lock();
        for report in reports {
            match inner.ledger.report(now, report) {
                Ok(id) => accepted.push(id),
                Err(r) => rejected.push(json!({"action_id": r.action_id, "reason": r.reason})),
            }
        }
    }
    if !accepted.is_empty() {
        s.resulted.notify_waiters();
    }
    Ok(Json(json!({"accepted": accepted, "rejected": rejected})).into_response())
}

/// Why a heartbeat does not have the §3 shape.
fn heartbeat_problem(body: &Value) -> Option<String> {
    let Some(obj) = body.as_object() else {
        return Some("the body must be a JSON object".into());
    };
    for field in ["instance_id", "version"] {
        if obj
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Some(format!("`{field}` must be a non-empty string"));
        }
    }
    if obj
        .get("started_at")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .is_none()
    {
        return Some("`started_at` must be an RFC 3339 timestamp".into());
    }
    let Some(integrations) = obj.get("integrations").and_then(Value::as_array) else {
        return Some("`integrations` must be an array".into());
    };
    for (i, integ) in integrations.iter().enumerate() {
        if !integ.get("name").is_some_and(Value::is_string) {
            return Some(format!("`integrations[{i}].name` must be a string"));
        }
        if !matches!(
            integ.get("status").and_then(Value::as_str),
            Some("ok" | "degraded" | "error")
        ) {
            return Some(format!(
                "`integrations[{i}].status` must be \"ok\", \"degraded\" or \"error\""
            ));
        }
    }
    if !obj.get("stats").is_some_and(Value::is_object) {
        return Some("`stats` must be an object".into());
    }
    None
}

async fn heartbeat(
    AxState(s): AxState<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = json_body(&headers, body)?;
    if let Some(why) = heartbeat_problem(&body) {
        return Err(bad_request(why));
    }
    let instance = body["instance_id"].as_str().unwrap_or_default().to_owned();
    let now = s.now();
    s.lock().heartbeats.insert(instance, (body, now));
    Ok(Json(json!({})).into_response())
}

// ---- /_admin/ ----

/// Admin bodies: any JSON (no content-type required, for curl users).
fn admin_body(body: &Bytes) -> Result<Value, Problem> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("the body is not JSON: {e}")))
}

async fn admin_enqueue(AxState(s): AxState<Arc<Shared>>, body: Bytes) -> Answer {
    let body = admin_body(&body)?;
    let actions = match body {
        Value::Array(list) => list,
        one => vec![one],
    };
    if let Some(i) = actions
        .iter()
        .position(|a| !a.get("id").is_some_and(Value::is_string))
    {
        return Err(bad_request(format!(
            "action {i} has no string `id`; nothing was enqueued"
        )));
    }
    let ids = s.enqueue_all(actions);
    Ok(Json(json!({ "enqueued": ids })).into_response())
}

fn record_json(r: &ResultRecord) -> Value {
    json!({
        "result": r.result,
        "reports": r.reports,
        "accepted_at": rfc3339(r.accepted_at),
        "instance_id": r.instance_id,
        "lease_token": r.lease_token,
        "pushed": r.pushed,
    })
}

async fn admin_results(AxState(s): AxState<Arc<Shared>>) -> Response {
    let results: serde_json::Map<String, Value> = s
        .lock()
        .ledger
        .results()
        .iter()
        .map(|(id, r)| (id.clone(), record_json(r)))
        .collect();
    Json(json!({ "results": results })).into_response()
}

async fn admin_state(AxState(s): AxState<Arc<Shared>>) -> Response {
    let now = s.now();
    let inner = s.lock();
    let heartbeats: serde_json::Map<String, Value> = inner
        .heartbeats
        .iter()
        .map(|(id, (hb, at))| {
            (
                id.clone(),
                json!({"heartbeat": hb, "received_at": rfc3339(*at)}),
            )
        })
        .collect();
    Json(json!({
        "connector_id": s.connector_id,
        "pending": inner.ledger.pending(),
        "leased": inner.ledger.leased(now),
        "results": inner.ledger.result_count(),
        "heartbeats": heartbeats,
        "outage": inner.outage,
        "latency_ms": u64::try_from(inner.latency.as_millis()).unwrap_or(u64::MAX),
        "fail_next": inner.fail_next.as_ref().map(|f| json!({"count": f.count, "status": f.status, "retry_after": f.retry_after})),
        "calls": inner.calls,
    }))
    .into_response()
}

async fn admin_outage(
    AxState(s): AxState<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    body: Bytes,
) -> Answer {
    let body = admin_body(&body)?;
    let outage: Outage = match body.get("mode").cloned().map(serde_json::from_value) {
        Some(Ok(o)) => o,
        _ => {
            return Err(bad_request(
                "`mode` must be \"none\", \"unavailable\" or \"refuse\"",
            ));
        }
    };
    let seconds = match body.get("seconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => return Err(bad_request("`seconds` must be a positive integer")),
        },
    };
    if outage == Outage::Refuse {
        // This very connection must live to carry the answer.
        conn.exempt_from_cuts();
    }
    let result = match seconds {
        Some(n) => s.set_outage_for(outage, Duration::from_secs(n)),
        None => s.set_outage(outage),
    };
    if let Err(e) = result {
        return Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot switch the outage: {e}"),
        ));
    }
    let note = match (outage, seconds) {
        (Outage::Refuse, None) => {
            "refusing connections; nothing can end this over HTTP (pass \"seconds\" next time)"
        }
        (_, Some(_)) => "back to normal after `seconds`",
        _ => "ok",
    };
    let mut resp = Json(json!({"mode": outage, "seconds": seconds, "note": note})).into_response();
    // Close after answering, so no client keeps talking to a "down" server.
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(resp)
}

async fn admin_fail_next(AxState(s): AxState<Arc<Shared>>, body: Bytes) -> Answer {
    let body = admin_body(&body)?;
    let count = int_field(&body, "count", 0..=u64::from(u32::MAX))?;
    let status = int_field(&body, "status", 400..=599)?;
    let retry_after = match body.get("retry_after") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => return Err(bad_request("`retry_after` must be a non-negative integer")),
        },
    };
    s.fail_next(
        u32::try_from(count).unwrap_or(u32::MAX),
        u16::try_from(status).unwrap_or(500),
        retry_after,
    );
    Ok(Json(json!({"count": count, "status": status, "retry_after": retry_after})).into_response())
}

async fn admin_latency(AxState(s): AxState<Arc<Shared>>, body: Bytes) -> Answer {
    let body = admin_body(&body)?;
    let ms = int_field(&body, "ms", 0..=600_000)?;
    s.lock().latency = Duration::from_millis(ms);
    Ok(Json(json!({ "ms": ms })).into_response())
}

async fn admin_tokens(AxState(s): AxState<Arc<Shared>>, body: Bytes) -> Answer {
    let body = admin_body(&body)?;
    let add = body.get("add").and_then(Value::as_str);
    let revoke = body.get("revoke").and_then(Value::as_str);
    if add.is_none() && revoke.is_none() {
        return Err(bad_request("give `add` and/or `revoke`: a connector token"));
    }
    let mut inner = s.lock();
    if let Some(t) = add {
        inner.tokens.insert(t.to_owned());
    }
    if let Some(t) = revoke {
        inner.tokens.remove(t);
    }
    Ok(Json(json!({ "tokens": inner.tokens.len() })).into_response())
}

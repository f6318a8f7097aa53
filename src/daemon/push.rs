//! Push mode (docs/protocol.md §4): `POST /v1/actions` (202 once durably recorded,
//! `?wait=` for a synchronous answer) and `GET /v1/actions/{id}`, every request
//! HMAC-signed, bodies size-limited, 503 + `Retry-After` while draining or full.
//!
//! It must record nothing for a request whose signature fails, and must answer
//! 202 only after the journal says the action is durable. What an unsigned
//! client can cost is bounded: malformed or stale signature headers are
//! refused before the body is read, the MACs are computed off the I/O threads
//! (one per secret), and rejections are logged at most once per interval.
//!
//! A replayed request (a signature already accepted within the window) is
//! answered, but never with the function's answer body: that is where
//! `create-credentials` returns a password. A sender that lost an answer
//! signs a fresh request (a new timestamp) to get it again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::signature::{SignatureError, SignedHeaders, WINDOW_SECS};
use crate::action::{Action, ActionResult};
use crate::config::PushSettings;
use crate::engine::{Engine, EngineError, Submitted};
use crate::journal::{Progress, Source};
use crate::telemetry::traces::TraceParent;

/// The longest `?wait=` honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Signatures remembered for replay detection at most (a full guard treats
/// every new request as a replay: bodies are withheld, nothing is refused).
const REPLAY_MEMORY: usize = 100_000;
/// Rejected requests are logged at most once per this interval, with a count.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct PushState {
    engine: Arc<Engine>,
    replays: Arc<ReplayGuard>,
    rejections: Arc<LogThrottle>,
    bodies: Arc<BodyBudget>,
}

/// Bodies buffered at once: each request reserves its largest possible size
/// (its Content-Length, else the body limit) before a byte is read.
struct BodyBudget {
    bytes: Arc<Semaphore>,
    max_body: usize,
    timeout: Duration,
}

pub fn router(engine: Arc<Engine>, settings: PushSettings) -> Router {
    let state = PushState {
        engine,
        replays: Arc::new(ReplayGuard::new(REPLAY_MEMORY)),
        rejections: Arc::new(LogThrottle::new(REJECTION_LOG_INTERVAL)),
        bodies: Arc::new(BodyBudget {
            bytes: Arc::new(Semaphore::new(settings.max_buffered_bytes)),
            max_body: settings.max_body_bytes,
            timeout: settings.body_timeout,
        }),
    };
    Router::new()
        .route("/v1/actions", post(post_action))
        .route("/v1/actions/{id}", get(get_action))
        // The body is already buffered (and bounded) by `bounded_body`.
        .layer(DefaultBodyLimit::disable())
        // Why: one body may not exceed the limit (413), all bodies together may
        // not exceed the budget (503), and a body must arrive in time (408).
        .layer(middleware::from_fn_with_state(state.clone(), bounded_body))
        // Why: missing, stale or oversized signature headers are refused before the body is read.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            signature_gate,
        ))
        // Outside the signature gate: load balancers' health checks carry no
        // signature. It says only whether this instance takes pushes now.
        .route("/healthz", get(push_health))
        .with_state(state)
}

/// `GET /healthz` on the push port, unauthenticated, for load balancers: 200
/// while this instance takes pushed actions, 503 (with `Retry-After`) while
/// it cannot record them (the journal cannot write) or is shutting down.
async fn push_health(State(state): State<PushState>) -> Response {
    if state.engine.is_draining() {
        return unavailable("the connector is shutting down", 5);
    }
    if state.engine.journal().writable().is_err() {
        return unavailable("the connector cannot write its journal", 5);
    }
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response()
}

/// Reads the whole body within the deadline and the budget, then hands it on.
async fn bounded_body(State(state): State<PushState>, req: Request, next: Next) -> Response {
    let budget = &state.bodies;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > budget.max_body as u64) {
        return too_large(budget.max_body);
    }
    let reserve = declared.map_or(budget.max_body, |n| n as usize).max(1);
    let Ok(_reserved) = budget
        .bytes
        .clone()
        .try_acquire_many_owned(u32::try_from(reserve).unwrap_or(u32::MAX))
    else {
        return unavailable(
            "too many request bodies are being received; retry shortly",
            1,
        );
    };
    let read = tokio::time::timeout(budget.timeout, axum::body::to_bytes(body, budget.max_body));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return too_large(budget.max_body),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {}s",
                    budget.timeout.as_secs()
                ),
            );
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body exceeds push.max_body_bytes ({limit} bytes)"),
    )
}

/// Signatures already accepted, with when: a second use within the window
/// is a replay.
struct ReplayGuard {
    seen: Mutex<(HashMap<[u8; 32], i64>, i64)>,
    capacity: usize,
}

impl ReplayGuard {
    fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new((HashMap::new(), 0)),
            capacity,
        }
    }

    /// True the first time `tag` is seen (signatures older than the window
    /// are forgotten: the window check refuses them anyway). Pruning runs at
    /// most every 30 s, so a full guard does not rescan on every request.
    fn first_use(&self, tag: [u8; 32], now: i64) -> bool {
        let mut guard = self.seen.lock().expect("replay guard lock");
        let (seen, pruned_at) = &mut *guard;
        if now.abs_diff(*pruned_at) > 30 {
            seen.retain(|_, at| now.abs_diff(*at) <= WINDOW_SECS + 60);
            *pruned_at = now;
        }
        if seen.contains_key(&tag) || seen.len() >= self.capacity {
            return false;
        }
        seen.insert(tag, now);
        true
    }
}

/// A warning that repeats at most once per interval, counting the rest.
struct LogThrottle {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogThrottle {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Runs `log` with the number of calls it stood for, unless one ran less
    /// than the interval ago.
    fn log(&self, log: impl FnOnce(u64)) {
        let mut last = self.last.lock().expect("throttle lock");
        if last.is_some_and(|t| t.elapsed() < self.interval) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        log(self.suppressed.swap(0, Ordering::Relaxed) + 1);
    }
}

/// Whether this delivery of a signed request is its first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    First,
    Replayed,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

fn unavailable(message: &str, retry_after: u64) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    r.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, retry_after.into());
    r
}

fn refuse(state: &PushState, e: &SignatureError, path: &str) -> Response {
    state.rejections.log(|count| {
        tracing::warn!(reason = %e, path, count, "rejected unsigned or badly signed push request(s)")
    });
    error(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
}

async fn signature_gate(State(state): State<PushState>, mut req: Request, next: Next) -> Response {
    let parsed = {
        let headers = req.headers();
        SignedHeaders::from_request(
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            state.engine.clock().unix_secs(),
        )
    };
    match parsed {
        Ok(signed) => {
            req.extensions_mut().insert(signed);
            next.run(req).await
        }
        Err(e) => refuse(&state, &e, req.uri().path()),
    }
}

/// Verifies the signature over the whole request (off the I/O threads) and
/// tells a first delivery from a replay.
async fn authenticate(
    state: &PushState,
    signed: SignedHeaders,
    method: &Method,
    uri: &Uri,
    body: Bytes,
) -> Result<Delivery, Box<Response>> {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    // Secrets come from the configuration in force, so a SIGHUP reload rotates them.
    let secrets = state
        .engine
        .config()
        .push
        .as_ref()
        .map(|p| p.secrets.clone())
        .unwrap_or_default();
    let method_name = method.as_str().to_owned();
    let verified = tokio::task::spawn_blocking(move || {
        signed.verify(&secrets, &method_name, &path_and_query, &body)
    })
    .await
    .unwrap_or(Err(SignatureError::Mismatch));
    match verified {
        Ok(tag)
            if state
                .replays
                .first_use(tag, state.engine.clock().unix_secs()) =>
        {
            Ok(Delivery::First)
        }
        Ok(_) => Ok(Delivery::Replayed),
        Err(e) => Err(Box::new(refuse(state, &e, uri.path()))),
    }
}

/// What a replay may see of a result: everything but the function's answer.
fn for_delivery(result: &ActionResult, delivery: Delivery) -> Value {
    let mut result = result.clone();
    if delivery == Delivery::Replayed
        && let Some(call) = result.function.as_mut()
    {
        call.body = None;
    }
    let mut value = json!(result);
    if delivery == Delivery::Replayed {
        value["replayed"] = json!(true);
    }
    value
}

fn status_body(
    id: &str,
    status: Progress,
    result: Option<&ActionResult>,
    delivery: Delivery,
) -> Value {
    let mut body = json!({"action_id": id, "status": status_name(status),
        "result": result.map(|r| for_delivery(r, Delivery::First))});
    if delivery == Delivery::Replayed {
        body["replayed"] = json!(true);
        if let Some(r) = result {
            body["result"] = for_delivery(r, delivery);
            body["result"].as_object_mut().map(|o| o.remove("replayed"));
        }
    }
    body
}

fn status_name(s: Progress) -> &'static str {
    match s {
        Progress::Queued => "queued",
        Progress::Running => "running",
        Progress::Succeeded => "succeeded",
        Progress::Failed => "failed",
    }
}

pub(crate) fn parse_wait(query: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(q) = query else { return Ok(None) };
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        if k == "wait" {
            let secs: u64 = v
                .parse()
                .map_err(|_| "`wait` must be whole seconds, 0 to 60".to_owned())?;
            if Duration::from_secs(secs) > MAX_WAIT {
                return Err("`wait` must be at most 60 seconds".into());
            }
            return Ok(Some(Duration::from_secs(secs)));
        }
    }
    Ok(None)
}

async fn post_action(
    State(state): State<PushState>,
    Extension(signed): Extension<SignedHeaders>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let webhook_id = signed.webhook_id().map(str::to_owned);
    let delivery = match authenticate(&state, signed, &method, &uri, body.clone()).await {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let wait = match parse_wait(query.as_deref()) {
        Ok(w) => w,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_request", m),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_action",
                "the body is not JSON",
            );
        }
    };
    let mut action = match Action::from_json(value) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_action", e.reason),
    };
    // The pusher's trace becomes the action's parent (an invalid header is
    // ignored, as W3C Trace Context says; the header wins over the body's field).
    if let Some(tp) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
    {
        action.traceparent = Some(tp);
    }
    // Standard Webhooks: `webhook-id` is the idempotency key, and so is the
    // action id; they must be the same or the two would disagree on a retry.
    if let Some(wid) = webhook_id.filter(|wid| *wid != action.id) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_action",
            format!(
                "webhook-id `{wid}` is not the action id `{}`: send the action id as webhook-id",
                action.id
            ),
        );
    }
    let id = action.id.clone();
    let submitted = match state.engine.submit(action, Source::Push, None).await {
        Ok(s) => s,
        Err(EngineError::Draining) => {
            return unavailable(
                "the connector is shutting down; retry against another instance",
                5,
            );
        }
        Err(EngineError::Full(_)) => {
            return unavailable("the connector's queue is full; retry shortly", 1);
        }
        Err(e) if state.engine.journal().writable().is_err() => {
            // The journal says so (once, then every 30 s); the pusher retries.
            tracing::debug!(error = %e, "could not record a pushed action: the journal cannot write");
            return unavailable(
                "the connector cannot write its journal (disk full or failing); retry shortly or against another instance",
                5,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "could not record a pushed action");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the action could not be recorded; retry",
            );
        }
    };
    match (submitted, wait) {
        (Submitted::Done(result), Some(_)) => {
            (StatusCode::OK, axum::Json(for_delivery(&result, delivery))).into_response()
        }
        (Submitted::Done(result), None) => {
            let status = if result.succeeded() {
                Progress::Succeeded
            } else {
                Progress::Failed
            };
            (
                StatusCode::OK,
                axum::Json(status_body(&id, status, Some(&result), delivery)),
            )
                .into_response()
        }
        (other, Some(wait)) => match state.engine.wait_for(&id, wait).await {
            Ok(Some(result)) => {
                (StatusCode::OK, axum::Json(for_delivery(&result, delivery))).into_response()
            }
            _ => accepted_or_known(&id, other, delivery),
        },
        (other, None) => accepted_or_known(&id, other, delivery),
    }
}

fn accepted_or_known(id: &str, submitted: Submitted, delivery: Delivery) -> Response {
    match submitted {
        Submitted::Accepted => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"action_id": id, "status": "accepted"})),
        )
            .into_response(),
        Submitted::InProgress(status) => (
            StatusCode::OK,
            axum::Json(status_body(id, status, None, delivery)),
        )
            .into_response(),
        Submitted::Done(result) => {
            (StatusCode::OK, axum::Json(for_delivery(&result, delivery))).into_response()
        }
    }
}

async fn get_action(
    State(state): State<PushState>,
    Extension(signed): Extension<SignedHeaders>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    // Standard Webhooks signs no path: the webhook-id names what may be read.
    if signed.webhook_id().is_some_and(|wid| wid != id) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a Standard Webhooks status query must carry the queried action id as webhook-id",
        );
    }
    let delivery = match authenticate(&state, signed, &method, &uri, body).await {
        Ok(d) => d,
        Err(r) => return *r,
    };
    match state.engine.journal().state(&id).await {
        Ok(Some(s)) => {
            let status = state.engine.progress(&id, s.status);
            (
                StatusCode::OK,
                axum::Json(status_body(&id, status, s.result.as_ref(), delivery)),
            )
                .into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no action `{id}` is known to this connector"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "journal read failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "journal unavailable",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_guard_remembers_a_window_and_treats_a_full_memory_as_replays() {
        let guard = ReplayGuard::new(2);
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        assert!(guard.first_use(a, 1_000));
        assert!(!guard.first_use(a, 1_001), "a second use is a replay");
        assert!(guard.first_use(b, 1_001));
        assert!(!guard.first_use(c, 1_002), "full: withheld, never refused");
        // Past the window, old signatures are forgotten and room comes back.
        assert!(guard.first_use(c, 1_000 + WINDOW_SECS as i64 + 61));
    }
}

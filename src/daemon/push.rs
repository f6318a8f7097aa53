//! Push mode (PROTOCOL.md §4): `POST /v1/actions` (202 once durably recorded,
//! `?wait=` for a synchronous answer) and `GET /v1/actions/{id}`, every request
//! HMAC-signed, bodies size-limited, 503 + `Retry-After` while draining or full.
//!
//! It must record nothing for a request whose signature fails, and must answer
//! 202 only after the journal says the action is durable.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use crate::action::{Action, ActionResult};
use crate::config::PushSettings;
use crate::engine::{Engine, EngineError, Submitted};
use crate::journal::{Progress, Source};

/// The longest `?wait=` honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct PushState {
    engine: Arc<Engine>,
}

pub fn router(engine: Arc<Engine>, settings: PushSettings) -> Router {
    let limit = settings.max_body_bytes;
    Router::new()
        .route("/v1/actions", post(post_action))
        .route("/v1/actions/{id}", get(get_action))
        // Why: a pusher must not be able to make us buffer unbounded bodies; axum answers 413.
        .layer(DefaultBodyLimit::max(limit))
        .with_state(PushState { engine })
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

fn authenticate(
    state: &PushState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Box<Response>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    // Secrets come from the configuration in force, so a SIGHUP reload rotates them.
    let config = state.engine.config();
    let secrets = config
        .push
        .as_ref()
        .map(|p| p.secrets.as_slice())
        .unwrap_or_default();
    verify(
                secrets,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        state.engine.clock().unix_secs(),
        method.as_str(),
        path_and_query,
        body,
    )
    .map_err(|e| {
        tracing::warn!(reason = %e, path = uri.path(), "rejected an unsigned or badly signed push request");
        Box::new(error(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()))
    })
}

fn status_body(id: &str, status: Progress, result: Option<&ActionResult>) -> Value {
    json!({"action_id": id, "status": status_name(status), "result": result})
}

fn status_name(s: Progress) -> &'static str {
    match s {
        Progress::Queued => "queued",
        Progress::Running => "running",
        Progress::Succeeded => "succeeded",
        Progress::Failed => "failed",
    }
}

fn parse_wait(query: Option<&str>) -> Result<Option<Duration>, String> {
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
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&state, &method, &uri, &headers, &body) {
        return *r;
    }
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
    let action = match Action::from_value(&value) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_action", e.reason),
    };
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
            (StatusCode::OK, axum::Json(json!(result))).into_response()
        }
        (Submitted::Done(result), None) => {
            let status = if result.succeeded() {
                Progress::Succeeded
            } else {
                Progress::Failed
            };
            (
                StatusCode::OK,
                axum::Json(status_body(&id, status, Some(&result))),
            )
                .into_response()
        }
        (other, Some(wait)) => match state.engine.wait_for(&id, wait).await {
            Ok(Some(result)) => (StatusCode::OK, axum::Json(json!(result))).into_response(),
            _ => accepted_or_known(&id, other),
        },
        (other, None) => accepted_or_known(&id, other),
    }
}

fn accepted_or_known(id: &str, submitted: Submitted) -> Response {
    match submitted {
        Submitted::Accepted => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"action_id": id, "status": "accepted"})),
        )
            .into_response(),
        Submitted::InProgress(status) => {
            (StatusCode::OK, axum::Json(status_body(id, status, None))).into_response()
        }
        Submitted::Done(result) => (StatusCode::OK, axum::Json(json!(*result))).into_response(),
    }
}

async fn get_action(
    State(state): State<PushState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&state, &method, &uri, &headers, &body) {
        return *r;
    }
    match state.engine.journal().state(&id).await {
        Ok(Some(s)) => (
            StatusCode::OK,
            axum::Json(status_body(&id, s.status, s.result.as_ref())),
        )
            .into_response(),
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

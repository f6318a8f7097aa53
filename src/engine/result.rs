//! Building results (docs/protocol.md §2) from invocation reports, with the response
//! body capped at the configured size.
//!
//! It must not log bodies: create-credentials answers carry passwords.

use serde_json::Value;

use crate::action::{
    ActionResult, CONNECTOR_VERSION, FunctionCall, ResultError, ResultOutcome, rfc3339,
};
use crate::contract::{Body, ErrorCode};
use crate::function::{Outcome, Report};

/// The result of an invocation.
pub(crate) fn from_report(
    id: &str,
    report: &Report,
    instance_id: &str,
    body_cap: usize,
) -> ActionResult {
    let (outcome, error) = match &report.outcome {
        Outcome::Succeeded => (ResultOutcome::Succeeded, None),
        Outcome::Failed {
            code,
            message,
            retryable,
        } => (
            ResultOutcome::Failed,
            Some(ResultError {
                code: *code,
                message: message.clone(),
                retryable: *retryable,
            }),
        ),
    };
    // A function call happened when an HTTP request went out: an answer came
    // back, or the function did not answer in time.
    let called = report.status.is_some()
        || report
            .log
            .iter()
            .any(|a| a.outcome == ErrorCode::FunctionUnavailable.as_str());
    let function = called.then(|| FunctionCall {
        url: report.url.clone(),
        status: report.status,
        body: report.body.as_ref().map(|b| cap_body(b, body_cap)),
        latency_ms: report.latency.as_millis() as u64,
    });
    ActionResult {
        action_id: id.to_owned(),
        outcome,
        error,
        function,
        attempts: report.attempts,
        started_at: rfc3339(report.started_at),
        finished_at: rfc3339(report.finished_at),
        instance_id: instance_id.to_owned(),
        connector_version: CONNECTOR_VERSION.to_owned(),
        access_details: None,
    }
}

/// The body as JSON, or when larger than `cap` bytes, a string saying so with
/// the start of it.
pub fn cap_body(body: &Body, cap: usize) -> Value {
    let (value, text) = match body {
        Body::Json(v) => (v.clone(), v.to_string()),
        Body::Text(t) => (Value::String(t.clone()), t.clone()),
    };
    if text.len() <= cap {
        return value;
    }
    let mut end = cap.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Value::String(format!(
        "{}…[truncated: {} bytes in all]",
        &text[..end],
        text.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn small_bodies_pass_through_and_large_ones_are_capped() {
        let body = Body::Json(json!({"status": "ok"}));
        assert_eq!(cap_body(&body, 1024), json!({"status": "ok"}));
        let big = Body::Text("é".repeat(100));
        let capped = cap_body(&big, 11).as_str().unwrap().to_owned();
        assert!(
            capped.starts_with("ééééé…[truncated: 200 bytes"),
            "{capped}"
        );
    }
}

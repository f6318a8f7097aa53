//! The wire vocabulary of grantbridge's protocol (docs/protocol.md) as the
//! emulated control plane reads it: timestamps, ids, and the result a connector
//! reports.
//!
//! Written from the protocol document, never shared with grantbridge's own
//! types: a parsing bug on the connector's side must not be mirrored here,
//! where it would hide itself from the tests.

use std::time::SystemTime;

use serde::Deserialize;
use serde_json::Value;

/// RFC 3339 in UTC with second precision, as the protocol writes timestamps.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses an RFC 3339 UTC timestamp (`Z`, optional fractional seconds).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    humantime::parse_rfc3339_weak(s).ok()
}

/// The protocol's id rule: 1 to 128 characters of `[A-Za-z0-9._:-]`, but
/// not `.` or `..`.
pub fn is_protocol_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && !matches!(s, "." | "..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A reported result (protocol §2 "Result"), as the control plane reads it.
/// Unknown fields are ignored: the protocol may grow.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReportedResult {
    pub action_id: String,
    pub outcome: ReportedOutcome,
    pub error: Option<ReportedError>,
    pub function: Option<ReportedCall>,
    pub attempts: u32,
    pub started_at: String,
    pub finished_at: String,
    pub instance_id: String,
    pub connector_version: String,
    /// On a successful `grant-access`: the link to the granted application.
    #[serde(default)]
    pub access_details: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportedOutcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReportedError {
    /// One of the protocol's error codes (`permission_denied`, ...).
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

/// The function call behind a result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReportedCall {
    pub url: String,
    pub status: Option<u16>,
    pub body: Option<Value>,
    pub latency_ms: u64,
}

impl ReportedResult {
    pub fn succeeded(&self) -> bool {
        self.outcome == ReportedOutcome::Succeeded
    }

    /// The error code of a failed result.
    pub fn error_code(&self) -> Option<&str> {
        self.error.as_ref().map(|e| e.code.as_str())
    }

    /// Why the fields contradict each other, if they do (§2: `error` when,
    /// and only when, the outcome is `failed`; timestamps are RFC 3339).
    pub fn inconsistency(&self) -> Option<&'static str> {
        match (self.succeeded(), &self.error) {
            (true, Some(_)) => return Some("a succeeded result must have `error: null`"),
            (false, None) => return Some("a failed result must carry `error`"),
            _ => {}
        }
        if parse_rfc3339(&self.started_at).is_none() || parse_rfc3339(&self.finished_at).is_none() {
            return Some("`started_at` and `finished_at` must be RFC 3339 UTC timestamps");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_protocol_example_result() {
        let r: ReportedResult = serde_json::from_value(json!({
            "action_id": "act-7f3a", "outcome": "failed",
            "error": {"code": "permission_denied", "message": "m", "retryable": false},
            "function": {"url": "https://x", "status": 403, "body": null, "latency_ms": 12},
            "attempts": 1, "started_at": "2026-11-22T10:00:00Z", "finished_at": "2026-11-22T10:00:01.5Z",
            "instance_id": "i", "connector_version": "0.1.0", "lease_token": "t", "future_field": 1
        }))
        .unwrap();
        assert_eq!(r.error_code(), Some("permission_denied"));
        assert_eq!(r.inconsistency(), None);
    }

    #[test]
    fn ids_follow_the_rule() {
        assert!(is_protocol_id("act-1:a.b_c"));
        assert!(!is_protocol_id(""));
        assert!(!is_protocol_id("a b"));
        assert!(!is_protocol_id("."));
        assert!(!is_protocol_id(".."));
        assert!(!is_protocol_id(&"x".repeat(129)));
    }
}

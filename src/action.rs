//! Actions and results (docs/protocol.md §2): actions parsed defensively from
//! whatever the control plane or a pusher sent, results built for reporting.
//!
//! Parsing checks structure only (id, types, timestamps). Whether the
//! integration and event type exist is the engine's question, so that such
//! actions still get a failed result with the matching error code.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::contract::{ErrorCode, MAX_JSON_DEPTH, map_nesting};
use crate::telemetry::traces::TraceParent;

/// A structurally valid action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub id: String,
    pub integration: String,
    pub event_type: String,
    /// Shared with the call made for it (never copied per call).
    #[serde(default)]
    pub params: std::sync::Arc<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub not_after: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub created_at: Option<SystemTime>,
    /// The W3C trace context the action belongs to: a pushed request's
    /// `traceparent` header, or the action's own `traceparent` field. Kept in
    /// the journal with the action, so a resumed action stays in its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
}

/// An action that could not be parsed. `id` is kept when it was a valid id, so
/// a failed result can still be reported for it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid action{}: {reason}", id.as_deref().map(|i| format!(" {i}")).unwrap_or_default())]
pub struct InvalidAction {
    pub id: Option<String>,
    pub reason: String,
}

/// Is `s` a valid action id: 1..128 characters of `[A-Za-z0-9._:-]`.
pub fn valid_action_id(s: &str) -> bool {
    valid_id(s)
}

/// Ids and names: 1-128 characters of `[A-Za-z0-9._:-]` (the action id
/// alphabet), except `.` and `..`, which URLs would read as path steps.
pub fn valid_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

impl Action {
    /// Parses an action from untrusted JSON. Unknown fields are ignored (the
    /// protocol may grow); known fields must have the right shape.
    pub fn from_value(v: &Value) -> Result<Action, InvalidAction> {
        Self::from_json(v.clone())
    }

    /// [`Action::from_value`], taking the value (its strings and params move
    /// into the action rather than being copied).
    pub fn from_json(v: Value) -> Result<Action, InvalidAction> {
        let Value::Object(mut obj) = v else {
            return Err(InvalidAction {
                id: None,
                reason: "an action must be a JSON object".into(),
            });
        };
        let id = match obj.remove("id") {
            Some(Value::String(s)) if valid_action_id(&s) => s,
            Some(Value::String(_)) => {
                return Err(InvalidAction {
                    id: None,
                    reason: "`id` must be 1-128 characters of [A-Za-z0-9._:-], and not `.` or `..`"
                        .into(),
                });
            }
            _ => {
                return Err(InvalidAction {
                    id: None,
                    reason: "`id` is missing or not a string".into(),
                });
            }
        };
        let fail = |reason: String| InvalidAction {
            id: Some(id.clone()),
            reason,
        };
        let mut string = |field: &str| match obj.remove(field) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Ok(s),
            _ => Err(fail(format!(
                "`{field}` must be a non-empty string of at most 256 characters"
            ))),
        };
        let integration = string("integration")?;
        let event_type = string("event_type")?;
        let params = match obj.remove("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(fail("`params` must be a JSON object".into())),
        };
        if map_nesting(&params) > MAX_JSON_DEPTH {
            return Err(fail(format!(
                "`params` nests deeper than {MAX_JSON_DEPTH} levels of arrays and objects"
            )));
        }
        let time = |field: &str| match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => parse_rfc3339(s).map(Some).ok_or_else(|| {
                fail(format!(
                    "`{field}` must be an RFC 3339 date-time, e.g. 2026-11-22T10:00:00Z"
                ))
            }),
            Some(_) => Err(fail(format!(
                "`{field}` must be an RFC 3339 timestamp string"
            ))),
        };
        let not_after = time("not_after")?;
        let created_at = time("created_at")?;
        // Trace context is advisory: an invalid one is ignored, as W3C Trace
        // Context says, and the action gets a trace of its own.
        let traceparent = obj
            .get("traceparent")
            .and_then(Value::as_str)
            .and_then(TraceParent::parse);
        Ok(Action {
            id,
            integration,
            event_type,
            params: std::sync::Arc::new(params),
            not_after,
            created_at,
            traceparent,
        })
    }

    /// The W3C trace id of the action: its trace context's, else derived from
    /// its id (so a retry after a restart stays in the same trace).
    pub fn trace_id(&self) -> String {
        match &self.traceparent {
            Some(tp) => tp.trace_id_hex(),
            None => crate::function::trace_id_for(&self.id),
        }
    }
}

/// `outcome` of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultOutcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultError {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}

/// The function call behind a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub url: String,
    /// Null when no HTTP answer came back (timeout, connection refused).
    pub status: Option<u16>,
    /// Parsed JSON or a string, capped in size.
    pub body: Option<Value>,
    pub latency_ms: u64,
}

/// A result, as reported to the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    pub action_id: String,
    pub outcome: ResultOutcome,
    pub error: Option<ResultError>,
    pub function: Option<FunctionCall>,
    pub attempts: u32,
    pub started_at: String,
    pub finished_at: String,
    pub instance_id: String,
    pub connector_version: String,
    /// The integration's `access_details` (a link to the application the
    /// function manages), on a successful `grant-access` only: where the
    /// requester goes to use what was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_details: Option<String>,
}

/// `connector_version` of every result.
pub const CONNECTOR_VERSION: &str = env!("CARGO_PKG_VERSION");

impl ActionResult {
    /// A failed result for an action that never reached a function (or
    /// whose outcome can no longer be known).
    pub fn failed(
        id: &str,
        code: ErrorCode,
        message: &str,
        started: SystemTime,
        finished: SystemTime,
        instance_id: &str,
    ) -> Self {
        Self {
            action_id: id.to_owned(),
            outcome: ResultOutcome::Failed,
            error: Some(ResultError {
                code,
                message: message.to_owned(),
                retryable: false,
            }),
            function: None,
            attempts: 0,
            started_at: rfc3339(started),
            finished_at: rfc3339(finished),
            instance_id: instance_id.to_owned(),
            connector_version: CONNECTOR_VERSION.to_owned(),
            access_details: None,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.outcome == ResultOutcome::Succeeded
    }
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }
}

/// RFC 3339 in UTC with second precision, as the protocol writes timestamps
/// (any instant from year 0 to 9999, before 1970 included).
pub fn rfc3339(t: SystemTime) -> String {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::from(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH).to_string())
}

/// Any RFC 3339 date-time (`2026-11-22T10:00:00Z`, `2026-11-22T12:00:00.5+02:00`,
/// `0108-03-19T17:13:05.440596Z`), as the instant it names. One without a
/// zone (`2026-11-22T10:00:00`) is read as UTC, as earlier versions did.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    use time::format_description::well_known::Rfc3339;
    let parse = |s: &str| time::OffsetDateTime::parse(s, &Rfc3339).ok();
    parse(s)
        .or_else(|| {
            let zoneless = s.len() >= 19 && s.as_bytes()[s.len() - 1].is_ascii_digit();
            zoneless.then(|| parse(&format!("{s}Z"))).flatten()
        })
        .map(SystemTime::from)
}

mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            super::parse_rfc3339(&s)
                .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn parses_the_protocol_example() {
        let a = Action::from_value(&json!({"id": "act-7f3a", "integration": "orders-db", "event_type": "grant-access",
            "params": {"grant_id": "g-123"}, "not_after": "2026-11-22T10:00:00Z", "created_at": "2026-11-22T09:59:58Z",
            "lease": {"token": "t", "expires_at": "2026-11-22T10:00:00Z"}}))
        .unwrap();
        assert_eq!(a.id, "act-7f3a");
        assert_eq!(rfc3339(a.not_after.unwrap()), "2026-11-22T10:00:00Z");
        let round: Action = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(round, a);
    }

    #[test]
    fn a_traceparent_is_kept_with_the_action_and_a_bad_one_ignored() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let a = Action::from_value(&json!({"id": "a-1", "integration": "i", "event_type": "grant-access", "traceparent": tp}))
            .unwrap();
        assert_eq!(a.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // What the journal stores brings it back.
        let stored = serde_json::to_value(&a).unwrap();
        assert_eq!(stored["traceparent"], tp);
        assert_eq!(serde_json::from_value::<Action>(stored).unwrap(), a);
        // Invalid trace context is ignored (W3C), never a reason to refuse the action.
        for bad in [json!("00-zz-00f067aa0ba902b7-01"), json!(7)] {
            let a = Action::from_value(&json!({"id": "a-2", "integration": "i", "event_type": "grant-access", "traceparent": bad}))
                .unwrap();
            assert_eq!(a.traceparent, None);
            assert_eq!(a.trace_id(), crate::function::trace_id_for("a-2"));
        }
    }

    #[test]
    fn bad_actions_keep_their_id_when_it_is_valid() {
        let err = Action::from_value(
            &json!({"id": "a1", "integration": "x", "event_type": "grant-access", "params": []}),
        )
        .unwrap_err();
        assert_eq!(err.id.as_deref(), Some("a1"));
        let err = Action::from_value(
            &json!({"id": "a1", "integration": "x", "event_type": "e", "not_after": "tomorrow"}),
        )
        .unwrap_err();
        assert!(err.reason.contains("not_after"));
        let err =
            Action::from_value(&json!({"id": "bad id!", "integration": "x", "event_type": "e"}))
                .unwrap_err();
        assert_eq!(err.id, None);
        assert!(Action::from_value(&json!("nope")).is_err());
        assert!(
            Action::from_value(
                &json!({"id": "x".repeat(129), "integration": "x", "event_type": "e"})
            )
            .is_err()
        );
    }

    #[test]
    fn dot_segments_are_not_ids() {
        for id in [".", ".."] {
            let err = Action::from_value(&json!({"id": id, "integration": "x", "event_type": "e"}))
                .unwrap_err();
            assert_eq!(err.id, None);
            assert!(err.reason.contains("not `.` or `..`"));
        }
        assert!(valid_id("..."));
        assert!(valid_id(".a"));
    }

    #[test]
    fn params_nested_too_deep_are_refused_with_the_id_kept() {
        let mut params = json!(1);
        for _ in 0..40 {
            params = json!([params]);
        }
        let err = Action::from_value(
            &json!({"id": "deep", "integration": "x", "event_type": "grant-access",
            "params": {"p": params}}),
        )
        .unwrap_err();
        assert_eq!(err.id.as_deref(), Some("deep"));
        assert!(err.reason.contains("nests deeper"), "{}", err.reason);
    }

    #[test]
    fn every_rfc3339_date_time_is_read_and_written_back_in_utc() {
        for (text, utc) in [
            ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00Z"),
            ("2026-11-22T12:00:00.75+02:00", "2026-11-22T10:00:00Z"),
            ("2026-11-22t10:00:00z", "2026-11-22T10:00:00Z"),
            ("2026-11-22T10:00:00-00:00", "2026-11-22T10:00:00Z"),
            ("2026-11-22T10:00:00", "2026-11-22T10:00:00Z"), // no zone: UTC, as before
            ("0108-03-19T17:13:05.440596Z", "0108-03-19T17:13:05Z"),
            ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00Z"),
            ("9999-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59Z"),
        ] {
            let t = parse_rfc3339(text).unwrap_or_else(|| panic!("{text} is RFC 3339"));
            assert_eq!(rfc3339(t), utc, "{text}");
        }
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T10:00Z",
            "yesterday",
            "2026-11-22T10:00:00+25:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn timestamps_never_panic(s in "[0-9T:.Zz+-]{0,40}") {
            if let Some(t) = parse_rfc3339(&s) {
                // Whatever it read, it can write, and read back.
                prop_assert!(parse_rfc3339(&rfc3339(t)).is_some());
            }
        }

        #[test]
        fn parsing_never_panics(id in ".{0,140}", integration in ".{0,20}", na in ".{0,30}") {
            let _ = Action::from_value(&json!({"id": id, "integration": integration, "event_type": "grant-access", "not_after": na}));
        }

        #[test]
        fn valid_ids_are_accepted(id in "[A-Za-z0-9._:-]{1,128}".prop_filter("dot segments", |s| s != "." && s != "..")) {
            let a = Action::from_value(&json!({"id": id, "integration": "i", "event_type": "e"})).unwrap();
            prop_assert_eq!(a.id, id);
        }
    }
}

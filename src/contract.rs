//! The function contract's vocabulary (docs/protocol.md §1–§2): event types, the
//! params each requires, the request body, error codes, and response bodies.
//!
//! It must stay wire-compatible with Apono's custom-integration functions:
//! names and shapes here are the protocol, not ours to rename.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The operations a function implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventType {
    GetStatus,
    ListResources,
    ListResourcesTags,
    CreateCredentials,
    ResetCredentials,
    DeleteCredentials,
    GrantAccess,
    RevokeAccess,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        Self::GetStatus,
        Self::ListResources,
        Self::ListResourcesTags,
        Self::CreateCredentials,
        Self::ResetCredentials,
        Self::DeleteCredentials,
        Self::GrantAccess,
        Self::RevokeAccess,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetStatus => "get-status",
            Self::ListResources => "list-resources",
            Self::ListResourcesTags => "list-resources-tags",
            Self::CreateCredentials => "create-credentials",
            Self::ResetCredentials => "reset-credentials",
            Self::DeleteCredentials => "delete-credentials",
            Self::GrantAccess => "grant-access",
            Self::RevokeAccess => "revoke-access",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Params this event requires: (name, kind).
    fn required(self) -> &'static [(&'static str, Kind)] {
        use Kind::*;
        match self {
            Self::GetStatus | Self::ListResourcesTags => &[],
            Self::ListResources => &[("resource_type", Str)],
            Self::CreateCredentials | Self::ResetCredentials | Self::DeleteCredentials => &[
                ("username", Str),
                ("resource_type", Str),
                ("resources", StrList),
            ],
            Self::GrantAccess | Self::RevokeAccess => &[
                ("grant_id", Str),
                ("username", Str),
                ("resource_type", Str),
                ("resources", StrList),
                ("permission", Str),
            ],
        }
    }

    /// Whether the response may carry credentials (relayed, never logged).
    pub fn carries_credentials(self) -> bool {
        matches!(self, Self::CreateCredentials | Self::ResetCredentials)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    StrList,
}

/// Why an action's params do not fit its event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("{event} requires `params.{name}` to be {want}")]
    Missing {
        event: EventType,
        name: &'static str,
        want: &'static str,
    },
    #[error("`params.custom_parameters` comes from the connector's configuration, not the action")]
    CustomParameters,
}

/// Checks the params an event requires. Extra params are passed through.
pub fn validate_params(event: EventType, params: &Map<String, Value>) -> Result<(), ParamsError> {
    for (name, kind) in event.required() {
        let ok = match (kind, params.get(*name)) {
            (Kind::Str, Some(Value::String(s))) => !s.is_empty(),
            (Kind::StrList, Some(Value::Array(items))) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            let want = match kind {
                Kind::Str => "a non-empty string",
                Kind::StrList => "an array of strings",
            };
            return Err(ParamsError::Missing { event, name, want });
        }
    }
    if params.get("custom_parameters").is_some() {
        return Err(ParamsError::CustomParameters);
    }
    Ok(())
}

/// The request body: the action's params with the integration's custom
/// parameters, as JSON bytes (serialized once per call, resent as is on a retry).
pub fn request_body(
    event: EventType,
    params: &Map<String, Value>,
    custom_parameters: &Map<String, Value>,
) -> bytes::Bytes {
    let body = RequestBody {
        event_type: event.as_str(),
        params: Params {
            params,
            custom_parameters,
        },
    };
    // Exactly its length: the body is kept for the whole call (a retry
    // resends it), and a grown buffer's spare half would be kept with it.
    serde_json::to_vec(&body)
        .expect("JSON values always serialize")
        .into_boxed_slice()
        .into()
}

/// `{"event_type", "params"}`, borrowing what it sends.
#[derive(Serialize)]
struct RequestBody<'a> {
    event_type: &'a str,
    params: Params<'a>,
}

/// The action's params with `custom_parameters` in its sorted place (the
/// integration's, replacing any the action sent), as one JSON object.
struct Params<'a> {
    params: &'a Map<String, Value>,
    custom_parameters: &'a Map<String, Value>,
}

impl Serialize for Params<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        const KEY: &str = "custom_parameters";
        let mut map = s.serialize_map(None)?;
        let mut custom_done = false;
        for (k, v) in self.params {
            if !custom_done && k.as_str() >= KEY {
                map.serialize_entry(KEY, self.custom_parameters)?;
                custom_done = true;
            }
            if k != KEY {
                map.serialize_entry(k, v)?;
            }
        }
        if !custom_done {
            map.serialize_entry(KEY, self.custom_parameters)?;
        }
        map.end()
    }
}

/// Error codes of a failed result (docs/protocol.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidAction,
    UnknownIntegration,
    UnsupportedEventType,
    Expired,
    Credentials,
    PermissionDenied,
    FunctionError,
    FunctionUnavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidAction => "invalid_action",
            Self::UnknownIntegration => "unknown_integration",
            Self::UnsupportedEventType => "unsupported_event_type",
            Self::Expired => "expired",
            Self::Credentials => "credentials",
            Self::PermissionDenied => "permission_denied",
            Self::FunctionError => "function_error",
            Self::FunctionUnavailable => "function_unavailable",
            Self::Internal => "internal",
        }
    }
}

/// A function's response body: parsed JSON, or text when it is not JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Body {
    Json(Value),
    Text(String),
}

/// The deepest nesting of JSON arrays and objects grantbridge accepts from
/// outside (function answers, action params). Whatever it stores embeds such
/// a value a few levels deeper, and must stay well inside serde_json's
/// recursion limit (128) to be read back.
pub const MAX_JSON_DEPTH: usize = 32;

impl Body {
    /// A function's answer: JSON when it parses and nests at most
    /// [`MAX_JSON_DEPTH`] levels, else the text as received.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let parsed = (json_nesting(bytes) <= MAX_JSON_DEPTH)
            .then(|| serde_json::from_slice(bytes).ok())
            .flatten();
        Some(match parsed {
            Some(v) => Self::Json(v),
            None => Self::Text(String::from_utf8_lossy(bytes).into_owned()),
        })
    }
}

/// How deeply `bytes` nest JSON arrays and objects (0 for a scalar), counted
/// by a scan that ignores brackets inside strings. Not a validator: it only
/// bounds what a parser would have to recurse through.
pub fn json_nesting(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// How deeply a parsed value nests arrays and objects (0 for a scalar),
/// without recursion.
pub fn value_nesting(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(a) => {
                deepest = deepest.max(depth + 1);
                stack.extend(a.iter().map(|c| (c, depth + 1)));
            }
            Value::Object(o) => {
                deepest = deepest.max(depth + 1);
                stack.extend(o.values().map(|c| (c, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// [`value_nesting`] of `map` as a JSON object, without making it one.
pub fn map_nesting(map: &Map<String, Value>) -> usize {
    1 + map.values().map(value_nesting).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nesting_is_counted_outside_strings() {
        assert_eq!(json_nesting(b"1"), 0);
        assert_eq!(json_nesting(br#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_nesting(br#"{"a":"[[[[\"]]]]"}"#), 1);
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(json_nesting(deep.as_bytes()), 1000);
        let v: Value = serde_json::from_str(r#"{"a":[1,{"b":[]}]}"#).unwrap();
        assert_eq!(value_nesting(&v), 4);
        assert_eq!(value_nesting(&json!(3)), 0);
        for m in [json!({}), json!({"a":1}), json!({"a":[1,{"b":[]}],"c":{}})] {
            assert_eq!(map_nesting(m.as_object().unwrap()), value_nesting(&m));
        }
    }

    #[test]
    fn a_body_nested_too_deep_is_kept_as_the_text_received() {
        let ok = format!(
            "{{\"status\":\"ok\",\"x\":{}1{}}}",
            "[".repeat(30),
            "]".repeat(30)
        );
        assert!(matches!(
            Body::from_bytes(ok.as_bytes()),
            Some(Body::Json(_))
        ));
        let deep = format!(
            "{{\"status\":\"ok\",\"x\":{}1{}}}",
            "[".repeat(125),
            "]".repeat(125)
        );
        match Body::from_bytes(deep.as_bytes()) {
            Some(Body::Text(t)) => assert_eq!(t, deep),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn event_types_round_trip() {
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()), Some(e));
            assert_eq!(serde_json::to_value(e).unwrap(), json!(e.as_str()));
        }
        assert_eq!(EventType::parse("grant"), None);
    }

    #[test]
    fn params_are_checked_per_event() {
        let grant = json!({"grant_id":"g","username":"u","resource_type":"db","resources":["a"],"permission":"read"});
        assert!(validate_params(EventType::GrantAccess, grant.as_object().unwrap()).is_ok());
        let err = validate_params(
            EventType::GrantAccess,
            json!({"grant_id":"g"}).as_object().unwrap(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ParamsError::Missing {
                name: "username",
                ..
            }
        ));
        assert!(err.to_string().contains("params.username"));
        let err = validate_params(EventType::RevokeAccess, json!({"grant_id":"g","username":"u","resource_type":"db","resources":[1],"permission":"r"}).as_object().unwrap()).unwrap_err();
        assert!(matches!(
            err,
            ParamsError::Missing {
                name: "resources",
                want: "an array of strings",
                ..
            }
        ));
        assert!(validate_params(EventType::GetStatus, &Map::new()).is_ok());
        assert!(
            validate_params(
                EventType::GetStatus,
                json!({"custom_parameters":{}}).as_object().unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn body_adds_custom_parameters() {
        let params = json!({"resource_type":"db"});
        let custom = json!({"param1":"x"});
        let body = request_body(
            EventType::ListResources,
            params.as_object().unwrap(),
            custom.as_object().unwrap(),
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"event_type":"list-resources","params":{"resource_type":"db","custom_parameters":{"param1":"x"}}})
        );
    }

    #[test]
    fn the_body_is_the_json_a_value_would_give_byte_for_byte() {
        // custom_parameters sorts in its place, and replaces one the action sent.
        for params in [
            json!({}),
            json!({"a":1,"z":[1,{"b":"\u{e9}\"q"}]}),
            json!({"custom_parameters":{"from":"the action"},"zz":null}),
            json!({"custom_parameters_x":1,"custom":2,"custom_parameters":3}),
        ] {
            let custom = json!({"param1":"x","n":{"deep":[true]}});
            let mut merged = params.as_object().unwrap().clone();
            merged.insert("custom_parameters".into(), custom.clone());
            let expected =
                serde_json::to_vec(&json!({"event_type":"grant-access","params":merged})).unwrap();
            let body = request_body(
                EventType::GrantAccess,
                params.as_object().unwrap(),
                custom.as_object().unwrap(),
            );
            assert_eq!(body, expected, "{}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn bodies_parse_as_json_or_text() {
        assert_eq!(
            Body::from_bytes(b"{\"status\":\"ok\"}"),
            Some(Body::Json(json!({"status":"ok"})))
        );
        assert_eq!(
            Body::from_bytes(b"<html>"),
            Some(Body::Text("<html>".into()))
        );
        assert_eq!(Body::from_bytes(b"  \n"), None);
    }
}

//! The outcome rules of docs/protocol.md §1, as a pure function of one HTTP answer:
//! 2xx succeeds unless its JSON `status` is present and not "ok"; 408/429/5xx
//! are retryable; 401/403 are permission failures; other 4xx are permanent.
//!
//! It must not perform I/O; the invoker feeds it what came back. Its messages
//! never quote an error answer's body (it may carry secrets; the body stays in
//! the result): only a 2xx's own `message`, the function's declared reason.

use std::time::Duration;

use serde_json::Value;

use crate::contract::{Body, ErrorCode};

/// What one attempt's answer means.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    Success,
    /// Try again (after `retry_after` when the server said so).
    Retry {
        code: ErrorCode,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Do not try again.
    Fail {
        code: ErrorCode,
        message: String,
    },
}

/// Classifies an HTTP answer. `who` names the service account and audience used,
/// for permission failures.
pub fn classify(
    status: u16,
    body: Option<&Body>,
    retry_after: Option<Duration>,
    who: &str,
) -> Disposition {
    match status {
        200..=299 => match body {
            Some(Body::Json(Value::Object(obj))) => match obj.get("status") {
                None => Disposition::Success,
                Some(Value::String(s)) if s == "ok" => Disposition::Success,
                Some(other) => {
                    let detail = obj
                        .get("message")
                        .or_else(|| obj.get("error"))
                        .map(|m| {
                            m.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| m.to_string())
                        })
                        .unwrap_or_else(|| format!("status {other}"));
                    Disposition::Fail {
                        code: ErrorCode::FunctionError,
                        message: format!("function reported failure: {}", truncate(&detail, 500)),
                    }
                }
            },
            _ => Disposition::Success,
        },
        408 | 429 | 500 | 502 | 503 | 504 => Disposition::Retry {
            code: ErrorCode::FunctionUnavailable,
            message: format!("function answered HTTP {status}{}", body_note(body)),
            retry_after,
        },
        401 | 403 => Disposition::Fail {
            code: ErrorCode::PermissionDenied,
            message: format!(
                "function answered HTTP {status}: the front end refused {who}. Grant that account the invoker role: 1st gen, roles/cloudfunctions.invoker on the function (gcloud functions add-iam-policy-binding FUNCTION --member=serviceAccount:EMAIL --role=roles/cloudfunctions.invoker); 2nd gen, roles/run.invoker on its Cloud Run service (gcloud functions add-invoker-policy-binding FUNCTION --member=serviceAccount:EMAIL). Check that the audience is the function URL (2nd gen: its run.app URL); or no function is deployed at that URL (a 1st gen front end answers that with 403 too: `grantbridge functions list`)"
            ),
        },
        _ => Disposition::Fail {
            code: ErrorCode::FunctionError,
            message: format!("function answered HTTP {status}{}", body_note(body)),
        },
    }
}

/// The size of an error answer's body, never its content: an error page may
/// carry what the function was handling (a password it generated). The body
/// itself stays in the result's `function.body`.
fn body_note(body: Option<&Body>) -> String {
    let len = match body {
        None => return String::new(),
        Some(Body::Text(t)) => t.len(),
        Some(Body::Json(v)) => v.to_string().len(),
    };
    format!(" with a {len}-byte body (in the result's function.body)")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn j(v: Value) -> Option<Body> {
        Some(Body::Json(v))
    }

    #[test]
    fn success_unless_status_says_otherwise() {
        assert_eq!(
            classify(200, j(json!({"status":"ok"})).as_ref(), None, ""),
            Disposition::Success
        );
        assert_eq!(classify(204, None, None, ""), Disposition::Success);
        assert_eq!(
            classify(200, j(json!({"resources":[]})).as_ref(), None, ""),
            Disposition::Success
        );
        assert_eq!(
            classify(200, Some(&Body::Text("done".into())), None, ""),
            Disposition::Success
        );
        assert_eq!(
            classify(200, j(json!([1, 2])).as_ref(), None, ""),
            Disposition::Success
        );
        match classify(
            200,
            j(json!({"status":"error","message":"no such user"})).as_ref(),
            None,
            "",
        ) {
            Disposition::Fail {
                code: ErrorCode::FunctionError,
                message,
            } => assert!(message.contains("no such user")),
            other => panic!("{other:?}"),
        }
        match classify(
            200,
            j(json!({"status":"failed","error":"boom"})).as_ref(),
            None,
            "",
        ) {
            Disposition::Fail { message, .. } => assert!(message.contains("boom")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(200, j(json!({"status":null})).as_ref(), None, ""),
            Disposition::Fail { .. }
        ));
    }

    #[test]
    fn retryable_statuses_keep_retry_after() {
        for s in [408, 429, 500, 502, 503, 504] {
            match classify(s, None, Some(Duration::from_secs(3)), "") {
                Disposition::Retry {
                    code: ErrorCode::FunctionUnavailable,
                    retry_after,
                    ..
                } => assert_eq!(retry_after, Some(Duration::from_secs(3))),
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn permission_failures_name_the_account_and_the_role() {
        for s in [401, 403] {
            match classify(
                s,
                None,
                None,
                "service account gb@p.iam.gserviceaccount.com with audience https://f",
            ) {
                Disposition::Fail {
                    code: ErrorCode::PermissionDenied,
                    message,
                } => {
                    assert!(
                        message.contains("gb@p.iam.gserviceaccount.com")
                            && message.contains("roles/cloudfunctions.invoker")
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_error_body_is_never_quoted() {
        let secret = j(json!({"password": "hunter2-secret", "error": "boom"}));
        for s in [400, 404, 500, 503] {
            let (Disposition::Fail { message, .. } | Disposition::Retry { message, .. }) =
                classify(s, secret.as_ref(), None, "")
            else {
                panic!("{s} is not a success")
            };
            assert!(!message.contains("hunter2"), "{s}: {message}");
            assert!(message.contains("-byte body"), "{s}: {message}");
        }
    }

    #[test]
    fn other_4xx_and_3xx_are_permanent() {
        for s in [301, 400, 404, 409, 413, 501] {
            assert!(
                matches!(
                    classify(s, None, None, ""),
                    Disposition::Fail {
                        code: ErrorCode::FunctionError,
                        ..
                    }
                ),
                "{s}"
            );
        }
    }
}

//! Invoking functions through the sandbox's Cloud Functions front end: the
//! request as docs/protocol.md §1 specifies it, and every outcome class.

use std::time::{Duration, Instant, SystemTime};

use grantbridge::contract::{Body, ErrorCode, EventType};
use grantbridge::function::{Call, Outcome};
use grantbridge_sandbox::Faults;
use grantbridge_sandbox::daemon_config::{DaemonConfig, Integration};
use serde_json::json;

use crate::helpers::{SA, grant_call, invoke, spawn_env};

fn failed_code(outcome: &Outcome) -> ErrorCode {
    match outcome {
        Outcome::Failed { code, .. } => *code,
        Outcome::Succeeded => panic!("expected a failure"),
    }
}

/// A 2nd gen function, called at its Cloud Run URL and at its
/// cloudfunctions.net URL: at both, the token's audience is its Cloud Run
/// URL (the default for a run.app `url`; set explicitly for the other).
#[tokio::test]
async fn a_second_gen_function_is_invoked_at_either_url_with_its_run_audience() {
    let env = spawn_env().await;
    let run = env
        .sandbox
        .deploy_gen2_function(
            "grant-crm",
            grantbridge_sandbox::FunctionImpl::Sample,
            &[SA],
        )
        .await
        .unwrap();
    let config = env
        .config(&[
            ("at-run", "grant-crm"),
            ("at-cf", "grant-crm"),
            ("wrong", "grant-crm"),
        ])
        .set("integrations.at-run.url", run.as_str())
        .set("integrations.at-run.generation", 2)
        .set("integrations.at-cf.generation", 2)
        .set("integrations.at-cf.audience", run.as_str());
    let google = env.services(&config);
    for integration in ["at-run", "at-cf"] {
        let report = invoke(&google, integration, &grant_call("act-1")).await;
        assert_eq!(
            report.outcome,
            Outcome::Succeeded,
            "{integration}: {report:?}"
        );
    }
    assert_eq!(env.sandbox.invocations("grant-crm").len(), 2);
    // The cloudfunctions.net URL as audience is refused by Cloud Run.
    let report = invoke(&google, "wrong", &grant_call("act-2")).await;
    assert_eq!(failed_code(&report.outcome), ErrorCode::PermissionDenied);
    match &report.outcome {
        Outcome::Failed { message, .. } => {
            assert!(message.contains("roles/run.invoker"), "{message}")
        }
        Outcome::Succeeded => unreachable!(),
    }
}

#[tokio::test]
async fn a_grant_sends_the_contract_request() {
    let env = spawn_env().await;
    let url = env.deploy("grant-db");
    let google = env.services(&env.config(&[("orders-db", "grant-db")]));
    let report = invoke(&google, "orders-db", &grant_call("act-1")).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!((report.status, report.attempts), (Some(200), 1));
    assert_eq!(report.body, Some(Body::Json(json!({"status": "ok"}))));
    assert_eq!(report.url, url);

    let calls = env.sandbox.invocations("grant-db");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.caller_email.as_deref(), Some(SA));
    assert_eq!(call.idempotency_key.as_deref(), Some("act-1"));
    assert_eq!(call.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        call.user_agent.as_deref(),
        Some(concat!("grantbridge/", env!("CARGO_PKG_VERSION")))
    );
    let tp = call.traceparent.as_deref().unwrap();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", report.trace_id.as_str(), "01"),
        "{tp}"
    );
    assert_eq!(parts[2].len(), 16);
    assert_eq!(
        call.body,
        json!({"event_type": "grant-access", "params": {
            "grant_id": "g-1", "username": "alice@example.com", "resource_type": "db",
            "resources": ["orders"], "permission": "read",
            "custom_parameters": {"param1": "x", "nested": {"a": 1}}}})
    );
}

#[tokio::test]
async fn list_resources_answers_come_back_intact() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let google = env.services(&env.config(&[("orders-db", "grant-db")]));
    let call = Call {
        trace_id: None,
        sampled: true,
        event_type: EventType::ListResources,
        params: json!({"resource_type": "db"})
            .as_object()
            .unwrap()
            .clone()
            .into(),
        idempotency_key: "act-list".into(),
        not_after: None,
    };
    let report = invoke(&google, "orders-db", &call).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    let Some(Body::Json(body)) = report.body else {
        panic!("{:?}", report.body)
    };
    assert_eq!(body["resources"][0]["type"], "db");
    assert!(body["permissions"].as_array().unwrap().len() >= 2);
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_idempotency_key_and_trace() {
    let env = spawn_env().await;
    env.deploy("flaky");
    env.sandbox.set_faults(
        "flaky",
        Faults {
            fail_next: (2, 503),
            ..Default::default()
        },
    );
    let google = env.services(&env.config(&[("flaky", "flaky")]));
    let report = invoke(&google, "flaky", &grant_call("act-flaky")).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.attempts, 3);
    let calls = env.sandbox.invocations("flaky");
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    assert!(
        calls
            .iter()
            .all(|c| c.idempotency_key.as_deref() == Some("act-flaky"))
    );
    let trace = |c: &grantbridge_sandbox::Invocation| {
        c.traceparent
            .clone()
            .unwrap()
            .split('-')
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert!(
        calls.iter().all(|c| trace(c) == report.trace_id),
        "one trace for the action"
    );
    // One token served all three attempts.
    assert_eq!(env.sandbox.id_tokens_minted(SA), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let env = spawn_env().await;
    env.deploy("throttled");
    env.sandbox.set_faults(
        "throttled",
        Faults {
            throttle_next: (1, 2),
            ..Default::default()
        },
    );
    let google = env.services(&env.config(&[("throttled", "throttled")]));
    let started = Instant::now();
    let report = invoke(&google, "throttled", &grant_call("act-429")).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.attempts, 2);
    // Backoff here is at most 50 ms: only Retry-After: 2 explains a 2 s pause.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn attempts_are_bounded_by_max_attempts() {
    let env = spawn_env().await;
    env.deploy("down");
    env.sandbox.set_faults(
        "down",
        Faults {
            fail_next: (100, 502),
            ..Default::default()
        },
    );
    let google = env.services(
        &env.config(&[("down", "down")])
            .every_integration("max_attempts", 3),
    );
    let report = invoke(&google, "down", &grant_call("act-down")).await;
    assert_eq!(failed_code(&report.outcome), ErrorCode::FunctionUnavailable);
    assert!(matches!(
        report.outcome,
        Outcome::Failed {
            retryable: true,
            ..
        }
    ));
    assert_eq!(report.attempts, 3);
    assert_eq!(env.sandbox.invocations("down").len(), 3);
}

#[tokio::test]
async fn not_an_invoker_is_a_permission_failure_naming_account_audience_and_role() {
    let env = spawn_env().await;
    let url = env.sandbox.deploy_function(
        "locked",
        grantbridge_sandbox::FunctionImpl::Sample,
        &["someone-else@p.iam.gserviceaccount.com"],
    );
    let google = env.services(&env.config(&[("locked", "locked")]));
    let report = invoke(&google, "locked", &grant_call("act-403")).await;
    let Outcome::Failed {
        code,
        message,
        retryable,
    } = &report.outcome
    else {
        panic!()
    };
    assert_eq!(
        (*code, *retryable, report.status, report.attempts),
        (ErrorCode::PermissionDenied, false, Some(403), 1)
    );
    assert!(
        message.contains(SA)
            && message.contains(&url)
            && message.contains("roles/cloudfunctions.invoker"),
        "{message}"
    );
}

#[tokio::test]
async fn a_wrong_audience_is_refused_by_the_front_end() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let google = env.services(
        &env.config(&[("wrong-aud", "grant-db")])
            .every_integration("audience", "https://elsewhere.example/x"),
    );
    let report = invoke(&google, "wrong-aud", &grant_call("act-401")).await;
    assert_eq!(failed_code(&report.outcome), ErrorCode::PermissionDenied);
    assert_eq!(report.status, Some(401));
    assert!(
        env.sandbox.invocations("grant-db").is_empty(),
        "the function never ran"
    );
}

#[tokio::test]
async fn a_status_other_than_ok_in_a_2xx_body_is_a_function_error() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    env.sandbox.set_faults(
        "grant-db",
        Faults {
            respond_next: (
                1,
                200,
                r#"{"status":"error","message":"no such user"}"#.into(),
            ),
            ..Default::default()
        },
    );
    let google = env.services(&env.config(&[("orders-db", "grant-db")]));
    let report = invoke(&google, "orders-db", &grant_call("act-err")).await;
    let Outcome::Failed {
        code,
        message,
        retryable,
    } = &report.outcome
    else {
        panic!()
    };
    assert_eq!(
        (*code, *retryable, report.attempts),
        (ErrorCode::FunctionError, false, 1)
    );
    assert!(message.contains("no such user"));
}

#[tokio::test]
async fn other_4xx_are_permanent() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    env.sandbox.set_faults(
        "grant-db",
        Faults {
            respond_next: (1, 400, r#"{"error":"bad params"}"#.into()),
            ..Default::default()
        },
    );
    let google = env.services(&env.config(&[("orders-db", "grant-db")]));
    let report = invoke(&google, "orders-db", &grant_call("act-400")).await;
    assert_eq!(failed_code(&report.outcome), ErrorCode::FunctionError);
    assert_eq!(report.attempts, 1);
}

#[tokio::test]
async fn a_hanging_function_times_out_and_is_retryable() {
    let env = spawn_env().await;
    env.deploy("slow");
    env.sandbox.set_faults(
        "slow",
        Faults {
            hang_next: 5,
            ..Default::default()
        },
    );
    let google = env.services(
        &env.config(&[("slow", "slow")])
            .every_integration("timeout", "1s")
            .every_integration("max_attempts", 2),
    );
    let report = invoke(&google, "slow", &grant_call("act-hang")).await;
    let Outcome::Failed {
        code,
        message,
        retryable,
    } = &report.outcome
    else {
        panic!()
    };
    assert_eq!(
        (*code, *retryable, report.attempts),
        (ErrorCode::FunctionUnavailable, true, 2)
    );
    assert!(
        message.contains("no answer within the 1s timeout"),
        "{message}"
    );
}

#[tokio::test]
async fn not_after_in_the_past_means_no_call() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let google = env.services(&env.config(&[("orders-db", "grant-db")]));
    let mut call = grant_call("act-late");
    call.not_after = Some(SystemTime::now() - Duration::from_secs(1));
    let report = invoke(&google, "orders-db", &call).await;
    assert_eq!(failed_code(&report.outcome), ErrorCode::Expired);
    assert_eq!(report.attempts, 0);
    assert!(env.sandbox.invocations("grant-db").is_empty());
}

#[tokio::test]
async fn not_after_stops_retries() {
    let env = spawn_env().await;
    env.deploy("throttled");
    env.sandbox.set_faults(
        "throttled",
        Faults {
            throttle_next: (5, 30),
            ..Default::default()
        },
    );
    let google = env.services(&env.config(&[("throttled", "throttled")]));
    let mut call = grant_call("act-deadline");
    call.not_after = Some(SystemTime::now() + Duration::from_secs(5));
    let started = Instant::now();
    let report = invoke(&google, "throttled", &call).await;
    let Outcome::Failed { message, .. } = &report.outcome else {
        panic!()
    };
    assert!(message.contains("not_after"), "{message}");
    assert_eq!(report.attempts, 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait out a Retry-After past not_after"
    );
}

#[tokio::test]
async fn responses_over_the_limit_are_refused() {
    let env = spawn_env().await;
    env.deploy("big");
    env.sandbox.set_faults(
        "big",
        Faults {
            respond_next: (1, 200, "x".repeat(4096)),
            ..Default::default()
        },
    );
    let toml = env
        .config(&[("big", "big")])
        .set("http.max_response_bytes", 1024);
    let google = env.services(&toml);
    let report = invoke(&google, "big", &grant_call("act-big")).await;
    let Outcome::Failed { code, message, .. } = &report.outcome else {
        panic!()
    };
    assert_eq!(*code, ErrorCode::FunctionError);
    assert!(message.contains("1024-byte limit"), "{message}");
}

#[tokio::test]
async fn redirects_are_never_followed() {
    use axum::{Router, http::StatusCode, response::IntoResponse, routing::any};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A function that redirects to a URL that is not in the configuration.
    let elsewhere_hits = Arc::new(AtomicUsize::new(0));
    let hits = elsewhere_hits.clone();
    let app = Router::new()
        .route(
            "/fn",
            any(|| async { (StatusCode::FOUND, [("location", "/elsewhere")]).into_response() }),
        )
        .route(
            "/elsewhere",
            any(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { "leaked" }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let env = spawn_env().await;
    let toml = DaemonConfig::new("t")
        .key_file_connection("prod", &env.key_file)
        .integration(
            "r",
            Integration::new(
                "prod",
                "sandbox-project",
                "fn",
                &format!("http://{addr}/fn"),
            ),
        );
    let google = env.services(&toml);
    let report = invoke(&google, "r", &grant_call("act-redirect")).await;
    assert_eq!(failed_code(&report.outcome), ErrorCode::FunctionError);
    assert_eq!(report.status, Some(302));
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0);
}

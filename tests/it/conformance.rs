//! The push API against its own contract: schemathesis (PyPI) generates
//! requests from docs/openapi.yaml, valid and invalid, sends them signed to
//! a real daemon in push mode (tests/conformance/push_hooks.py), and checks
//! every answer against the document: no server error, every status code,
//! header and body as documented, valid input accepted and invalid refused.

use std::path::Path;

use serde_json::json;

use grantbridge_sandbox::daemon_config::DaemonConfig;

use crate::helpers::{PUSH_SECRET, RunningDaemon, TestEnv, spawn_env};

/// Push mode without a control plane, its journal in the test's directory.
fn push_only(env: &TestEnv) -> DaemonConfig {
    env.with_push(env.config(&[("orders-db", "grant-db")]))
        .journal(&env.dir.path().join("journal.db"))
        .admin()
}

#[tokio::test]
async fn the_push_api_answers_as_its_openapi_document_says() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let config = push_only(&env);
    let daemon = RunningDaemon::start(&env, &config).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let url = format!("http://{}", daemon.push_addr.unwrap());
    let out = tokio::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "run"])
        .arg(root.join("docs/openapi.yaml"))
        .args(["--url", &url])
        // The connector's own endpoints; the rest of the document is the control plane's.
        .args(["--include-path-regex", "^/v1/actions"])
        .args(["--checks", "all"])
        // Explicit credentials, signed by the hook (see push_hooks.py).
        .args(["-H", "X-Grantbridge-Signature: sign-me"])
        .args(["-H", "X-Grantbridge-Timestamp: 0"])
        .args(["--max-examples", "60"])
        .args(["--generation-deterministic", "--no-color"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .env("SCHEMATHESIS_HOOKS", "push_hooks")
        .env("PYTHONPATH", root.join("tests/conformance"))
        .env("GRANTBRIDGE_TEST_PUSH_SECRET", PUSH_SECRET)
        .current_dir(env.dir.path())
        .output()
        .await
        .expect("python3 -m schemathesis runs (pip install -r tests/interop/requirements.txt)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.stop().await;
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    // It did test the connector's endpoints (a filter typo would test nothing).
    assert!(
        report.contains("Tested: 2") && report.contains("No issues found"),
        "{report}"
    );
}

/// What schemathesis found first: values the document allows were refused.
#[tokio::test]
async fn every_rfc3339_date_time_and_unknown_fields_are_accepted() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let config = push_only(&env);
    let daemon = RunningDaemon::start(&env, &config).await;
    for (id, not_after, outcome) in [
        // Year 108 with fractional seconds: long past, so the action expires.
        ("old-1", "0108-03-19T17:13:05.440596Z", "expired"),
        // Any offset names an instant (here far in the future).
        ("offset-1", "2999-01-01T12:00:00.5+05:30", "succeeded"),
        ("lower-1", "2999-01-01t12:00:00z", "succeeded"),
    ] {
        let mut body = crate::helpers::action(id, "orders-db");
        body["not_after"] = not_after.into();
        body["created_at"] = "1970-01-01T00:00:00-00:00".into();
        // Fields the schema does not forbid are ignored, at the top and nested.
        body["x-vendor"] = json!({"nested": [1, {"deep": true}]});
        body["params"]["extra_param"] = "kept for the function".into();
        let r = daemon
            .signed("POST", "/v1/actions?wait=30", &body.to_string(), 0)
            .await;
        assert_eq!(r.status(), 200, "{id}: {}", r.text().await.unwrap());
        let result: serde_json::Value = r.json().await.unwrap();
        let got = if result["outcome"] == "succeeded" {
            "succeeded"
        } else {
            result["error"]["code"].as_str().unwrap()
        };
        assert_eq!(got, outcome, "{id}: {result}");
    }
    daemon.stop().await;
}

/// The stateful check the issue asks for: pushing twice and fetching agree
/// with each other and with the journal.
#[tokio::test]
async fn a_repeated_push_and_a_fetch_agree_with_each_other_and_the_journal() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let config = push_only(&env);
    let daemon = RunningDaemon::start(&env, &config).await;
    let body = crate::helpers::action("twice-1", "orders-db").to_string();
    let first = daemon.signed("POST", "/v1/actions?wait=30", &body, 0).await;
    assert_eq!(first.status(), 200);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = daemon.signed("POST", "/v1/actions", &body, 0).await;
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    let fetched = daemon.signed("GET", "/v1/actions/twice-1", "", 0).await;
    assert_eq!(fetched.status(), 200);
    let fetched: serde_json::Value = fetched.json().await.unwrap();
    assert_eq!(again["status"], "succeeded");
    assert_eq!(
        again["result"], first,
        "the second push answers the first result"
    );
    assert_eq!(fetched, again, "a fetch answers what a repeated push does");
    let stored = daemon
        .engine
        .journal()
        .state("twice-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serde_json::to_value(stored.result.unwrap()).unwrap(), first);
    assert_eq!(
        env.sandbox.invocations("grant-db").len(),
        1,
        "invoked once: {first}"
    );
    daemon.stop().await;
}

//! The connector attacked on its boundaries (issue: security): each test is a
//! regression test for one finding, run against the real daemon and
//! listeners. Denial-of-service bounds are generous, for a noisy 2-core machine.

use std::time::Duration;

use grantbridge_sandbox::Faults;
use serde_json::{Value, json};

use crate::helpers::{RunningDaemon, action, spawn_control_plane, spawn_env};

const WAIT: Duration = Duration::from_secs(60);

/// A function answers valid JSON nested 126 levels deep. It is stored as the
/// text it was, every query answers, and later results still reach the
/// control plane.
#[tokio::test]
async fn a_deeply_nested_answer_never_poisons_the_journal() {
    let env = spawn_env().await;
    env.deploy("deep");
    env.deploy("grant-db");
    let deep = format!(
        "{{\"status\":\"ok\",\"x\":{}1{}}}",
        "[".repeat(125),
        "]".repeat(125)
    );
    env.sandbox.set_faults(
        "deep",
        Faults {
            respond_next: (1, 200, deep.clone()),
            ..Default::default()
        },
    );
    let cp = spawn_control_plane().await;
    let daemon = RunningDaemon::start(
        &env,
        &env.with_push(env.daemon_config(&cp, &[("deep", "deep"), ("orders-db", "grant-db")])),
    )
    .await;

    let answer = daemon
        .signed(
            "POST",
            "/v1/actions?wait=20",
            &action("deep-1", "deep").to_string(),
            0,
        )
        .await;
    assert_eq!(answer.status(), 200);
    let result: Value = answer.json().await.unwrap();
    assert_eq!(result["outcome"], "succeeded", "{result}");
    assert_eq!(result["function"]["body"], Value::String(deep.clone()));

    let status = daemon.signed("GET", "/v1/actions/deep-1", "", 0).await;
    assert_eq!(status.status(), 200);
    let status: Value = status.json().await.unwrap();
    assert_eq!(status["result"]["function"]["body"], Value::String(deep));

    // The outbox keeps draining: a later poll action's result arrives too.
    cp.enqueue(action("after-1", "orders-db"));
    let results = cp.wait_for_results(2, WAIT).await;
    assert!(results["deep-1"].parsed.succeeded());
    assert!(results["after-1"].parsed.succeeded());
    let (code, body) = daemon.admin_get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    daemon.stop().await;
}

/// An action whose params nest past the limit is refused with a clear
/// reason, and nothing about it reaches a function.
#[tokio::test]
async fn params_nested_past_the_limit_are_refused() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let daemon = RunningDaemon::start(
        &env,
        &env.with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")])),
    )
    .await;
    let mut nested = json!(1);
    for _ in 0..100 {
        nested = json!([nested]);
    }
    let mut deep = action("deep-params", "orders-db");
    deep["params"]["x"] = nested;
    let r = daemon.push(&deep).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("nests deeper"));
    assert!(env.sandbox.invocations("grant-db").is_empty());
    daemon.stop().await;
}

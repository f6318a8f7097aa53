//! The daemon end to end: poll and push intake, validation, leases, the
//! journal's guarantees under outages, restarts and SIGKILL, and two instances
//! sharing one connector id.

use std::collections::HashMap;
use std::time::Duration;

use grantbridge_sandbox::{Faults, Outage};
use serde_json::json;

use crate::helpers::{
    PUSH_SECRET, RunningDaemon, action, spawn_control_plane, spawn_env, wait_for_log,
};

const WAIT: Duration = Duration::from_secs(60);

/// Invocations per Idempotency-Key.
fn calls_per_key(env: &crate::helpers::TestEnv, function: &str) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for i in env.sandbox.invocations(function) {
        *m.entry(i.idempotency_key.unwrap_or_default()).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn poll_mode_runs_and_reports_every_action_once() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let daemon =
        RunningDaemon::start(&env, &env.daemon_config(&cp, &[("orders-db", "grant-db")])).await;
    let ids: Vec<String> = (0..25)
        .map(|i| cp.enqueue(action(&format!("act-{i}"), "orders-db")))
        .collect();
    let results = cp.wait_for_results(25, WAIT).await;
    assert_eq!(results.len(), 25);
    for id in &ids {
        let r = &results[id];
        assert!(r.parsed.succeeded(), "{id}: {:?}", r.parsed);
        assert_eq!((r.reports, r.parsed.attempts), (1, 1));
        assert_eq!(r.instance_id.as_deref(), Some("it-0/0001"));
        assert!(
            r.lease_token.is_some(),
            "poll results carry their lease token"
        );
        assert_eq!(r.parsed.function.as_ref().unwrap().status, Some(200));
    }
    assert!(calls_per_key(&env, "grant-db").values().all(|&n| n == 1));
    // The audit trail has every attempt.
    let audit = daemon
        .engine
        .journal()
        .audit(Default::default())
        .await
        .unwrap();
    assert_eq!(audit.len(), 25);
    assert!(audit.iter().all(|a| a.http_status == Some(200)
        && a.integration == "orders-db"
        && a.username.as_deref().unwrap().ends_with("@example.com")));
    let summary = daemon.stop().await;
    assert_eq!((summary.left_unfinished, summary.outbox_left), (0, 0));
    // Heartbeats carried the integration's status.
    let (hb, _) = cp
        .heartbeats()
        .remove("it-0/0001")
        .expect("a heartbeat arrived");
    assert_eq!(hb["integrations"][0]["name"], "orders-db");
    assert_eq!(hb["integrations"][0]["status"], "ok");
}

#[tokio::test]
async fn invalid_actions_fail_with_the_matching_code_and_never_reach_a_function() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let daemon =
        RunningDaemon::start(&env, &env.daemon_config(&cp, &[("orders-db", "grant-db")])).await;
    cp.enqueue(action("unknown", "payroll"));
    cp.enqueue(json!({"id": "bad-event", "integration": "orders-db", "event_type": "delete-everything", "params": {}}));
    cp.enqueue(json!({"id": "bad-params", "integration": "orders-db", "event_type": "grant-access", "params": {"grant_id": "g"}}));
    cp.enqueue(json!({"id": "not-object", "integration": "orders-db", "event_type": "grant-access", "params": [1, 2]}));
    let mut late = action("late", "orders-db");
    late["not_after"] = json!("2020-01-01T00:00:00Z");
    cp.enqueue(late);
    let results = cp.wait_for_results(5, WAIT).await;
    let code = |id: &str| results[id].parsed.error_code();
    assert_eq!(code("unknown"), Some("unknown_integration"));
    assert_eq!(code("bad-event"), Some("unsupported_event_type"));
    assert_eq!(code("bad-params"), Some("invalid_action"));
    assert_eq!(code("not-object"), Some("invalid_action"));
    assert_eq!(code("late"), Some("expired"));
    assert!(
        results
            .values()
            .all(|r| r.parsed.function.is_none() && r.parsed.attempts == 0)
    );
    assert!(env.sandbox.invocations("grant-db").is_empty());
    daemon.stop().await;
}

#[tokio::test]
async fn leases_are_extended_while_a_slow_action_runs() {
    let env = spawn_env().await;
    env.deploy("slow");
    env.sandbox.set_faults(
        "slow",
        Faults {
            latency: Duration::from_secs(5),
            ..Default::default()
        },
    );
    let cp = spawn_control_plane().await;
    let spec = env
        .daemon_config(&cp, &[("slow", "slow")])
        .set("control_plane.lease", "2s");
    let daemon = RunningDaemon::start(&env, &spec).await;
    cp.enqueue(action("slow-1", "slow"));
    let results = cp.wait_for_results(1, WAIT).await;
    assert!(results["slow-1"].parsed.succeeded());
    assert_eq!(
        cp.leases_issued("slow-1"),
        1,
        "extended, never handed out again"
    );
    assert!(
        cp.calls().extend >= 2,
        "extended {} times",
        cp.calls().extend
    );
    daemon.stop().await;
}

#[tokio::test]
async fn push_mode_records_before_answering_and_waits_on_request() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let spec = env.push_daemon_config(&cp, &[("orders-db", "grant-db")]);
    let daemon = RunningDaemon::start(&env, &spec).await;

    let body = action("push-1", "orders-db").to_string();
    let r = daemon.signed("POST", "/v1/actions", &body, 0).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"action_id": "push-1", "status": "accepted"})
    );

    let body = action("push-2", "orders-db").to_string();
    let r = daemon.signed("POST", "/v1/actions?wait=20", &body, 0).await;
    assert_eq!(r.status(), 200);
    let result: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (result["action_id"].as_str(), result["outcome"].as_str()),
        (Some("push-2"), Some("succeeded"))
    );

    // Results of pushed actions also reach the control plane.
    let results = cp.wait_for_results(2, WAIT).await;
    assert!(results["push-1"].pushed && results["push-1"].parsed.succeeded());

    let r = daemon.signed("GET", "/v1/actions/push-1", "", 0).await;
    assert_eq!(r.status(), 200);
    let s: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (s["status"].as_str(), s["result"]["outcome"].as_str()),
        (Some("succeeded"), Some("succeeded"))
    );
    assert_eq!(
        daemon
            .signed("GET", "/v1/actions/nope", "", 0)
            .await
            .status(),
        404
    );

    // The same id again: answered from the journal, not invoked again.
    let r = daemon.push(&action("push-1", "orders-db")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "succeeded"
    );
    assert_eq!(calls_per_key(&env, "grant-db")["push-1"], 1);
    daemon.stop().await;
}

#[tokio::test]
async fn push_requests_must_be_signed_fresh_and_small() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let spec = env.push_daemon_config(&cp, &[("orders-db", "grant-db")]);
    let daemon = RunningDaemon::start(&env, &spec).await;
    let addr = daemon.push_addr.unwrap();
    let body = action("sig-1", "orders-db").to_string();

    // Wrong secret, and a replay of a request signed 301 s ago: 401, nothing recorded.
    assert_eq!(
        daemon
            .signed_with("another-secret-0123456789", "POST", "/v1/actions", &body, 0)
            .await
            .status(),
        401
    );
    assert_eq!(
        daemon
            .signed("POST", "/v1/actions", &body, -301)
            .await
            .status(),
        401
    );
    assert_eq!(
        daemon
            .signed("POST", "/v1/actions", &body, 301)
            .await
            .status(),
        401
    );
    let unsigned = reqwest::Client::new()
        .post(format!("http://{addr}/v1/actions"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(
        daemon
            .signed("GET", "/v1/actions/sig-1", "", 0)
            .await
            .status(),
        404,
        "nothing was recorded"
    );
    // A signature over a different path or body does not carry over.
    let ts = grantbridge::clock::Clock::system().unix_secs();
    let sig = grantbridge_sandbox::pusher::signature(PUSH_SECRET, ts, "POST", "/v1/actions", b"{}");
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/actions"))
        .header("x-grantbridge-timestamp", ts.to_string())
        .header("x-grantbridge-signature", sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A replay inside the window is answered from the journal: one invocation.
    assert_eq!(
        daemon
            .signed("POST", "/v1/actions?wait=20", &body, 0)
            .await
            .status(),
        200
    );
    assert_eq!(
        daemon
            .signed("POST", "/v1/actions", &body, 0)
            .await
            .status(),
        200
    );
    assert_eq!(calls_per_key(&env, "grant-db")["sig-1"], 1);

    // Oversized (limit 4096 here) and malformed bodies.
    let mut big = action("big-1", "orders-db");
    big["params"]["padding"] = json!("x".repeat(5000));
    assert_eq!(
        daemon
            .signed("POST", "/v1/actions", &big.to_string(), 0)
            .await
            .status(),
        413
    );
    let r = daemon
        .signed("POST", "/v1/actions", r#"{"id":"x y"}"#, 0)
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("id"));
    assert_eq!(
        daemon
            .signed("POST", "/v1/actions?wait=61", &body, 0)
            .await
            .status(),
        400
    );
    daemon.stop().await;
}

#[tokio::test]
async fn results_survive_a_control_plane_outage_and_arrive_once() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    env.sandbox.set_faults(
        "grant-db",
        Faults {
            latency: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let cp = spawn_control_plane().await;
    let spec = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("engine.per_integration_concurrency", 20);
    let daemon = RunningDaemon::start(&env, &spec).await;
    for i in 0..20 {
        cp.enqueue(action(&format!("out-{i}"), "orders-db"));
    }
    // All 20 leased and running (each call takes 1 s); then the control plane goes away.
    tokio::time::timeout(WAIT, daemon.engine.wait_accepted(20))
        .await
        .expect("all 20 leased");
    cp.set_outage(Outage::Refuse);
    // Results pile up durably in the outbox while it is down.
    tokio::time::timeout(WAIT, daemon.engine.wait_finished(20))
        .await
        .expect("all 20 finish");
    assert_eq!(daemon.engine.journal().outbox_depth().await.unwrap(), 20);
    assert!(cp.results().is_empty(), "the control plane was down");
    cp.set_outage(Outage::None);
    let results = cp.wait_for_results(20, WAIT).await;
    assert_eq!(results.len(), 20);
    assert!(
        results
            .values()
            .all(|r| r.reports == 1 && r.parsed.succeeded()),
        "none twice-counted"
    );
    let summary = daemon.stop().await;
    assert_eq!(summary.outbox_left, 0);
}

#[tokio::test]
async fn actions_cut_off_by_shutdown_resume_with_the_same_idempotency_key() {
    let env = spawn_env().await;
    env.deploy("stuck");
    env.sandbox.set_faults(
        "stuck",
        Faults {
            hang_next: 1,
            ..Default::default()
        },
    );
    let cp = spawn_control_plane().await;
    let spec = env
        .daemon_config(&cp, &[("stuck", "stuck")])
        .set("engine.shutdown_grace", "1s")
        .every_integration("timeout", "30s");
    let toml = spec.clone().remove("engine.shutdown_grace");
    let daemon = RunningDaemon::start(&env, &toml).await;
    cp.enqueue(action("cut-1", "stuck"));
    env.sandbox.wait_for_invocations("stuck", 1).await;
    let summary = daemon.stop().await;
    assert_eq!(summary.left_unfinished, 1);
    assert!(cp.result("cut-1").is_none());

    // Next start: resumed from the journal, same key; the function answers now.
    let daemon = RunningDaemon::start(&env, &toml).await;
    let results = cp.wait_for_results(1, WAIT).await;
    assert!(results["cut-1"].parsed.succeeded());
    let calls = env.sandbox.invocations("stuck");
    assert!(
        calls.len() >= 2
            && calls
                .iter()
                .all(|c| c.idempotency_key.as_deref() == Some("cut-1"))
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_redelivered_finished_action_is_answered_from_the_journal() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let spec = env.with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")]));
    let daemon = RunningDaemon::start(&env, &spec).await;
    cp.enqueue(action("dup-1", "orders-db"));
    cp.wait_for_results(1, WAIT).await;
    // The same id arrives again by push: no second invocation.
    let r = daemon
        .signed(
            "POST",
            "/v1/actions?wait=5",
            &action("dup-1", "orders-db").to_string(),
            0,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(env.sandbox.invocations("grant-db").len(), 1);
    daemon.stop().await;
}

#[tokio::test]
async fn sigterm_drains_flushes_and_exits_zero() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    env.sandbox.set_faults(
        "grant-db",
        Faults {
            latency: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let cp = spawn_control_plane().await;
    let mut child = env.spawn_process(
        &env.daemon_config(&cp, &[("orders-db", "grant-db")]),
        "term",
    );
    for i in 0..5 {
        cp.enqueue(action(&format!("term-{i}"), "orders-db"));
    }
    env.sandbox.wait_for_invocations("grant-db", 1).await;
    let pid = child.id().unwrap().to_string();
    assert!(
        tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // In-flight actions finished and their results were flushed before exit.
    let results = cp.results();
    let started = env.sandbox.invocations("grant-db").len();
    assert!(started >= 1);
    assert_eq!(
        results.len(),
        started,
        "every started action was reported before exit"
    );
}

#[tokio::test]
async fn sigkill_mid_run_then_restart_every_action_ends_with_one_accepted_result() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    env.sandbox.set_faults(
        "grant-db",
        Faults {
            latency: Duration::from_millis(100),
            ..Default::default()
        },
    );
    let cp = spawn_control_plane().await;
    let spec = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("control_plane.lease", "3s")
        .set("engine.per_integration_concurrency", 4);
    let toml = spec.clone();
    const N: usize = 60;
    for i in 0..N {
        cp.enqueue(action(&format!("kill-{i}"), "orders-db"));
    }
    let mut first = env.spawn_process(&toml, "kill-a");
    cp.wait_for_results(15, WAIT).await;
    first.kill().await.unwrap(); // SIGKILL
    let before = cp.results().len();
    let mut second = env.spawn_process(&toml, "kill-b");
    let results = cp.wait_for_results(N, WAIT).await;
    second.kill().await.unwrap();
    assert_eq!(results.len(), N, "every action has an accepted result");
    assert!(results.values().all(|r| r.parsed.succeeded()));
    let repeated: usize = calls_per_key(&env, "grant-db")
        .values()
        .map(|&n| n - 1)
        .sum();
    let duplicate_reports: u32 = results.values().map(|r| r.reports - 1).sum();
    println!(
        "SIGKILL after {before}/{N} results: {repeated} invocation(s) repeated, {duplicate_reports} duplicate report(s) (first result stands)"
    );
    // At most the actions in flight at the kill (4 at a time) can repeat.
    assert!(repeated <= 4, "{repeated} repeated invocations");
}

#[tokio::test]
async fn two_instances_share_a_connector_and_survive_losing_one() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    env.sandbox.set_faults(
        "grant-db",
        Faults {
            latency: Duration::from_millis(100),
            ..Default::default()
        },
    );
    let cp = spawn_control_plane().await;
    let a = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("control_plane.lease", "2s")
        .instance_id("gb-a/1")
        .journal(&env.dir.path().join("a.db"))
        .set("engine.per_integration_concurrency", 4)
        .set("engine.max_concurrency", 4);
    let b = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("control_plane.lease", "2s")
        .instance_id("gb-b/1")
        .journal(&env.dir.path().join("b.db"))
        .set("engine.per_integration_concurrency", 4)
        .set("engine.max_concurrency", 4);
    const N: usize = 80;
    for i in 0..N {
        cp.enqueue(action(&format!("ha-{i}"), "orders-db"));
    }
    let mut inst_a = env.spawn_process(&a.clone(), "ha-a");
    let mut inst_b = env.spawn_process(&b.clone(), "ha-b");
    cp.wait_for_results(20, WAIT).await;
    inst_a.kill().await.unwrap();
    let results = cp.wait_for_results(N, WAIT).await;
    inst_b.kill().await.unwrap();
    assert_eq!(results.len(), N, "every action completed");
    let by: HashMap<&str, usize> = results.values().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.parsed.instance_id.as_str()).or_default() += 1;
        m
    });
    assert!(
        by.get("gb-a/1").copied().unwrap_or(0) > 0 && by.get("gb-b/1").copied().unwrap_or(0) > 0,
        "both instances worked: {by:?}"
    );
    let repeated: usize = calls_per_key(&env, "grant-db")
        .values()
        .map(|&n| n - 1)
        .sum();
    println!(
        "two instances, one SIGKILLed: results by instance {by:?}, {repeated} repeated invocation(s)"
    );
    // Repeats: calls in flight on the killed instance (at most its 4 slots), plus
    // results it had finished but not yet reported, which the survivor runs again
    // once their leases expire (at-least-once; the Idempotency-Key is the same).
    assert!(repeated <= 8, "{repeated} repeated invocations");
}

#[tokio::test]
async fn audit_command_reads_the_journal() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let toml = env.daemon_config(&cp, &[("orders-db", "grant-db")]);
    let daemon = RunningDaemon::start(&env, &toml).await;
    cp.enqueue(action("aud-1", "orders-db"));
    cp.wait_for_results(1, WAIT).await;
    daemon.stop().await;
    let stdout = audit(
        &env,
        &toml,
        &["--since", "1h", "--integration", "orders-db", "--json"],
    )
    .await;
    let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["action_id"], "aud-1");
    assert_eq!(line["http_status"], 200);
    assert_eq!(line["username"], "aud-1@example.com");
    assert!(
        line["function_url"]
            .as_str()
            .unwrap()
            .ends_with("/grant-db")
    );
}

#[tokio::test]
async fn a_refused_connector_token_means_not_ready_and_slow_retries_until_it_is_fixed() {
    use std::sync::atomic::Ordering;
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    cp.revoke_token(crate::helpers::CP_TOKEN);
    let spec = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("control_plane.unauthorized_retry", "1s");
    let daemon = RunningDaemon::start(&env, &spec).await;
    cp.enqueue(action("auth-1", "orders-db"));
    let deadline = tokio::time::Instant::now() + WAIT;
    // The daemon is told no, says so, and keeps asking slowly.
    while cp.calls().unauthorized() < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !daemon.state.auth_ok.load(Ordering::SeqCst),
        "not ready while the token is refused"
    );
    assert!(env.sandbox.invocations("grant-db").is_empty());
    // Fixed (e.g. the Secret was updated): work resumes.
    cp.add_token(crate::helpers::CP_TOKEN);
    let results = cp.wait_for_results(1, WAIT).await;
    assert!(results["auth-1"].parsed.succeeded());
    assert!(daemon.state.auth_ok.load(Ordering::SeqCst));
    daemon.stop().await;
}

#[tokio::test]
async fn control_plane_retry_after_is_honoured() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    cp.fail_next(1, 429, Some(2));
    cp.enqueue(action("ra-1", "orders-db"));
    let started = std::time::Instant::now();
    let daemon =
        RunningDaemon::start(&env, &env.daemon_config(&cp, &[("orders-db", "grant-db")])).await;
    cp.wait_for_results(1, WAIT).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "leased again only after Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(cp.calls().with_status(429), 1);
    daemon.stop().await;
}

#[tokio::test]
async fn list_resources_answers_reach_the_control_plane_intact() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let daemon =
        RunningDaemon::start(&env, &env.daemon_config(&cp, &[("orders-db", "grant-db")])).await;
    cp.enqueue(json!({"id": "list-1", "integration": "orders-db", "event_type": "list-resources", "params": {"resource_type": "db"}}));
    let results = cp.wait_for_results(1, WAIT).await;
    let f = results["list-1"].parsed.function.clone().unwrap();
    let direct = env.sandbox.invocations("grant-db");
    assert_eq!(direct.len(), 1);
    let body = f.body.unwrap();
    assert_eq!(body["resources"][0]["type"], "db");
    assert_eq!(body["permissions"].as_array().unwrap().len(), 2);
    assert!(f.latency_ms < 60_000 && f.url.ends_with("/grant-db"));
    daemon.stop().await;
}

#[tokio::test]
async fn push_answers_503_with_retry_after_when_full_or_draining() {
    let env = spawn_env().await;
    env.deploy("stuck");
    env.sandbox.set_faults(
        "stuck",
        Faults {
            hang_next: 10,
            ..Default::default()
        },
    );
    let cp = spawn_control_plane().await;
    let spec = env.with_push(
        env.daemon_config(&cp, &[("stuck", "stuck")])
            .set("control_plane.poll", false)
            .set("engine.queue_capacity", 1)
            .set("engine.shutdown_grace", "1s")
            .every_integration("timeout", "30s"),
    );
    let toml = spec.clone().remove("engine.shutdown_grace");
    let daemon = RunningDaemon::start(&env, &toml).await;
    assert_eq!(daemon.push(&action("full-1", "stuck")).await.status(), 202);
    env.sandbox.wait_for_invocations("stuck", 1).await;
    // Full: one action in, capacity one.
    let r = daemon.push(&action("full-2", "stuck")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        daemon
            .signed("GET", "/v1/actions/full-2", "", 0)
            .await
            .status(),
        404,
        "not recorded"
    );
    // Draining: shutdown started, the stuck action holds the drain open.
    daemon.request_stop();
    while !daemon.engine.is_draining() {
        tokio::task::yield_now().await;
    }
    let r = daemon.push(&action("late-1", "stuck")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let summary = daemon.stopped().await;
    assert_eq!(
        summary.left_unfinished, 1,
        "the stuck action stays in the journal for the next start"
    );
}

#[tokio::test]
async fn a_reload_rotates_push_secrets() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let spec = env.push_daemon_config(&cp, &[("orders-db", "grant-db")]);
    let toml = spec.clone();
    let daemon = RunningDaemon::start(&env, &toml).await;
    const NEXT: &str = "the-next-push-secret-0123456789";
    assert_eq!(
        daemon
            .signed_with(
                NEXT,
                "POST",
                "/v1/actions",
                &action("rot-1", "orders-db").to_string(),
                0
            )
            .await
            .status(),
        401
    );
    // Rotation: the new secret is added next to the old one, then the old one removed.
    let next_file = env.dir.path().join("next-secret");
    std::fs::write(&next_file, NEXT).unwrap();
    let old_file = env.dir.path().join("push-secret").display().to_string();
    let next_file = next_file.display().to_string();
    let with_both = toml
        .clone()
        .set("push.secret_files", vec![next_file.clone(), old_file]);
    with_both.write_to(&daemon.config_path).unwrap();
    daemon.reloader.reload(&env.daemon_env()).unwrap();
    assert_eq!(
        daemon
            .signed_with(
                NEXT,
                "POST",
                "/v1/actions",
                &action("rot-2", "orders-db").to_string(),
                0
            )
            .await
            .status(),
        202
    );
    assert_eq!(
        daemon.push(&action("rot-3", "orders-db")).await.status(),
        202
    );
    let only_next = with_both.set("push.secret_files", vec![next_file]);
    only_next.write_to(&daemon.config_path).unwrap();
    daemon.reloader.reload(&env.daemon_env()).unwrap();
    assert_eq!(
        daemon.push(&action("rot-4", "orders-db")).await.status(),
        401
    );
    assert_eq!(
        daemon
            .signed_with(
                NEXT,
                "POST",
                "/v1/actions",
                &action("rot-5", "orders-db").to_string(),
                0
            )
            .await
            .status(),
        202
    );
    daemon.stop().await;
}

#[tokio::test]
async fn the_worker_step_is_a_plain_function() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    // Push only and nothing pushed: the engine is idle, the test drives it.
    let spec = env.push_daemon_config(&cp, &[("orders-db", "grant-db")]);
    let daemon = RunningDaemon::start(&env, &spec).await;
    let ok = grantbridge::action::Action::from_value(&action("step-1", "orders-db")).unwrap();
    let (result, audit) = daemon.engine.process(&ok).await;
    assert!(result.succeeded());
    assert_eq!(
        (audit.len(), audit[0].http_status, audit[0].attempt),
        (1, Some(200), 1)
    );
    let unknown = grantbridge::action::Action::from_value(&action("step-2", "payroll")).unwrap();
    let (result, audit) = daemon.engine.process(&unknown).await;
    assert_eq!(
        result.error_code(),
        Some(grantbridge::contract::ErrorCode::UnknownIntegration)
    );
    assert!(audit.is_empty());
    assert_eq!(
        env.sandbox.invocations("grant-db").len(),
        1,
        "only the valid action reached the function"
    );
    // Storing is the caller's: the step wrote nothing durable.
    assert!(
        daemon
            .engine
            .journal()
            .state("step-1")
            .await
            .unwrap()
            .is_none()
    );
    daemon.stop().await;
}

/// An integration's `access_details` reaches the control plane: in every
/// heartbeat entry, and in the result of a successful grant (only there).
#[tokio::test]
async fn access_details_reach_heartbeats_and_successful_grants() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let config = env.daemon_config(&cp, &[("orders-db", "grant-db")]).set(
        "integrations.orders-db.access_details",
        "https://orders.example.com/app",
    );
    let daemon = RunningDaemon::start(&env, &config).await;
    let mut grant = action("ad-grant", "orders-db");
    grant["event_type"] = json!("grant-access");
    cp.enqueue(grant);
    cp.enqueue(action("ad-revoke", "orders-db"));
    let results = cp.wait_for_results(2, WAIT).await;
    assert_eq!(
        results["ad-grant"].parsed.access_details.as_deref(),
        Some("https://orders.example.com/app")
    );
    assert_eq!(results["ad-revoke"].parsed.access_details, None);
    assert!(results["ad-revoke"].result.get("access_details").is_none());
    daemon.stop().await;
    let (hb, _) = cp.heartbeats().remove("it-0/0001").expect("a heartbeat");
    assert_eq!(
        hb["integrations"][0]["access_details"],
        "https://orders.example.com/app"
    );
}

#[tokio::test]
async fn a_second_daemon_on_the_same_journal_is_refused_naming_the_first() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let toml = env.daemon_config(&cp, &[("orders-db", "grant-db")]);
    let first = RunningDaemon::start(&env, &toml).await;
    // The same configuration (so the same journal), as a second process.
    let (second, log) = env.spawn_run(&toml, "second", &[]);
    let exit = tokio::time::timeout(WAIT, second.wait_with_output())
        .await
        .expect("the second daemon exits")
        .unwrap();
    assert_eq!(exit.status.code(), Some(1));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains(&format!(
            "another grantbridge process (pid {}) has it open",
            std::process::id()
        )) && log.contains("Two daemons must never share a journal"),
        "{log}"
    );
    // The first runs on, unharmed; audit reads its journal while it runs.
    cp.enqueue(action("lock-1", "orders-db"));
    let results = cp.wait_for_results(1, WAIT).await;
    assert!(results["lock-1"].parsed.succeeded());
    assert!(audit(&env, &toml, &["--json"]).await.contains("lock-1"));
    first.stop().await;
    // Once it stopped, the journal is free again.
    let again = RunningDaemon::start(&env, &toml).await;
    again.stop().await;
}

/// `grantbridge audit ARGS` on `config` from a shell: its standard output
/// (it must succeed).
async fn audit(
    env: &crate::helpers::TestEnv,
    config: &grantbridge_sandbox::daemon_config::DaemonConfig,
    args: &[&str],
) -> String {
    let path = env.dir.path().join("audit.toml");
    config.write_to(&path).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .arg("--config")
        .arg(&path)
        .arg("audit")
        .args(args)
        .env("CP_TOKEN", crate::helpers::CP_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The threads of a running process, by name.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| {
            let comm = t.unwrap().path().join("comm");
            std::fs::read_to_string(comm).unwrap().trim().to_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn worker_threads_decides_how_many_threads_run_the_tasks() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    // The default, then four from the environment.
    for (name, vars, workers) in [
        ("one-thread", &[][..], 1),
        (
            "four-threads",
            &[("GRANTBRIDGE_WORKER_THREADS", "4")][..],
            4,
        ),
    ] {
        let cp = spawn_control_plane().await;
        let config = env.daemon_config(&cp, &[("orders-db", "grant-db")]);
        let (mut child, log) = env.spawn_run_with(&config, name, &[], vars);
        for i in 0..20 {
            cp.enqueue(action(&format!("{name}-{i}"), "orders-db"));
        }
        let results = cp.wait_for_results(20, WAIT).await;
        assert_eq!(
            results.len(),
            20,
            "{name}: every action has a result; log:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(
            results
                .values()
                .all(|r| r.parsed.outcome
                    == grantbridge_sandbox::protocol::ReportedOutcome::Succeeded),
            "{name}: {results:?}"
        );
        // The runtime says how many threads run its tasks.
        let started = wait_for_log(&log, "grantbridge started", 1).await;
        assert!(
            started.contains(&format!("worker_threads={workers}")),
            "{name}: {started}"
        );
        // Tokio names its workers and its blocking pool's threads alike: four
        // workers are at least four; one runtime thread is the main thread.
        let threads = thread_names(child.id().unwrap());
        let named = threads.iter().filter(|t| *t == "tokio-rt-worker").count();
        assert!(named >= workers, "{name}: {threads:?}");
        assert!(threads.iter().any(|t| t == "journal-writer"), "{threads:?}");
        child.kill().await.unwrap();
    }
}

#[tokio::test]
async fn worker_threads_out_of_range_is_refused_before_anything_starts() {
    for value in ["0", "1025", "many"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
            .args([
                "--worker-threads",
                value,
                "--config",
                "/nonexistent.toml",
                "run",
            ])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(stderr.contains("--worker-threads"), "{value}: {stderr}");
    }
}

//! Running it like infrastructure: health, readiness and metrics endpoints,
//! SIGHUP reload, and logs that never carry a secret.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    CP_TOKEN, PUSH_SECRET, RunningDaemon, SA, action, hup, spawn_control_plane, spawn_env,
    wait_for_log,
};

const WAIT: Duration = Duration::from_secs(60);

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {body}"))
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let daemon =
        RunningDaemon::start(&env, &env.daemon_config(&cp, &[("orders-db", "grant-db")])).await;
    assert_eq!(daemon.admin_get("/healthz").await.0, 200);
    cp.enqueue(action("obs-1", "orders-db"));
    cp.enqueue(action("obs-2", "payroll"));
    cp.wait_for_results(2, WAIT).await;

    let (status, body) = daemon.admin_get("/readyz").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    for name in ["config", "journal", "credentials:prod", "control_plane"] {
        assert_eq!(check(&body, name)["ok"], true, "{name}: {body}");
    }
    assert!(
        check(&body, "credentials:prod")["detail"]
            .as_str()
            .unwrap()
            .contains("ID token valid")
    );

    // The control plane has the results; the outbox drains once the
    // connector has journaled that (its next commit).
    let deadline = std::time::Instant::now() + WAIT;
    let metrics = loop {
        let (status, metrics) = daemon.admin_get("/metrics").await;
        assert_eq!(status, 200);
        if metrics.contains("grantbridge_outbox_depth 0") || std::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    for line in [
        r#"grantbridge_actions_total{integration="orders-db",event_type="revoke-access",outcome="succeeded"} 1"#,
        r#"grantbridge_actions_total{integration="(unknown)",event_type="revoke-access",outcome="unknown_integration"} 1"#,
        r#"grantbridge_token_mints_total{connection="prod",result="ok"} 1"#,
        r#"grantbridge_function_attempts_total{integration="orders-db",outcome="succeeded"} 1"#,
        "grantbridge_outbox_depth 0",
        "grantbridge_in_flight_actions 0",
        r#"grantbridge_build_info{version=""#,
        "grantbridge_function_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    daemon.stop().await;
}

#[tokio::test]
async fn readiness_names_the_failing_check() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    // A deleted key: the connection cannot mint. A revoked token: the control plane refuses it.
    env.sandbox.delete_key(SA, &env.key_id);
    cp.revoke_token(CP_TOKEN);
    let spec = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("control_plane.unauthorized_retry", "1s");
    let daemon = RunningDaemon::start(&env, &spec).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while cp.calls().unauthorized() == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = daemon.admin_get("/readyz").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    let creds = check(&body, "credentials:prod");
    assert_eq!(creds["ok"], false);
    assert!(
        creds["detail"]
            .as_str()
            .unwrap()
            .contains("Invalid JWT Signature"),
        "{creds}"
    );
    let cpc = check(&body, "control_plane");
    assert_eq!(cpc["ok"], false);
    assert!(
        cpc["detail"]
            .as_str()
            .unwrap()
            .contains("refuses the connector token"),
        "{cpc}"
    );
    assert_eq!(check(&body, "journal")["ok"], true);
    let (_, metrics) = daemon.admin_get("/metrics").await;
    assert!(
        metrics.contains(
            r#"grantbridge_control_plane_errors_total{call="lease",kind="unauthorized"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"grantbridge_token_mints_total{connection="prod",result="error"}"#),
        "{metrics}"
    );
    // The process itself is healthy: liveness must not restart it for this.
    assert_eq!(daemon.admin_get("/healthz").await.0, 200);
    daemon.stop().await;
}

#[tokio::test]
async fn sighup_reloads_integrations_and_refuses_a_broken_configuration() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    env.deploy("grant-crm");
    let cp = spawn_control_plane().await;
    let before = env.daemon_config(&cp, &[("orders-db", "grant-db")]);
    let mut child = env.spawn_process(&before, "reload");
    let config = env.dir.path().join("reload.toml");
    let log = env.dir.path().join("reload.log");
    cp.enqueue(action("before-1", "orders-db"));
    cp.wait_for_results(1, WAIT).await;

    // A new integration and new custom parameters, then SIGHUP.
    let after = env
        .daemon_config(&cp, &[("orders-db", "grant-db"), ("crm", "grant-crm")])
        .set("integrations.crm.custom_parameters.param1", "reloaded");
    after.write_to(&config).unwrap();
    hup(&child).await;
    wait_for_log(&log, "configuration reloaded", 1).await;
    cp.enqueue(action("after-1", "crm"));
    let results = cp.wait_for_results(2, WAIT).await;
    assert!(
        results["after-1"].parsed.succeeded(),
        "{:?}",
        results["after-1"].parsed
    );
    let crm = env.sandbox.invocations("grant-crm");
    assert_eq!(
        crm[0].body["params"]["custom_parameters"]["param1"],
        "reloaded"
    );

    // A broken file is refused; the running configuration keeps working.
    after
        .clone()
        .set("integrations.crm.region", "mars-north1")
        .set("integrations.crm.bogus", 1)
        .write_to(&config)
        .unwrap();
    hup(&child).await;
    let text = wait_for_log(&log, "configuration reload refused", 1).await;
    assert!(text.contains("bogus"), "the refusal says why");
    cp.enqueue(action("after-2", "crm"));
    let results = cp.wait_for_results(3, WAIT).await;
    assert!(results["after-2"].parsed.succeeded());
    child.kill().await.unwrap();
}

#[tokio::test]
async fn debug_logs_carry_action_context_and_no_secret() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let spec = env.with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")]));
    let toml = spec.clone();
    let path = env.dir.path().join("secrets.toml");
    toml.write_to(&path).unwrap();
    let log_path = env.dir.path().join("secrets.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .arg("--config")
        .arg(&path)
        .args(["--log-format", "json", "--log-level", "trace", "run"])
        .env("CP_TOKEN", CP_TOKEN)
        .env("HOME", env.dir.path())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    cp.enqueue(json!({"id": "cred-1", "integration": "orders-db", "event_type": "create-credentials",
        "params": {"username": "mallory@example.com", "resource_type": "db", "resources": ["orders"]}}));
    cp.enqueue(action("plain-1", "orders-db"));
    let results = cp.wait_for_results(2, WAIT).await;
    let password = results["cred-1"]
        .parsed
        .function
        .as_ref()
        .unwrap()
        .body
        .as_ref()
        .unwrap()["credentials"]["password"]
        .as_str()
        .expect("the sample function returns a password")
        .to_owned();
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    child.wait().await.unwrap();

    let log = std::fs::read_to_string(&log_path).unwrap();
    let key = std::fs::read_to_string(&env.key_file).unwrap();
    let key: Value = serde_json::from_str(&key).unwrap();
    let pem_line = key["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    for (what, secret) in [
        ("the password a function returned", password.as_str()),
        ("the connector token", CP_TOKEN),
        ("the push HMAC secret", PUSH_SECRET),
        ("the service-account private key", pem_line.as_str()),
        ("a JWT (ID token or assertion)", "eyJ"),
        ("an access token", "ya29."),
    ] {
        assert!(!log.contains(secret), "{what} leaked into the logs");
    }
    // Structured lines with the action's context.
    let finished: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "action succeeded")
        .collect();
    assert_eq!(finished.len(), 2, "one line per finished action");
    // The documented field set, flat: time, level, message, target, the action's
    // context and its trace.
    let line = finished
        .iter()
        .find(|v| v["action_id"] == "plain-1")
        .expect("the action's fields are on its lines");
    assert_eq!(
        (
            line["integration"].as_str(),
            line["event_type"].as_str(),
            line["username"].as_str(),
            line["level"].as_str(),
        ),
        (
            Some("orders-db"),
            Some("revoke-access"),
            Some("plain-1@example.com"),
            Some("INFO"),
        )
    );
    assert!(
        line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{line}"
    );
    assert!(
        line["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("grantbridge"))
    );
    let trace_id = line["trace_id"].as_str().expect("a trace id").to_owned();
    assert_eq!(trace_id.len(), 32);
    // The function got the same trace in its traceparent, and the attempt's
    // line carries the span id the traceparent names.
    let call = env
        .sandbox
        .invocations("grant-db")
        .into_iter()
        .find(|i| i.idempotency_key.as_deref() == Some("plain-1"))
        .unwrap();
    let traceparent = call.traceparent.unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], trace_id, "{traceparent}");
    let attempt = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "function attempt" && v["action_id"] == "plain-1")
        .expect("a line per attempt");
    assert_eq!(attempt["span_id"], parts[2]);
}

#[tokio::test]
async fn online_check_verdicts_reach_heartbeats_and_readiness() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    env.sandbox.grant_viewer("grant-db", SA);
    env.sandbox.grant_iam_policy_viewer("grant-db", SA);
    // A public grant function: anyone on the internet could call it.
    env.sandbox.set_invokers("grant-db", &[SA, "allUsers"]);
    let cp = spawn_control_plane().await;
    let toml = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("checks.online", true)
        .set("checks.interval", "10s")
        .set(
            "google.cloudfunctions_api",
            env.sandbox.cloudfunctions_api_url(),
        );
    let daemon = RunningDaemon::start(&env, &toml).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let integration = loop {
        let hb = cp.heartbeats().remove("it-0/0001").map(|(hb, _)| hb);
        if let Some(i) = hb
            .map(|hb| hb["integrations"][0].clone())
            .filter(|i| i["status"] == "degraded")
        {
            break i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no degraded heartbeat"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let detail = integration["detail"].as_str().unwrap();
    assert!(detail.contains("allUsers"), "{detail}");
    let (status, body) = daemon.admin_get("/readyz").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status, 200,
        "a public function is a loud warning, not an outage: {body}"
    );
    assert!(
        check(&body, "integration:orders-db")["detail"]
            .as_str()
            .unwrap()
            .contains("allUsers")
    );
    daemon.stop().await;
}

/// `[log] format = "cloud-logging"`: the lines Cloud Logging reads, with
/// `severity` and a trace link Cloud Trace and the function's own logs join.
#[tokio::test]
async fn cloud_logging_lines_link_the_trace() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let config = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("log.format", "cloud-logging")
        .set("log.level", "debug");
    let (mut child, log_path) = env.spawn_run(&config, "cloud", &[]);
    cp.enqueue(action("cloud-1", "orders-db"));
    cp.wait_for_results(1, WAIT).await;
    child.kill().await.unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["severity"].is_string() && l.get("level").is_none())
    );
    let done = lines
        .iter()
        .find(|l| l["message"] == "action succeeded")
        .expect("the action's line");
    let trace = done["trace_id"].as_str().unwrap();
    assert_eq!(done["severity"], "INFO");
    assert_eq!(
        done["logging.googleapis.com/trace"],
        format!("projects/sandbox-project/traces/{trace}")
    );
    let attempt = lines
        .iter()
        .find(|l| l["message"] == "function attempt")
        .expect("an attempt line");
    assert_eq!(attempt["severity"], "DEBUG");
    assert_eq!(attempt["logging.googleapis.com/spanId"], attempt["span_id"]);
}

/// Human logs are coloured on a terminal only, and never with `NO_COLOR`:
/// systemd and `kubectl logs` read a pipe or a file, and got raw escapes.
#[tokio::test]
async fn human_logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let config = env.daemon_config(&cp, &[("orders-db", "grant-db")]);
    // stderr to a file: plain text.
    let (mut child, log) = env.spawn_run(&config, "plain", &[]);
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("grantbridge started") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never started:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().await.unwrap();
    assert!(!text.contains('\u{1b}'), "escapes in a log file:\n{text:?}");
    // On a terminal (a pseudo-terminal from util-linux `script`): coloured,
    // unless NO_COLOR is set.
    let path = env.dir.path().join("tty.toml");
    config.write_to(&path).unwrap();
    let command = format!(
        "timeout -s INT 3 {} --config {} run",
        env!("CARGO_BIN_EXE_grantbridge"),
        path.display()
    );
    for (no_color, coloured) in [(None, true), (Some("1"), false)] {
        let mut script = tokio::process::Command::new("script");
        script
            .args(["-qec", &command, "/dev/null"])
            .env("CP_TOKEN", CP_TOKEN)
            .env("HOME", env.dir.path())
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            script.env("NO_COLOR", v);
        }
        let out = script.output().await.expect("util-linux `script` runs");
        let tty = String::from_utf8_lossy(&out.stdout);
        assert!(tty.contains("grantbridge started"), "{tty}");
        assert_eq!(
            tty.contains("\u{1b}["),
            coloured,
            "NO_COLOR={no_color:?}:\n{tty:?}"
        );
    }
}

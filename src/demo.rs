//! `grantbridge demo`: the whole product on one machine with no Google account.
//! Starts the sandbox (Google and a control plane), deploys sample functions,
//! runs the real daemon in-process in poll and push mode, plays a scenario
//! (grants, a list-resources, revokes, a flaky function, a forbidden function,
//! an unknown integration, a pushed action answered synchronously), prints a
//! table, and fails unless every result is the expected one.
//!
//! It must only use loopback addresses and a temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::action::ActionResult;
use crate::clock::Clock;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::daemon::signature::sign;
use crate::env::MapEnv;
use crate::metrics::Metrics;
use crate::sandbox::{
    ControlPlane, ControlPlaneOptions, Faults, FunctionImpl, Sandbox, SandboxOptions,
};

const SA: &str = "grantbridge@sandbox-project.iam.gserviceaccount.com";
const CP_TOKEN: &str = "demo-connector-token";
const PUSH_SECRET: &str = "demo-push-secret-0123456789abcdef";

/// One step of the scenario and what must come of it.
struct Step {
    id: &'static str,
    integration: &'static str,
    event: &'static str,
    params: Value,
    /// `succeeded`, or the expected error code.
    expect: &'static str,
    expect_attempts: Option<u32>,
    what: &'static str,
}

fn grant(user: &str) -> Value {
    json!({"grant_id": format!("g-{user}"), "username": format!("{user}@example.com"), "resource_type": "db", "resources": ["orders"], "permission": "read"})
}

fn scenario() -> Vec<Step> {
    vec![
        Step {
            id: "act-1",
            integration: "orders-db",
            event: "grant-access",
            params: grant("alice"),
            expect: "succeeded",
            expect_attempts: Some(1),
            what: "grant alice read on orders",
        },
        Step {
            id: "act-2",
            integration: "orders-db",
            event: "grant-access",
            params: grant("bob"),
            expect: "succeeded",
            expect_attempts: Some(1),
            what: "grant bob read on orders",
        },
        Step {
            id: "act-3",
            integration: "orders-db",
            event: "list-resources",
            params: json!({"resource_type": "db"}),
            expect: "succeeded",
            expect_attempts: Some(1),
            what: "list what orders-db can grant",
        },
        Step {
            id: "act-4",
            integration: "orders-db",
            event: "revoke-access",
            params: grant("alice"),
            expect: "succeeded",
            expect_attempts: Some(1),
            what: "revoke alice",
        },
        Step {
            id: "act-5",
            integration: "crm",
            event: "grant-access",
            params: grant("carol"),
            expect: "succeeded",
            expect_attempts: Some(3),
            what: "crm fails twice (503), then succeeds",
        },
        Step {
            id: "act-6",
            integration: "hr",
            event: "grant-access",
            params: grant("dave"),
            expect: "permission_denied",
            expect_attempts: Some(1),
            what: "connector is not an invoker of hr",
        },
        Step {
            id: "act-7",
            integration: "payroll",
            event: "grant-access",
            params: grant("erin"),
            expect: "unknown_integration",
            expect_attempts: Some(0),
            what: "no such integration configured",
        },
    ]
}

/// Runs the demo; Err when it could not run or a result was not the expected one.
pub async fn run() -> Result<(), String> {
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let google = Sandbox::start(SandboxOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    google.create_service_account(SA);
    let key = google.create_key(SA);
    let key_file = dir.path().join("sa.json");
    std::fs::write(&key_file, &key.json).map_err(|e| e.to_string())?;
    google.deploy_function("grant-orders-db", FunctionImpl::Sample, &[SA]);
    google.deploy_function("grant-crm", FunctionImpl::Sample, &[SA]);
    google.set_faults(
        "grant-crm",
        Faults {
            fail_next: (2, 503),
            ..Default::default()
        },
    );
    google.deploy_function(
        "grant-hr",
        FunctionImpl::Sample,
        &["someone-else@sandbox-project.iam.gserviceaccount.com"],
    );

    let cp = ControlPlane::start(ControlPlaneOptions {
        connector_id: "demo".into(),
        tokens: vec![CP_TOKEN.into()],
        clock: Clock::system(),
    })
    .await
    .map_err(|e| e.to_string())?;
    let secret_file = dir.path().join("push-secret");
    std::fs::write(&secret_file, PUSH_SECRET).map_err(|e| e.to_string())?;

    let integration = |name: &str, function: &str| {
        format!(
            "[integrations.{name}]\nconnection = \"sandbox\"\nproject_id = \"sandbox-project\"\nfunction = \"{function}\"\nurl = \"{}\"\ncustom_parameters = {{ team = \"platform\" }}\n",
            google.function_url(function)
        )
    };
    let toml = format!(
        "connector_id = \"demo\"\ninstance_id = \"demo-0/0001\"\n[http]\nallow_insecure_loopback = true\n\n[connections.sandbox]\ncredentials = \"service_account_key\"\nkey_file = \"{}\"\n\n{}\n{}\n{}\n[control_plane]\nurl = \"{}\"\ntoken_env = \"DEMO_CONNECTOR_TOKEN\"\nwait = \"1s\"\nlease = \"30s\"\nheartbeat_interval = \"2s\"\n\n[push]\nlisten = \"127.0.0.1:0\"\nsecret_files = [\"{}\"]\n\n[journal]\npath = \"{}\"\n\n[engine]\nshutdown_grace = \"5s\"\n",
        key_file.display(),
        integration("orders-db", "grant-orders-db"),
        integration("crm", "grant-crm"),
        integration("hr", "grant-hr"),
        cp.url(),
        secret_file.display(),
        dir.path().join("journal.db").display(),
    );
    let config_path = dir.path().join("grantbridge.toml");
    std::fs::write(&config_path, &toml).map_err(|e| e.to_string())?;
    let env = MapEnv::new()
        .with("DEMO_CONNECTOR_TOKEN", CP_TOKEN)
        .with("HOME", dir.path().display().to_string());
    let config = Config::load(&config_path, &env).map_err(|e| e.to_string())?;
    let daemon = Daemon::build(config, &env, Clock::system(), Arc::new(Metrics::new()))
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let push_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let shutdown = CancellationToken::new();
    let listeners = crate::daemon::Listeners {
        push: Some(listener),
        admin: None,
    };
    let running = tokio::spawn(daemon.run(listeners, shutdown.clone()));

    println!("grantbridge demo: Google sandbox, control plane and daemon on 127.0.0.1\n");
    let steps = scenario();
    for s in &steps {
        cp.enqueue(json!({"id": s.id, "integration": s.integration, "event_type": s.event, "params": s.params}));
    }

    // A pushed action, signed, answered synchronously with ?wait=.
    let push_body = json!({"id": "push-1", "integration": "orders-db", "event_type": "revoke-access", "params": grant("bob")}).to_string();
    let path = "/v1/actions?wait=10";
    let ts = Clock::system().unix_secs();
    let push = reqwest::Client::new()
        .post(format!("http://{push_addr}{path}"))
        .header("content-type", "application/json")
        .header("x-grantbridge-timestamp", ts.to_string())
        .header(
            "x-grantbridge-signature",
            sign(PUSH_SECRET, ts, "POST", path, push_body.as_bytes()),
        )
        .body(push_body)
        .send()
        .await
        .map_err(|e| format!("push: {e}"))?;
    let push_status = push.status().as_u16();
    let push_result: Option<ActionResult> = push.json().await.ok();

    let results = cp
        .wait_for_results(steps.len() + 1, Duration::from_secs(30))
        .await;
    shutdown.cancel();
    running
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;

    println!(
        "{:<7} {:<10} {:<15} {:<20} {:>8} {:>6} {:>7}  WHAT",
        "ACTION", "INTEGR.", "EVENT", "RESULT", "ATTEMPTS", "HTTP", "MS"
    );
    let mut wrong = Vec::new();
    let mut row = |id: &str,
                   integration: &str,
                   event: &str,
                   what: &str,
                   expect: &str,
                   expect_attempts: Option<u32>,
                   r: Option<&ActionResult>| {
        let (got, attempts, http, ms, detail) = match r {
            Some(r) => (
                r.error
                    .as_ref()
                    .map(|e| e.code.as_str().to_owned())
                    .unwrap_or_else(|| "succeeded".into()),
                r.attempts.to_string(),
                r.function
                    .as_ref()
                    .and_then(|f| f.status)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.function
                    .as_ref()
                    .map(|f| f.latency_ms.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.error
                    .as_ref()
                    .map(|e| e.message.chars().take(60).collect::<String>())
                    .unwrap_or_default(),
            ),
            None => (
                "(no result)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                String::new(),
            ),
        };
        let ok =
            got == expect && expect_attempts.is_none_or(|a| r.is_some_and(|r| r.attempts == a));
        if !ok {
            wrong.push(format!(
                "{id}: expected {expect}, got {got} after {attempts} attempt(s)"
            ));
        }
        let mark = if ok { " " } else { "✗" };
        println!(
            "{mark}{id:<6} {integration:<10} {event:<15} {got:<20} {attempts:>8} {http:>6} {ms:>7}  {what}{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(" — {detail}")
            }
        );
    };
    for s in &steps {
        row(
            s.id,
            s.integration,
            s.event,
            s.what,
            s.expect,
            s.expect_attempts,
            results.get(s.id).map(|r| &r.parsed),
        );
    }
    let pushed = push_result.as_ref().filter(|_| push_status == 200);
    row(
        "push-1",
        "orders-db",
        "revoke-access",
        "pushed with ?wait=10: answered synchronously (HTTP 200)",
        "succeeded",
        Some(1),
        pushed,
    );

    let duplicates: u32 = results.values().map(|r| r.reports.saturating_sub(1)).sum();
    println!(
        "\n{} results reported to the control plane ({} duplicate reports); {} function calls; done in {:.1}s",
        results.len(),
        duplicates,
        ["grant-orders-db", "grant-crm", "grant-hr"]
            .iter()
            .map(|f| google.invocations(f).len())
            .sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    if wrong.is_empty() {
        println!("every result is the expected one");
        Ok(())
    } else {
        Err(format!("unexpected results:\n  {}", wrong.join("\n  ")))
    }
}

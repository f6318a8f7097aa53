//! The demo's world and scenario: the emulated Google with three sample
//! functions (one flaky, one the connector may not invoke), a control plane
//! holding seven actions, a push secret, and what each result must be.
//!
//! The connector itself is not here: `grantbridge demo` starts the real daemon
//! against this world, and [`DemoWorld::verdict`] prints the table and says
//! whether every result is the expected one. It only uses loopback addresses
//! and a temporary directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon_config::{DaemonConfig, Integration};
use crate::protocol::ReportedResult;
use crate::pusher::Pusher;
use crate::{
    Clock, ControlPlane, ControlPlaneOptions, Faults, FunctionImpl, ResultRecord, Sandbox,
    SandboxError, SandboxOptions,
};

const SA: &str = "grantbridge@sandbox-project.iam.gserviceaccount.com";
const CP_TOKEN: &str = "demo-connector-token";
const PUSH_SECRET: &str = "demo-push-secret-0123456789abcdef";

/// One step of the scenario and what must come of it.
pub struct Step {
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

pub fn scenario() -> Vec<Step> {
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

/// The pushed action's id (answered synchronously with `?wait=`).
const PUSHED: &str = "push-1";

/// Google, a control plane and the files a connector needs, all on loopback.
pub struct DemoWorld {
    pub google: Sandbox,
    pub control_plane: ControlPlane,
    dir: tempfile::TempDir,
    key_file: PathBuf,
    secret_file: PathBuf,
}

/// How the pushed action was answered.
#[derive(Debug, Clone)]
pub struct PushAnswer {
    pub status: u16,
    pub result: Option<ReportedResult>,
}

impl DemoWorld {
    /// Starts Google and the control plane and deploys the functions.
    pub async fn start() -> Result<Self, SandboxError> {
        let dir = tempfile::tempdir().map_err(|source| SandboxError::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        let google = Sandbox::start(SandboxOptions::default()).await?;
        google.create_service_account(SA);
        let key = google.create_key(SA);
        let key_file = dir.path().join("sa.json");
        crate::standalone::write_private(&key_file, &key.json).map_err(|source| {
            SandboxError::Write {
                path: key_file.clone(),
                source,
            }
        })?;
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
        let control_plane = ControlPlane::start(ControlPlaneOptions {
            connector_id: "demo".into(),
            tokens: vec![CP_TOKEN.into()],
            clock: Clock::system(),
        })
        .await?;
        let secret_file = dir.path().join("push-secret");
        crate::standalone::write_private(&secret_file, PUSH_SECRET).map_err(|source| {
            SandboxError::Write {
                path: secret_file.clone(),
                source,
            }
        })?;
        Ok(Self {
            google,
            control_plane,
            dir,
            key_file,
            secret_file,
        })
    }

    /// The environment variable the configuration reads the connector token from, and its value.
    pub fn token_env(&self) -> (&'static str, &'static str) {
        ("DEMO_CONNECTOR_TOKEN", CP_TOKEN)
    }

    /// The folder the world's files live in (a `HOME` for the connector).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The connector's configuration: poll and push, the three integrations.
    pub fn config(&self) -> DaemonConfig {
        let mut config = DaemonConfig::new("demo")
            .instance_id("demo-0/0001")
            .key_file_connection("sandbox", &self.key_file);
        for (name, function) in [
            ("orders-db", "grant-orders-db"),
            ("crm", "grant-crm"),
            ("hr", "grant-hr"),
        ] {
            config = config.integration(
                name,
                Integration::new(
                    "sandbox",
                    "sandbox-project",
                    function,
                    &self.google.function_url(function),
                )
                .custom_parameters(json!({"team": "platform"})),
            );
        }
        let (token_env, _) = self.token_env();
        config
            .control_plane(&self.control_plane.url(), token_env)
            .set("control_plane.heartbeat_interval", "2s")
            .push(&self.secret_file)
            .journal(&self.dir.path().join("journal.db"))
            .set("engine.shutdown_grace", "5s")
    }

    /// Puts the scenario's actions on the control plane's queue.
    pub fn enqueue_scenario(&self) {
        for s in scenario() {
            self.control_plane.enqueue(json!({"id": s.id, "integration": s.integration, "event_type": s.event, "params": s.params}));
        }
    }

    /// Pushes one signed action to the connector and waits for its answer (`?wait=10`).
    pub async fn push_one(&self, push_addr: SocketAddr) -> PushAnswer {
        let body = json!({"id": PUSHED, "integration": "orders-db", "event_type": "revoke-access", "params": grant("bob")}).to_string();
        let answer = Pusher::new(push_addr, PUSH_SECRET)
            .send("POST", "/v1/actions?wait=10", &body, 0)
            .await;
        match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                PushAnswer {
                    status,
                    result: r.json().await.ok(),
                }
            }
            Err(_) => PushAnswer {
                status: 0,
                result: None,
            },
        }
    }

    /// Waits until every action (the scenario's and the pushed one) has a result.
    pub async fn wait_for_results(&self) -> HashMap<String, ResultRecord> {
        self.control_plane
            .wait_for_results(scenario().len() + 1, Duration::from_secs(30))
            .await
    }

    /// Prints the table; `Err` lists every result that was not the expected one.
    pub fn verdict(
        &self,
        results: &HashMap<String, ResultRecord>,
        pushed: &PushAnswer,
        elapsed: Duration,
    ) -> Result<(), String> {
        println!(
            "{:<7} {:<10} {:<15} {:<20} {:>8} {:>6} {:>7}  WHAT",
            "ACTION", "INTEGR.", "EVENT", "RESULT", "ATTEMPTS", "HTTP", "MS"
        );
        let mut wrong = Vec::new();
        for s in scenario() {
            row(&s, results.get(s.id).map(|r| &r.parsed), &mut wrong);
        }
        let push_step = Step {
            id: PUSHED,
            integration: "orders-db",
            event: "revoke-access",
            params: Value::Null,
            expect: "succeeded",
            expect_attempts: Some(1),
            what: "pushed with ?wait=10: answered synchronously (HTTP 200)",
        };
        let pushed = pushed.result.as_ref().filter(|_| pushed.status == 200);
        row(&push_step, pushed, &mut wrong);

        let duplicates: u32 = results.values().map(|r| r.reports.saturating_sub(1)).sum();
        println!(
            "\n{} results reported to the control plane ({} duplicate reports); {} function calls; done in {:.1}s",
            results.len(),
            duplicates,
            ["grant-orders-db", "grant-crm", "grant-hr"]
                .iter()
                .map(|f| self.google.invocations(f).len())
                .sum::<usize>(),
            elapsed.as_secs_f64()
        );
        if wrong.is_empty() {
            println!("every result is the expected one");
            Ok(())
        } else {
            Err(format!("unexpected results:\n  {}", wrong.join("\n  ")))
        }
    }
}

/// One line of the table; a result that is not the expected one goes to `wrong`.
fn row(step: &Step, result: Option<&ReportedResult>, wrong: &mut Vec<String>) {
    let got = result.map_or_else(
        || "(no result)".to_owned(),
        |r| r.error_code().unwrap_or("succeeded").to_owned(),
    );
    let attempts = result.map_or("-".to_owned(), |r| r.attempts.to_string());
    let call = result.and_then(|r| r.function.as_ref());
    let http = call
        .and_then(|f| f.status)
        .map_or("-".to_owned(), |s| s.to_string());
    let ms = call.map_or("-".to_owned(), |f| f.latency_ms.to_string());
    let detail: String = result
        .and_then(|r| r.error.as_ref())
        .map(|e| e.message.chars().take(60).collect())
        .unwrap_or_default();
    let ok = got == step.expect
        && step
            .expect_attempts
            .is_none_or(|a| result.is_some_and(|r| r.attempts == a));
    if !ok {
        wrong.push(format!(
            "{}: expected {}, got {got} after {attempts} attempt(s)",
            step.id, step.expect
        ));
    }
    let mark = if ok { " " } else { "✗" };
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" — {detail}")
    };
    println!(
        "{mark}{:<6} {:<10} {:<15} {got:<20} {attempts:>8} {http:>6} {ms:>7}  {}{detail}",
        step.id, step.integration, step.event, step.what
    );
}

//! The example functions customers copy (`examples/functions/python/`,
//! `examples/functions/node/`), each served by its real framework (Google's
//! Python functions-framework, Node's `@google-cloud/functions-framework`)
//! behind the sandbox's Cloud Functions front end, and driven through
//! grantbridge: the daemon in poll mode, and `grantbridge invoke` for the
//! Idempotency-Key deduplication.
//!
//! Needs `pip install -r examples/functions/python/requirements.txt` and
//! `npm ci --prefix examples/functions/node` (both done by .ci/run).

use std::path::{Path, PathBuf};
use std::time::Duration;

use grantbridge_sandbox::FunctionImpl;
use grantbridge_sandbox::daemon_config::DaemonConfig;
use serde_json::{Value, json};

use crate::helpers::{RunningDaemon, SA, TestEnv, free_port, spawn_control_plane, spawn_env};

const WAIT: Duration = Duration::from_secs(60);
const FUNCTION: &str = "grant-orders-db";
const INTEGRATION: &str = "orders-db";

#[derive(Clone, Copy, Debug)]
enum Runtime {
    Python,
    Node,
}

impl Runtime {
    fn dir(self) -> PathBuf {
        let sub = match self {
            Runtime::Python => "python",
            Runtime::Node => "node",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/functions")
            .join(sub)
    }

    fn command(self, port: u16) -> tokio::process::Command {
        let dir = self.dir();
        match self {
            Runtime::Python => {
                let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
                let mut cmd = tokio::process::Command::new(python);
                cmd.args(["-m", "functions_framework", "--target", "handle"])
                    .arg("--source")
                    .arg(dir.join("main.py"))
                    .args(["--port", &port.to_string(), "--host", "127.0.0.1"]);
                cmd
            }
            Runtime::Node => {
                let bin = dir.join("node_modules/.bin/functions-framework");
                assert!(
                    bin.exists(),
                    "{} is missing: run `npm ci --prefix examples/functions/node` first (.ci/run does)",
                    bin.display()
                );
                let mut cmd = tokio::process::Command::new("node");
                cmd.arg(bin)
                    .args(["--target=handle", &format!("--port={port}")])
                    .current_dir(&dir);
                cmd
            }
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Runtime::Python => "pip install -r examples/functions/python/requirements.txt",
            Runtime::Node => "npm ci --prefix examples/functions/node",
        }
    }
}

/// An example function served by its framework on 127.0.0.1, its stdout (the
/// function's JSON log lines) going to a file.
struct Served {
    _child: tokio::process::Child,
    log: PathBuf,
}

impl Served {
    /// The function's structured log lines (the framework's banner skipped).
    fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("severity").is_some())
            .collect()
    }
}

/// Starts the example under `runtime`'s framework and deploys it behind the
/// sandbox front end as `FUNCTION`, invokable by `SA`.
async fn serve(env: &TestEnv, runtime: Runtime) -> Served {
    let port = free_port();
    let log = env.dir.path().join(format!("{runtime:?}-function.log"));
    let stderr = env.dir.path().join(format!("{runtime:?}-function.stderr"));
    let mut child = runtime
        .command(port)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {runtime:?} framework: {e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the {runtime:?} functions-framework exited early ({status}); is it installed? {}\n{}",
                runtime.install_hint(),
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the {runtime:?} functions-framework did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let upstream = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    env.sandbox
        .deploy_function(FUNCTION, FunctionImpl::Proxy(upstream), &[SA]);
    Served { _child: child, log }
}

/// The harness's integration with the examples' custom parameter.
fn with_role_prefix(env: &TestEnv, config: DaemonConfig) -> DaemonConfig {
    config.integration(
        INTEGRATION,
        env.integration(FUNCTION)
            .custom_parameters(json!({"role_prefix": "orders_"})),
    )
}

fn access(id: &str, event_type: &str, resources: &[&str]) -> Value {
    json!({"id": id, "integration": INTEGRATION, "event_type": event_type, "params": {
        "grant_id": "g-42", "username": "alice@example.com", "resource_type": "db",
        "resources": resources, "permission": "read"}})
}

/// Enqueues one action and waits for its result (one at a time: the story's
/// order matters), returning the reported result as JSON.
async fn run_one(cp: &grantbridge_sandbox::ControlPlane, action: Value) -> Value {
    let id = cp.enqueue(action);
    let count = cp.results().len() + 1;
    let results = cp.wait_for_results(count, WAIT).await;
    results
        .get(&id)
        .unwrap_or_else(|| panic!("no result for {id} within {WAIT:?}"))
        .result
        .clone()
}

fn changes(result: &Value) -> Vec<(String, String, bool)> {
    result["function"]["body"]["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes in {result:#}"))
        .iter()
        .map(|c| {
            (
                c["resource"].as_str().unwrap().to_owned(),
                c["role"].as_str().unwrap().to_owned(),
                c["changed"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The daemon in poll mode runs a grant, a list-resources and a revoke against
/// the example, and the control plane gets what the function answered.
async fn poll_mode_story(runtime: Runtime) {
    let env = spawn_env().await;
    let served = serve(&env, runtime).await;
    let cp = spawn_control_plane().await;
    let toml = env.daemon_config(&cp, &[(INTEGRATION, FUNCTION)]);
    let daemon = RunningDaemon::start(&env, &with_role_prefix(&env, toml)).await;

    let grant = run_one(
        &cp,
        access("act-grant", "grant-access", &["orders", "payments"]),
    )
    .await;
    assert_eq!(grant["outcome"], "succeeded", "{grant:#}");
    assert_eq!(grant["function"]["status"], 200);
    assert_eq!(grant["function"]["body"]["replayed"], false);
    let granted = vec![
        ("orders".into(), "orders_orders_read".into(), true),
        ("payments".into(), "orders_payments_read".into(), true),
    ];
    assert_eq!(
        changes(&grant),
        granted,
        "role_prefix from custom_parameters"
    );

    let list = run_one(
        &cp,
        json!({"id": "act-list", "integration": INTEGRATION, "event_type": "list-resources",
               "params": {"resource_type": "db"}}),
    )
    .await;
    assert_eq!(list["outcome"], "succeeded", "{list:#}");
    assert_eq!(
        list["function"]["body"]["resources"][1],
        json!({"id": "orders", "name": "orders", "type": "db",
               "metadata": {"engine": "postgres", "location": "us-central1"}})
    );
    assert_eq!(
        list["function"]["body"]["resources"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        list["function"]["body"]["permissions"][0],
        json!({"id": "read", "name": "Read only"})
    );

    let revoke = run_one(
        &cp,
        access("act-revoke", "revoke-access", &["orders", "payments"]),
    )
    .await;
    assert_eq!(revoke["outcome"], "succeeded", "{revoke:#}");
    assert!(changes(&revoke).iter().all(|c| c.2), "{revoke:#}");
    // A second revoke (another action) finds nothing left: the first one took effect.
    let again = run_one(&cp, access("act-revoke-2", "revoke-access", &["orders"])).await;
    assert_eq!(again["outcome"], "succeeded", "{again:#}");
    assert_eq!(
        changes(&again),
        vec![("orders".into(), "orders_orders_read".into(), false)]
    );

    // What the backend cannot do is a business failure: not retried, the
    // function's message relayed.
    let bad = run_one(&cp, access("act-bad", "grant-access", &["orders", "nope"])).await;
    assert_eq!(bad["outcome"], "failed", "{bad:#}");
    assert_eq!(bad["error"]["code"], "function_error");
    assert_eq!(bad["error"]["retryable"], false);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown db resource(s): nope"),
        "{bad:#}"
    );
    assert_eq!(bad["attempts"], 1);
    let summary = daemon.stop().await;
    assert_eq!((summary.left_unfinished, summary.outbox_left), (0, 0));

    // Every call reached the function once, keyed by its action id, and the
    // function logged it under grantbridge's trace id.
    let calls = env.sandbox.invocations(FUNCTION);
    let keys: Vec<_> = calls
        .iter()
        .map(|c| c.idempotency_key.clone().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "act-grant",
            "act-list",
            "act-revoke",
            "act-revoke-2",
            "act-bad"
        ]
    );
    let lines = served.log_lines();
    for call in &calls {
        let trace_id = call
            .traceparent
            .as_deref()
            .unwrap()
            .split('-')
            .nth(1)
            .unwrap();
        let key = call.idempotency_key.as_deref().unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l["trace_id"] == trace_id && l["idempotency_key"] == key),
            "no log line of {key} with trace id {trace_id} in {lines:#?}"
        );
    }
    let log = std::fs::read_to_string(&served.log).unwrap();
    assert!(!log.contains("Bearer"), "the function logged a token");
}

/// `grantbridge invoke` output: the first line and the JSON body after it.
async fn invoke(env: &TestEnv, config: &Path, args: &[&str]) -> (String, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .arg("--config")
        .arg(config)
        .arg("invoke")
        .args([INTEGRATION])
        .args(args)
        .env("HOME", env.dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grantbridge invoke {args:?}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (first, body) = stdout.split_once('\n').unwrap();
    (
        first.to_owned(),
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {stdout}")),
    )
}

const GRANT: &[&str] = &[
    "grant-access",
    "-p",
    "grant_id=g-7",
    "-p",
    "username=bob@example.com",
    "-p",
    "resource_type=db",
    "-p",
    "resources=[\"orders\"]",
    "-p",
    "permission=write",
];

/// The same action id delivered twice runs the backend once: the second call
/// gets the first answer, marked replayed, and changes nothing.
async fn dedupe_story(runtime: Runtime) {
    let env = spawn_env().await;
    let served = serve(&env, runtime).await;
    let config = env.write_config(&with_role_prefix(
        &env,
        env.config(&[(INTEGRATION, FUNCTION)]),
    ));
    let with_key = |key: &'static str| [GRANT, &["--idempotency-key", key]].concat();

    let (line, first) = invoke(&env, &config, &with_key("act-dup")).await;
    assert!(
        line.starts_with("HTTP 200 · succeeded · 1 attempt, answered in"),
        "{line}"
    );
    assert_eq!(first["replayed"], false);
    assert_eq!(first["changes"][0]["changed"], true);

    // Revoke it under another key, then deliver the grant again.
    let mut revoke = GRANT.to_vec();
    revoke[0] = "revoke-access";
    revoke.extend(["--idempotency-key", "act-undo"]);
    let (_, undone) = invoke(&env, &config, &revoke).await;
    assert_eq!(undone["changes"][0]["changed"], true);

    let (line, again) = invoke(&env, &config, &with_key("act-dup")).await;
    assert!(
        line.starts_with("HTTP 200 · succeeded · 1 attempt, answered in"),
        "{line}"
    );
    assert_eq!(again["replayed"], true);
    let mut expected = first.clone();
    expected["replayed"] = json!(true);
    assert_eq!(again, expected, "the first answer, as it was");

    // The replay did not grant again: nothing is granted now.
    let (_, status) = invoke(&env, &config, &["get-status"]).await;
    assert_eq!(status["grants"], 0, "{status:#}");
    // Both deliveries reached the function through the front end.
    let dup_calls = env
        .sandbox
        .invocations(FUNCTION)
        .into_iter()
        .filter(|c| c.idempotency_key.as_deref() == Some("act-dup"))
        .count();
    assert_eq!(dup_calls, 2);
    assert!(
        served
            .log_lines()
            .iter()
            .any(|l| l["idempotency_key"] == "act-dup" && l["replayed"] == true),
        "the replay is logged"
    );
}

#[tokio::test]
async fn python_example_grants_lists_and_revokes_in_poll_mode() {
    poll_mode_story(Runtime::Python).await;
}

#[tokio::test]
async fn node_example_grants_lists_and_revokes_in_poll_mode() {
    poll_mode_story(Runtime::Node).await;
}

#[tokio::test]
async fn python_example_replays_a_repeated_idempotency_key() {
    dedupe_story(Runtime::Python).await;
}

#[tokio::test]
async fn node_example_replays_a_repeated_idempotency_key() {
    dedupe_story(Runtime::Node).await;
}

//! Test harness: a started sandbox with a service account and key on disk,
//! configurations built with the sandbox's typed [`DaemonConfig`], and the
//! real daemon started through [`Application`] as a [`RunningDaemon`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use grantbridge::app::Application;
use grantbridge::clock::Clock;
use grantbridge::config::Config;
use grantbridge::daemon::{ControlPlaneState, Reloader, RunSummary};
use grantbridge::engine::Engine;
use grantbridge::env::MapEnv;
use grantbridge::function::{Call, Invoker, Report};
use grantbridge::retry::Backoff;
use grantbridge::services::Services;
use grantbridge_sandbox::daemon_config::{DaemonConfig, Integration};
use grantbridge_sandbox::pusher::Pusher;
use grantbridge_sandbox::{
    ControlPlane, ControlPlaneOptions, FunctionImpl, Sandbox, SandboxOptions,
};
use tokio_util::sync::CancellationToken;

pub const SA: &str = "grantbridge@sandbox-project.iam.gserviceaccount.com";
pub const CP_TOKEN: &str = "test-connector-token";
pub const PUSH_SECRET: &str = "test-push-secret-0123456789abcdef";

/// A sandbox, a temp dir holding `sa.json` (a key of `SA`), and helpers.
pub struct TestEnv {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub key_file: PathBuf,
    pub key_id: String,
}

pub async fn spawn_env() -> TestEnv {
    let sandbox = Sandbox::start(SandboxOptions::default())
        .await
        .expect("sandbox starts");
    sandbox.create_service_account(SA);
    let key = sandbox.create_key(SA);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("sa.json");
    std::fs::write(&key_file, &key.json).unwrap();
    TestEnv {
        sandbox,
        dir,
        key_file,
        key_id: key.private_key_id,
    }
}

pub async fn spawn_control_plane() -> ControlPlane {
    ControlPlane::start(ControlPlaneOptions {
        connector_id: "test".into(),
        tokens: vec![CP_TOKEN.into()],
        clock: grantbridge_sandbox::Clock::system(),
    })
    .await
    .expect("control plane starts")
}

impl TestEnv {
    /// Deploys a sample function `name` that `SA` may invoke, returning its URL.
    pub fn deploy(&self, name: &str) -> String {
        self.sandbox
            .deploy_function(name, FunctionImpl::Sample, &[SA])
    }

    /// The integration `name` calling the sandbox's `function` with connection
    /// `prod`, and custom parameters with a nested table.
    pub fn integration(&self, function: &str) -> Integration {
        Integration::new(
            "prod",
            "sandbox-project",
            function,
            &self.sandbox.function_url(function),
        )
        .custom_parameters(serde_json::json!({"param1": "x", "nested": {"a": 1}}))
    }

    /// Connector `test`, connection `prod` (the key file) and one integration
    /// per `(integration, function)`, each pointing at the sandbox.
    pub fn config(&self, integrations: &[(&str, &str)]) -> DaemonConfig {
        integrations.iter().fold(
            DaemonConfig::new("test").key_file_connection("prod", &self.key_file),
            |config, (name, function)| config.integration(name, self.integration(function)),
        )
    }

    /// [`TestEnv::config`] plus a control plane, a journal in the temp dir, a
    /// short shutdown grace and the admin listener: what the daemon needs.
    pub fn daemon_config(&self, cp: &ControlPlane, integrations: &[(&str, &str)]) -> DaemonConfig {
        self.config(integrations)
            .instance_id("it-0/0001")
            .control_plane(&cp.url(), "CP_TOKEN")
            .journal(&self.dir.path().join("journal.db"))
            .set("engine.shutdown_grace", "5s")
            .admin()
    }

    /// `config` with push mode on (the test secret, 4 KiB bodies).
    pub fn with_push(&self, config: DaemonConfig) -> DaemonConfig {
        let secret = self.dir.path().join("push-secret");
        std::fs::write(&secret, PUSH_SECRET).unwrap();
        config.push(&secret).set("push.max_body_bytes", 4096)
    }

    /// A push-only daemon (no leasing; results still reported to `cp`).
    pub fn push_daemon_config(
        &self,
        cp: &ControlPlane,
        integrations: &[(&str, &str)],
    ) -> DaemonConfig {
        self.with_push(
            self.daemon_config(cp, integrations)
                .set("control_plane.poll", false),
        )
    }

    /// `grantbridge sandbox --dir DIR ARGS` as a child process, and its stdout
    /// line by line (it prints the config path and hints once serving).
    pub fn standalone_sandbox(
        &self,
        dir: &std::path::Path,
        args: &[&str],
    ) -> (
        tokio::process::Child,
        tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    ) {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
            .arg("sandbox")
            .args(args)
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("grantbridge sandbox starts");
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    }

    pub fn write_config(&self, config: &DaemonConfig) -> PathBuf {
        let path = self.dir.path().join("grantbridge.toml");
        config.write_to(&path).unwrap();
        path
    }

    pub fn services(&self, config: &DaemonConfig) -> Services {
        self.services_with(
            config,
            &MapEnv::new().with("HOME", "/nonexistent"),
            Clock::system(),
        )
    }

    pub fn services_with(&self, config: &DaemonConfig, env: &MapEnv, clock: Clock) -> Services {
        let config = Config::load(&self.write_config(config), env).expect("config loads");
        Services::build(
            config,
            env,
            clock,
            Arc::new(grantbridge::metrics::Metrics::new()),
        )
        .expect("services build")
    }

    pub fn daemon_env(&self) -> MapEnv {
        MapEnv::new()
            .with("CP_TOKEN", CP_TOKEN)
            .with("HOME", self.dir.path().display().to_string())
    }

    /// A `grantbridge run` child process (for SIGKILL and SIGTERM tests),
    /// logging JSON to `NAME.log`.
    pub fn spawn_process(&self, config: &DaemonConfig, name: &str) -> tokio::process::Child {
        self.spawn_run(config, name, &["--log-format", "json"]).0
    }

    /// `grantbridge ARGS run` on `config` (written to `NAME.toml`) as a child
    /// process, its stderr in `NAME.log`: the child and the log's path.
    pub fn spawn_run(
        &self,
        config: &DaemonConfig,
        name: &str,
        args: &[&str],
    ) -> (tokio::process::Child, PathBuf) {
        self.spawn_run_with(config, name, args, &[])
    }

    /// [`TestEnv::spawn_run`] with more environment variables.
    pub fn spawn_run_with(
        &self,
        config: &DaemonConfig,
        name: &str,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> (tokio::process::Child, PathBuf) {
        let path = self.dir.path().join(format!("{name}.toml"));
        config.write_to(&path).unwrap();
        let log = self.dir.path().join(format!("{name}.log"));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
            .arg("--config")
            .arg(&path)
            .args(args)
            .arg("run")
            .env("CP_TOKEN", CP_TOKEN)
            .env("HOME", self.dir.path())
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("grantbridge run starts");
        (child, log)
    }
}

/// An invoker with short backoff, so retry tests take milliseconds.
pub fn fast_invoker(services: &Services) -> Invoker {
    Invoker::new(
        grantbridge::http::client().unwrap(),
        services.tokens.clone(),
        Clock::system(),
        services.metrics.clone(),
        services.config.http.max_response_bytes,
    )
    .with_backoff(Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    })
}

pub fn grant_call(key: &str) -> Call {
    Call {
        trace_id: None,
        sampled: true,
        event_type: grantbridge::contract::EventType::GrantAccess,
        params: serde_json::json!({
            "grant_id": "g-1", "username": "alice@example.com", "resource_type": "db",
            "resources": ["orders"], "permission": "read"
        })
        .as_object()
        .unwrap()
        .clone()
        .into(),
        idempotency_key: key.to_owned(),
        not_after: None,
    }
}

pub async fn invoke(services: &Services, integration: &str, call: &Call) -> Report {
    fast_invoker(services)
        .invoke(&services.config.integrations[integration], call)
        .await
}

/// A revoke-access action for `integration`.
pub fn action(id: &str, integration: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "integration": integration, "event_type": "revoke-access", "params": {
        "grant_id": format!("g-{id}"), "username": format!("{id}@example.com"), "resource_type": "db",
        "resources": ["orders"], "permission": "read"}})
}

/// A daemon running in this process, started through [`Application`].
pub struct RunningDaemon {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<RunSummary>,
    pub push_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub state: Arc<ControlPlaneState>,
    /// What SIGHUP does, for this daemon's configuration file.
    pub reloader: Reloader,
    pub config_path: PathBuf,
}

impl RunningDaemon {
    /// Writes `config` to a file of its own and starts the daemon on it.
    pub async fn start(env: &TestEnv, config: &DaemonConfig) -> Self {
        let path = env
            .dir
            .path()
            .join(format!("daemon-{}.toml", unique_suffix()));
        config.write_to(&path).unwrap();
        let menv = env.daemon_env();
        let loaded = Config::load(&path, &menv).expect("daemon config loads");
        let app = Application::build(loaded, &menv, Clock::system())
            .await
            .expect("daemon builds");
        let shutdown = CancellationToken::new();
        Self {
            push_addr: app.push_addr(),
            admin_addr: app.admin_addr().expect("tests configure [admin]"),
            engine: app.engine().clone(),
            state: app.control_plane_state().clone(),
            reloader: app.reloader(path.clone(), grantbridge::telemetry::LogHandle::inert()),
            config_path: path,
            handle: tokio::spawn({
                let shutdown = shutdown.clone();
                async move { app.run_until_stopped(shutdown).await.expect("daemon runs") }
            }),
            shutdown,
        }
    }

    /// Graceful stop (what SIGTERM does); returns how the run ended.
    pub async fn stop(self) -> RunSummary {
        self.request_stop();
        self.stopped().await
    }

    /// Starts the graceful stop without waiting for it.
    pub fn request_stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits for the daemon to stop; how the run ended.
    pub async fn stopped(self) -> RunSummary {
        self.handle.await.expect("daemon task")
    }

    /// Signs requests for this daemon's push endpoint with the test secret.
    pub fn pusher(&self) -> Pusher {
        Pusher::new(
            self.push_addr.expect("the daemon runs in push mode"),
            PUSH_SECRET,
        )
    }

    /// Pushes `action` (signed `POST /v1/actions`).
    pub async fn push(&self, action: &serde_json::Value) -> reqwest::Response {
        self.signed("POST", "/v1/actions", &action.to_string(), 0)
            .await
    }

    /// A signed request, its timestamp `ts_offset` seconds from now.
    pub async fn signed(
        &self,
        method: &str,
        path: &str,
        body: &str,
        ts_offset: i64,
    ) -> reqwest::Response {
        self.signed_with(PUSH_SECRET, method, path, body, ts_offset)
            .await
    }

    /// A request signed with another secret.
    pub async fn signed_with(
        &self,
        secret: &str,
        method: &str,
        path: &str,
        body: &str,
        ts_offset: i64,
    ) -> reqwest::Response {
        self.pusher()
            .send_with_secret(secret, method, path, body, ts_offset)
            .await
            .expect("the push endpoint answers")
    }

    /// `GET` on the admin listener: the status and the body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{}{path}", self.admin_addr))
            .send()
            .await
            .expect("the admin endpoint answers");
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A free port on 127.0.0.1 for a listener a child process binds (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends SIGHUP to a `grantbridge run` child.
pub async fn hup(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    assert!(
        tokio::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
}

/// Waits until the child's log has `needle` `count` times.
pub async fn wait_for_log(path: &std::path::Path, needle: &str, count: usize) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`{needle}` never appeared in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one of the repository's Python scripts (`tests/interop/NAME.py`, say)
/// with `args` and returns the JSON object it prints; a failing script fails
/// the test with its stderr.
pub async fn python_json(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints one JSON object")
}

//! Test harness: a started sandbox with a service account and key on disk, and
//! a grantbridge configuration pointing at it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use grantbridge::app::GoogleSide;
use grantbridge::clock::Clock;
use grantbridge::config::Config;
use grantbridge::env::MapEnv;
use grantbridge::function::{Call, Invoker, Report};
use grantbridge::metrics::Metrics;
use grantbridge::retry::Backoff;
use grantbridge::sandbox::{FunctionImpl, Sandbox, SandboxOptions};

pub const SA: &str = "grantbridge@sandbox-project.iam.gserviceaccount.com";

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

impl TestEnv {
    /// Deploys a sample function `name` that `SA` may invoke, returning its URL.
    pub fn deploy(&self, name: &str) -> String {
        self.sandbox
            .deploy_function(name, FunctionImpl::Sample, &[SA])
    }

    /// A config with connection `prod` (the key file) and one integration per
    /// `(integration, function)`, each pointing at the sandbox URL; `extra` is
    /// appended verbatim to every integration table.
    pub fn config_toml(&self, integrations: &[(&str, &str)], extra: &str) -> String {
        let mut toml = format!(
            "connector_id = \"test\"\n[http]\nallow_insecure_loopback = true\n\n[connections.prod]\ncredentials = \"service_account_key\"\nkey_file = \"{}\"\n",
            self.key_file.display()
        );
        for (name, function) in integrations {
            toml.push_str(&format!(
                "\n[integrations.{name}]\nconnection = \"prod\"\nproject_id = \"sandbox-project\"\nfunction = \"{function}\"\nurl = \"{}\"\ncustom_parameters = {{ param1 = \"x\", nested = {{ a = 1 }} }}\n{extra}\n",
                self.sandbox.function_url(function)
            ));
        }
        toml
    }

    pub fn write_config(&self, toml: &str) -> PathBuf {
        let path = self.dir.path().join("grantbridge.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    pub fn google(&self, toml: &str) -> GoogleSide {
        self.google_with(
            toml,
            &MapEnv::new().with("HOME", "/nonexistent"),
            Clock::system(),
        )
    }

    pub fn google_with(&self, toml: &str, env: &MapEnv, clock: Clock) -> GoogleSide {
        let config = Config::load(&self.write_config(toml), env).expect("config loads");
        GoogleSide::build(config, env, clock, Arc::new(Metrics::new())).expect("app builds")
    }
}

/// An invoker with short backoff, so retry tests take milliseconds.
pub fn fast_invoker(google: &GoogleSide) -> Invoker {
    Invoker::new(
        grantbridge::http::client().unwrap(),
        google.tokens.clone(),
        Clock::system(),
        google.metrics.clone(),
        google.config.http.max_response_bytes,
    )
    .with_backoff(Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    })
}

pub fn grant_call(key: &str) -> Call {
    Call {
        event_type: grantbridge::contract::EventType::GrantAccess,
        params: serde_json::json!({
            "grant_id": "g-1", "username": "alice@example.com", "resource_type": "db",
            "resources": ["orders"], "permission": "read"
        })
        .as_object()
        .unwrap()
        .clone(),
        idempotency_key: key.to_owned(),
        not_after: None,
    }
}

pub async fn invoke(google: &GoogleSide, integration: &str, call: &Call) -> Report {
    fast_invoker(google)
        .invoke(&google.config.integrations[integration], call)
        .await
}

// ---- The daemon against the sandbox and the simulated control plane. ----

use grantbridge::daemon::{Daemon, RunSummary};
use grantbridge::engine::Engine;
use grantbridge::sandbox::{ControlPlane, ControlPlaneOptions};
use tokio_util::sync::CancellationToken;

pub const CP_TOKEN: &str = "test-connector-token";
pub const PUSH_SECRET: &str = "test-push-secret-0123456789abcdef";

pub async fn spawn_control_plane() -> ControlPlane {
    ControlPlane::start(ControlPlaneOptions {
        connector_id: "test".into(),
        tokens: vec![CP_TOKEN.into()],
        clock: Clock::system(),
    })
    .await
    .expect("control plane starts")
}

/// Where a daemon keeps its state, and the knobs tests turn.
pub struct DaemonSpec<'a> {
    pub integrations: &'a [(&'a str, &'a str)],
    /// Extra keys for every integration table.
    pub integration_extra: &'a str,
    pub poll: bool,
    pub push: bool,
    pub lease: &'a str,
    pub journal: PathBuf,
    pub instance_id: &'a str,
    /// Extra `[engine]` keys.
    pub engine: &'a str,
    /// Extra `[control_plane]` keys.
    pub control_plane: &'a str,
}

impl<'a> DaemonSpec<'a> {
    pub fn new(env: &TestEnv, integrations: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            integrations,
            integration_extra: "",
            poll: true,
            push: false,
            lease: "30s",
            journal: env.dir.path().join("journal.db"),
            instance_id: "it-0/0001",
            engine: "",
            control_plane: "",
        }
    }
}

impl TestEnv {
    /// A full daemon configuration pointing at this sandbox and `cp`.
    pub fn daemon_toml(&self, cp: &ControlPlane, spec: &DaemonSpec) -> String {
        let secret = self.dir.path().join("push-secret");
        std::fs::write(&secret, PUSH_SECRET).unwrap();
        let mut toml = format!(
            "instance_id = \"{}\"\n{}",
            spec.instance_id,
            self.config_toml(spec.integrations, spec.integration_extra)
        );
        toml.push_str(&format!(
            "\n[control_plane]\nurl = \"{}\"\ntoken_env = \"CP_TOKEN\"\npoll = {}\nwait = \"1s\"\nlease = \"{}\"\nheartbeat_interval = \"1s\"\n{}\n",
            cp.url(),
            spec.poll,
            spec.lease,
            spec.control_plane
        ));
        if spec.push {
            toml.push_str(&format!("\n[push]\nlisten = \"127.0.0.1:0\"\nsecret_files = [\"{}\"]\nmax_body_bytes = 4096\n", secret.display()));
        }
        toml.push_str(&format!(
            "\n[journal]\npath = \"{}\"\n\n[engine]\nshutdown_grace = \"5s\"\n{}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n", spec.journal.display(), spec.engine));
        toml
    }

    pub fn daemon_env(&self) -> MapEnv {
        MapEnv::new()
            .with("CP_TOKEN", CP_TOKEN)
            .with("HOME", self.dir.path().display().to_string())
    }
}

/// A daemon running in this process.
pub struct RunningDaemon {
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<RunSummary>,
    pub push_addr: Option<std::net::SocketAddr>,
    pub admin_addr: std::net::SocketAddr,
    pub engine: Arc<Engine>,
    pub status: Arc<grantbridge::daemon::Status>,
    /// What SIGHUP does, for this daemon's configuration file.
    pub reloader: grantbridge::daemon::Reloader,
    pub config_path: PathBuf,
}

impl RunningDaemon {
    /// Graceful stop (what SIGTERM does); returns how the run ended.
    pub async fn stop(self) -> RunSummary {
        self.shutdown.cancel();
        self.handle.await.expect("daemon task")
    }
}

pub async fn start_daemon(env: &TestEnv, toml: &str) -> RunningDaemon {
    let menv = env.daemon_env();
    let path = env
        .dir
        .path()
        .join(format!("daemon-{}.toml", rand_suffix()));
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path, &menv).expect("daemon config loads");
    let push = config.push.is_some();
    let daemon = Daemon::build(config, &menv, Clock::system(), Arc::new(Metrics::new()))
        .expect("daemon builds");
    let engine = daemon.engine().clone();
    let status = daemon.status().clone();
    let reloader = daemon.reloader(path.clone(), grantbridge::telemetry::LogHandle::inert());
    let (listener, push_addr) = if push {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (Some(l), Some(a))
    } else {
        (None, None)
    };
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn({
        let shutdown = shutdown.clone();
        let listeners = grantbridge::daemon::Listeners {
            push: listener,
            admin: Some(admin),
        };
        async move { daemon.run(listeners, shutdown).await.expect("daemon runs") }
    });
    RunningDaemon {
        shutdown,
        handle,
        push_addr,
        admin_addr,
        engine,
        status,
        reloader,
        config_path: path,
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A `grantbridge run` child process (for SIGKILL and SIGTERM tests).
pub fn spawn_daemon_process(env: &TestEnv, toml: &str, name: &str) -> tokio::process::Child {
    let path = env.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    let log = std::fs::File::create(env.dir.path().join(format!("{name}.log"))).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .arg("--config")
        .arg(&path)
        .args(["--log-format", "json", "run"])
        .env("CP_TOKEN", CP_TOKEN)
        .env("HOME", env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("grantbridge run starts")
}

pub fn action(id: &str, integration: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "integration": integration, "event_type": "revoke-access", "params": {
        "grant_id": format!("g-{id}"), "username": format!("{id}@example.com"), "resource_type": "db",
        "resources": ["orders"], "permission": "read"}})
}

/// Sends a signed push request.
pub async fn push(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    secret: &str,
    ts_offset: i64,
) -> reqwest::Response {
    let ts = Clock::system().unix_secs() + ts_offset;
    let sig = grantbridge::daemon::signature::sign(secret, ts, method, path, body.as_bytes());
    reqwest::Client::new()
        .request(method.parse().unwrap(), format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("x-grantbridge-timestamp", ts.to_string())
        .header("x-grantbridge-signature", sig)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

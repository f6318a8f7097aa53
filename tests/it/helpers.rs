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

//! Unit-test fixtures (compiled only for tests): a real [`Engine`] built from
//! a configuration file against the sandbox's Google, so the engine, the
//! daemon's loops and readiness can be tested step by step without the
//! listeners.

use std::sync::Arc;

use grantbridge_sandbox::daemon_config::{DaemonConfig, Integration};
use grantbridge_sandbox::{FunctionImpl, Sandbox, SandboxOptions};
use serde_json::json;

use crate::action::Action;
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Engine;
use crate::env::MapEnv;
use crate::journal::{Journal, JournalOptions};
use crate::metrics::Metrics;
use crate::services::Services;

pub(crate) const SA: &str = "unit@sandbox-project.iam.gserviceaccount.com";

/// The sandbox, a temp dir, and an engine whose integrations call it.
pub(crate) struct Fixture {
    pub(crate) google: Sandbox,
    /// Holds the key file, configuration and journal for the engine's life.
    _dir: tempfile::TempDir,
    pub(crate) engine: Arc<Engine>,
}

impl Fixture {
    /// Deploys one sample function per `(integration, function, invokers)`
    /// and builds an engine over them; `tune` adjusts the configuration.
    pub(crate) async fn start(
        functions: &[(&str, &str, &[&str])],
        tune: impl FnOnce(DaemonConfig) -> DaemonConfig,
    ) -> Self {
        Self::start_at(Clock::system(), functions, tune).await
    }

    /// The same with `clock` as the engine's clock (the journal keeps the
    /// host's), so a test can make what the journal stored look old.
    pub(crate) async fn start_at(
        clock: Clock,
        functions: &[(&str, &str, &[&str])],
        tune: impl FnOnce(DaemonConfig) -> DaemonConfig,
    ) -> Self {
        let google = Sandbox::start(SandboxOptions::default())
            .await
            .expect("sandbox starts");
        google.create_service_account(SA);
        let dir = tempfile::tempdir().expect("temp dir");
        let key_file = dir.path().join("sa.json");
        std::fs::write(&key_file, google.create_key(SA).json).expect("key file");
        let mut config = DaemonConfig::new("unit")
            .instance_id("unit/0")
            .key_file_connection("c", &key_file)
            .journal(&dir.path().join("journal.db"));
        for (integration, function, invokers) in functions {
            let url = google.deploy_function(function, FunctionImpl::Sample, invokers);
            config = config.integration(
                integration,
                Integration::new("c", "sandbox-project", function, &url),
            );
        }
        let path = dir.path().join("unit.toml");
        tune(config).write_to(&path).expect("config file");
        let env = MapEnv::new().with("HOME", dir.path().display().to_string());
        let config = Config::load(&path, &env).expect("config loads");
        let journal = Journal::open(JournalOptions::new(&config.journal.path), Clock::system())
            .expect("journal opens");
        let services = Services::build(config, &env, clock.clone(), Arc::new(Metrics::new()))
            .expect("services build");
        Self {
            engine: Engine::new(services, journal, clock),
            google,
            _dir: dir,
        }
    }
}

/// A grant-access action for `integration`, as the control plane sends it.
pub(crate) fn grant(id: &str, integration: &str) -> Action {
    Action::from_value(
        &json!({"id": id, "integration": integration, "event_type": "grant-access",
        "params": {"grant_id": "g-1", "username": "alice@example.com", "resource_type": "db",
            "resources": ["orders"], "permission": "read"}}),
    )
    .expect("a valid action")
}

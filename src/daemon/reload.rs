//! Configuration reload (SIGHUP): integrations, custom parameters, connections,
//! push secrets, the connector token and the log level take effect at once; an
//! invalid new configuration is refused and the running one stays.
//!
//! It must never leave the daemon without a configuration: the new one is
//! fully loaded and built before anything is swapped.

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::control_plane::ControlPlaneClient;
use crate::engine::Engine;
use crate::env::Environment;
use crate::services::{Services, ServicesError};
use crate::telemetry::{LogHandle, LogLevelError};

/// Why a new configuration was refused (the running one stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Services(#[from] ServicesError),
    #[error(transparent)]
    LogLevel(#[from] LogLevelError),
}

pub struct Reloader {
    pub(super) path: PathBuf,
    pub(super) engine: Arc<Engine>,
    pub(super) control_plane: Option<ControlPlaneClient>,
    pub(super) clock: Clock,
    pub(super) log: LogHandle,
}

impl Reloader {
    /// The files the configuration in force was read from.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.engine.config().files.clone()
    }

    /// Loads the configuration again and puts it in force, or refuses it.
    pub fn reload(&self, env: &dyn Environment) -> Result<(), ReloadError> {
        let metrics = self.engine.services().metrics.clone();
        let outcome = self.try_reload(env);
        metrics.config_reloaded(outcome.is_ok());
        match &outcome {
            Ok(integrations) => {
                tracing::info!(integrations, path = %self.path.display(), "configuration reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; the running configuration stays")
            }
        }
        outcome.map(|_| ())
    }

    /// Loads and builds the new configuration, then swaps it in; the number
    /// of integrations now in force.
    fn try_reload(&self, env: &dyn Environment) -> Result<usize, ReloadError> {
        let old = self.engine.config();
        let mut new = Config::load(&self.path, env)?;
        // Identity and listeners are fixed for the life of the process.
        new.instance_id = old.instance_id.clone();
        warn_restart_only(&old, &new);
        let metrics = self.engine.services().metrics.clone();
        let services = Services::build(new, env, self.clock.clone(), metrics)?;
        self.log.set_level(&services.config.log.level)?;
        if let (Some(cp), Some(settings)) = (&self.control_plane, &services.config.control_plane) {
            cp.set_token(settings.token.clone());
        }
        let integrations = services.config.integrations.len();
        self.engine.replace_services(services);
        Ok(integrations)
    }
}

/// Warns about every changed setting that only a restart applies.
fn warn_restart_only(old: &Config, new: &Config) {
    let control_plane_changed = match (&old.control_plane, &new.control_plane) {
        (Some(a), Some(b)) => !a.same_but_token(b),
        (a, b) => a.is_some() != b.is_some(),
    };
    let push_listen = |c: &Config| c.push.as_ref().map(|p| p.listen);
    let push_limits = |c: &Config| {
        c.push.as_ref().map(|p| {
            (
                p.max_body_bytes,
                p.header_timeout,
                p.body_timeout,
                p.max_connections,
                p.max_buffered_bytes,
            )
        })
    };
    for (setting, changed) in [
        ("connector_id", new.connector_id != old.connector_id),
        (
            "control_plane (other than its token)",
            control_plane_changed,
        ),
        ("push.listen", push_listen(new) != push_listen(old)),
        ("admin.listen", new.admin != old.admin),
        ("journal", new.journal != old.journal),
        (
            "log.format, log.trace_project",
            (new.log.format, &new.log.trace_project) != (old.log.format, &old.log.trace_project),
        ),
        ("traces", new.traces != old.traces),
        (
            "push limits (max_body_bytes, header_timeout, body_timeout, max_connections, max_buffered_bytes)",
            push_limits(new) != push_limits(old),
        ),
        ("checks", new.online_checks != old.online_checks),
        ("reload", new.watch_interval != old.watch_interval),
        ("engine", new.engine != old.engine),
    ] {
        if changed {
            tracing::warn!(
                setting,
                "changed in the configuration file; takes effect after a restart"
            );
        }
    }
}

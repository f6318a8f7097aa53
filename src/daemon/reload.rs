//! Configuration reload (SIGHUP): integrations, custom parameters, connections,
//! push secrets, the connector token and the log level take effect at once; an
//! invalid new configuration is refused and the running one stays.
//!
//! It must never leave the daemon without a configuration: the new one is
//! fully loaded and built before anything is swapped.

use std::path::PathBuf;
use std::sync::Arc;

use crate::app::GoogleSide;
use crate::clock::Clock;
use crate::config::Config;
use crate::control_plane::ControlPlaneClient;
use crate::engine::Engine;
use crate::env::Environment;
use crate::telemetry::LogHandle;

pub struct Reloader {
    pub(super) path: PathBuf,
    pub(super) engine: Arc<Engine>,
    pub(super) control_plane: Option<ControlPlaneClient>,
    pub(super) clock: Clock,
    pub(super) log: LogHandle,
}

impl Reloader {
    /// Loads the configuration again and puts it in force, or refuses it.
    pub fn reload(&self, env: &dyn Environment) -> Result<(), String> {
        let old = self.engine.config();
        let metrics = self.engine.google().metrics.clone();
        let refused = |why: String| {
            metrics.config_reloaded(false);
            tracing::error!(error = %why, "configuration reload refused; the running configuration stays");
            Err(why)
        };
        let mut new = match Config::load(&self.path, env) {
            Ok(c) => c,
            Err(e) => return refused(e.to_string()),
        };
        // Identity and listeners are fixed for the life of the process.
        new.instance_id = old.instance_id.clone();
        for (what, changed) in [
            ("connector_id", new.connector_id != old.connector_id),
            // Debug output redacts the token, which is applied below anyway.
            (
                "control_plane (other than its token)",
                format!("{:?}", new.control_plane) != format!("{:?}", old.control_plane),
            ),
            (
                "push.listen",
                new.push.as_ref().map(|p| p.listen) != old.push.as_ref().map(|p| p.listen),
            ),
            ("admin.listen", new.admin != old.admin),
            (
                "journal",
                format!("{:?}", new.journal) != format!("{:?}", old.journal),
            ),
            ("log.format", new.log.json != old.log.json),
            (
                "push.max_body_bytes",
                new.push.as_ref().map(|p| p.max_body_bytes)
                    != old.push.as_ref().map(|p| p.max_body_bytes),
            ),
            ("checks", new.online_checks != old.online_checks),
            (
                "engine",
                format!("{:?}", new.engine) != format!("{:?}", old.engine),
            ),
        ] {
            if changed {
                tracing::warn!(
                    setting = what,
                    "changed in the configuration file; takes effect after a restart"
                );
            }
        }
        let google = match GoogleSide::build(new, env, self.clock.clone(), metrics.clone()) {
            Ok(g) => g,
            Err(e) => return refused(e.to_string()),
        };
        if let Err(e) = self.log.set_level(&google.config.log.level) {
            return refused(e);
        }
        if let (Some(cp), Some(settings)) = (&self.control_plane, &google.config.control_plane) {
            cp.set_token(settings.token.clone());
        }
        let integrations = google.config.integrations.len();
        self.engine.replace_google(google);
        metrics.config_reloaded(true);
        tracing::info!(integrations, path = %self.path.display(), "configuration reloaded");
        Ok(())
    }
}

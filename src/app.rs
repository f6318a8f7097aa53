//! The composition root. [`Application`] is the daemon: from one validated
//! configuration it opens the journal, builds the [`Services`] (credentials,
//! tokens, invoker), the control-plane client and the engine, binds the
//! listeners, and runs the loops until shutdown. `grantbridge run`, the demo,
//! the benches and the tests all start the daemon through
//! [`Application::build`] and [`Application::run_until_stopped`].
//!
//! Building must not make network calls other than binding the listeners: the
//! first token is minted on first use (or by `grantbridge check`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::control_plane::ControlPlaneClient;
use crate::daemon::{ControlPlaneState, Daemon, DaemonError, Listeners, Reloader, RunSummary};
use crate::engine::Engine;
use crate::env::Environment;
use crate::journal::{Journal, JournalError, JournalOptions};
use crate::metrics::Metrics;
use crate::services::{Services, ServicesError};
use crate::telemetry::LogHandle;

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Services(#[from] ServicesError),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error(
        "nothing to do: configure [control_plane] (poll mode) and/or [push] (push mode) in {0}"
    )]
    NoIntake(String),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The daemon, built and bound, not yet running.
pub struct Application {
    daemon: Daemon,
    listeners: Listeners,
}

impl Application {
    /// Opens the journal, builds everything from `config` and binds the
    /// configured listeners (port 0 binds an ephemeral port; see
    /// [`Application::push_addr`]). No other network calls.
    pub async fn build(
        config: Config,
        env: &dyn Environment,
        clock: Clock,
    ) -> Result<Self, BuildError> {
        if config.control_plane.is_none() && config.push.is_none() {
            return Err(BuildError::NoIntake(config.source.display().to_string()));
        }
        let journal = Journal::open(
            JournalOptions {
                retention: config.journal.retention,
                ..JournalOptions::new(&config.journal.path)
            },
            clock.clone(),
        )?;
        let push_addr = config.push.as_ref().map(|p| p.listen);
        let admin_addr = config.admin;
        let services = Services::build(config, env, clock.clone(), Arc::new(Metrics::new()))?;
        let control_plane = services.config.control_plane.as_ref().map(|cp| {
            ControlPlaneClient::new(
                services.http.clone(),
                cp.url.clone(),
                services.config.connector_id.clone(),
                cp.token.clone(),
            )
        });
        let engine = Engine::new(services, journal, clock.clone());
        let listeners = Listeners {
            push: bind("push", push_addr).await?,
            admin: bind("admin", admin_addr).await?,
        };
        Ok(Self {
            daemon: Daemon::new(engine, control_plane, clock),
            listeners,
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        self.daemon.engine()
    }

    /// What the loops last learnt of the control plane (for readiness).
    pub fn control_plane_state(&self) -> &Arc<ControlPlaneState> {
        self.daemon.control_plane_state()
    }

    /// Where the push endpoint listens, when `[push]` is configured.
    pub fn push_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .push
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Where the admin endpoints listen, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .admin
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// What SIGHUP calls: reloads the file at `path` into the running daemon.
    pub fn reloader(&self, path: PathBuf, log: LogHandle) -> Reloader {
        self.daemon.reloader(path, log)
    }

    /// Runs until `shutdown` is cancelled, then stops gracefully: intake
    /// first, then the drain within the grace period, then a last flush of
    /// the outbox.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<RunSummary, DaemonError> {
        self.daemon.run(self.listeners, shutdown).await
    }
}

async fn bind(
    what: &'static str,
    addr: Option<SocketAddr>,
) -> Result<Option<TcpListener>, BuildError> {
    let Some(addr) = addr else { return Ok(None) };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| BuildError::Listen { what, addr, source })
}

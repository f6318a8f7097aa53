//! The composition root. [`Services`] is everything built from one
//! configuration (shared HTTP clients, each connection's credentials, the
//! token cache, the invoker), swapped whole on reload; the one-shot CLI
//! commands use it alone. [`Application`] is the daemon: it opens the journal,
//! builds the services, the control-plane client and the engine, binds the
//! listeners, and runs the loops until shutdown. `grantbridge run`, the demo,
//! the benches and the tests all start the daemon through
//! [`Application::build`] and [`Application::run_until_stopped`].
//!
//! Building must not make network calls other than binding the listeners: the
//! first token is minted on first use (or by `grantbridge check`).

use std::collections::BTreeMap;
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
use crate::function::Invoker;
use crate::google::{Credentials, CredentialsContext, CredentialsError, IdTokenSource, TokenCache};
use crate::journal::{Journal, JournalError, JournalOptions};
use crate::metrics::Metrics;
use crate::telemetry::LogHandle;

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
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
    #[error("configuration {file}: connections.{connection}: {source}")]
    Credentials {
        file: String,
        connection: String,
        #[source]
        source: Box<CredentialsError>,
    },
}

/// Everything built from one configuration: credentials, tokens and the
/// invoker. The engine holds one and swaps it whole on reload, so an action
/// runs with one configuration from start to end.
pub struct Services {
    pub config: Arc<Config>,
    pub credentials: BTreeMap<String, Arc<Credentials>>,
    pub tokens: Arc<TokenCache>,
    pub invoker: Arc<Invoker>,
    pub metrics: Arc<Metrics>,
    /// The pooled client (rustls, proxy from the environment, no redirects), for
    /// other peers such as the control plane to share.
    pub http: reqwest::Client,
}

impl Services {
    pub fn build(
        config: Config,
        env: &dyn Environment,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BuildError> {
        let http = crate::http::client()?;
        let ctx = CredentialsContext {
            env,
            http: http.clone(),
            metadata_http: crate::http::metadata_client()?,
            clock: clock.clone(),
            allow_insecure_loopback: config.http.allow_insecure_loopback,
        };
        let mut credentials = BTreeMap::new();
        let mut sources: BTreeMap<String, Arc<dyn IdTokenSource>> = BTreeMap::new();
        for (name, connection) in &config.connections {
            let creds =
                ctx.build(&connection.credentials)
                    .map_err(|source| BuildError::Credentials {
                        file: config.source.display().to_string(),
                        connection: name.clone(),
                        source: Box::new(source),
                    })?;
            let creds = Arc::new(creds);
            sources.insert(name.clone(), creds.clone());
            credentials.insert(name.clone(), creds);
        }
        let tokens = Arc::new(TokenCache::new(
            sources,
            config.tokens.refresh_ahead,
            clock.clone(),
            metrics.clone(),
        ));
        let invoker = Arc::new(Invoker::new(
            http.clone(),
            tokens.clone(),
            clock,
            metrics.clone(),
            config.http.max_response_bytes,
        ));
        Ok(Self {
            config: Arc::new(config),
            credentials,
            tokens,
            invoker,
            metrics,
            http,
        })
    }
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

//! The daemon: receives actions (poll and push), hands them to the engine,
//! keeps leases alive, reports every result, sends heartbeats, and shuts down
//! gracefully (stop intake, drain within the grace period, flush the outbox).
//!
//! Listeners and the shutdown signal come in as arguments, so tests run the
//! real daemon on port 0 and stop it with a token. It must not lose a result:
//! the outbox is only drained by the control plane's acceptance.

pub mod admin;
mod loops;
pub mod push;
mod reload;
pub mod signature;

pub use reload::Reloader;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{BuildError, GoogleSide};
use crate::clock::Clock;
use crate::config::Config;
use crate::control_plane::ControlPlaneClient;
use crate::engine::Engine;
use crate::env::Environment;
use crate::journal::{Journal, JournalError, JournalOptions};
use crate::metrics::Metrics;

/// Why the daemon could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error(
        "nothing to do: configure [control_plane] (poll mode) and/or [push] (push mode) in {0}"
    )]
    NoIntake(String),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("cannot listen on {0}")]
    Listen(String),
}

/// State shared by the loops and (later) readiness checks.
#[derive(Debug, Default)]
pub struct Status {
    /// The control plane accepted the connector token on the last call.
    pub control_plane_auth_ok: AtomicBool,
    /// The last control plane call succeeded.
    pub control_plane_reachable: AtomicBool,
}

/// The sockets the daemon serves, bound by the caller (port 0 in tests).
#[derive(Default)]
pub struct Listeners {
    /// Push mode endpoint (`[push]`).
    pub push: Option<tokio::net::TcpListener>,
    /// Health, readiness and metrics (`[admin]`).
    pub admin: Option<tokio::net::TcpListener>,
}

pub struct Daemon {
    engine: Arc<Engine>,
    clock: Clock,
    control_plane: Option<ControlPlaneClient>,
    status: Arc<Status>,
    started_at: SystemTime,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Actions still unfinished at exit (resumed at next start).
    pub left_unfinished: usize,
    /// Results not yet accepted by the control plane at exit (sent at next start).
    pub outbox_left: u64,
}

impl Daemon {
    /// Opens the journal and builds everything; no network calls yet.
    pub fn build(
        config: Config,
        env: &dyn Environment,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, DaemonError> {
        if config.control_plane.is_none() && config.push.is_none() {
            return Err(DaemonError::NoIntake(config.source.display().to_string()));
        }
        let journal = Journal::open(
            JournalOptions {
                retention: config.journal.retention,
                ..JournalOptions::new(&config.journal.path)
            },
            clock.clone(),
        )?;
        let google = GoogleSide::build(config, env, clock.clone(), metrics)?;
        let control_plane = google.config.control_plane.as_ref().map(|cp| {
            ControlPlaneClient::new(
                google.http.clone(),
                cp.url.clone(),
                google.config.connector_id.clone(),
                cp.token.clone(),
            )
        });
        let started_at = clock.now();
        Ok(Self {
            engine: Engine::new(google, journal, clock.clone()),
            clock,
            control_plane,
            status: Arc::default(),
            started_at,
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// What SIGHUP calls: reloads `path` into the running daemon.
    pub fn reloader(&self, path: std::path::PathBuf, log: crate::telemetry::LogHandle) -> Reloader {
        Reloader {
            path,
            engine: self.engine.clone(),
            control_plane: self.control_plane.clone(),
            clock: self.clock.clone(),
            log,
        }
    }

    /// Runs until `shutdown` is cancelled, then stops gracefully.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<RunSummary, DaemonError> {
        let Listeners {
            push: push_listener,
            admin: admin_listener,
        } = listeners;
        let config = self.engine.config().clone();
        let resumed = self.engine.resume_unfinished().await?;
        let outbox = self.engine.journal().outbox_depth().await?;
        tracing::info!(instance_id = %self.engine.instance_id(), resumed, outbox,
            poll = config.control_plane.as_ref().is_some_and(|c| c.poll), push = push_listener.is_some(), "grantbridge started");

        // Two levels: intake stops first; background loops (reporting, leases,
        // heartbeats) run until the drain and the final flush are done.
        let intake = CancellationToken::new();
        let background = CancellationToken::new();
        let tasks = TaskTracker::new();

        if let Some(cp) = &self.control_plane {
            let cps = config
                .control_plane
                .clone()
                .expect("client implies settings");
            if cps.poll {
                tasks.spawn(loops::poll(
                    self.engine.clone(),
                    cp.clone(),
                    cps.clone(),
                    self.status.clone(),
                    intake.clone(),
                ));
            }
            tasks.spawn(loops::keep_leases(
                self.engine.clone(),
                cp.clone(),
                cps.lease,
                background.clone(),
            ));
            tasks.spawn(loops::heartbeat(
                self.engine.clone(),
                cp.clone(),
                cps.heartbeat_interval,
                self.started_at,
                self.status.clone(),
                background.clone(),
            ));
        }
        tasks.spawn(loops::report(
            self.engine.clone(),
            self.control_plane.clone(),
            config
                .control_plane
                .as_ref()
                .map_or(100, |c| c.report_batch),
            config
                .control_plane
                .as_ref()
                .map_or(std::time::Duration::from_secs(30), |c| c.unauthorized_retry),
            self.status.clone(),
            background.clone(),
        ));
        tasks.spawn(loops::prune(self.engine.clone(), background.clone()));
        if let Some(interval) = config.online_checks {
            tasks.spawn(loops::online_checks(
                self.engine.clone(),
                interval,
                background.clone(),
            ));
        }

        let push_server = push_listener.map(|listener| {
            let settings = config
                .push
                .clone()
                .expect("a push listener implies push settings");
            let app = push::router(self.engine.clone(), settings);
            let stop = background.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            })
        });

        // The admin endpoints stay up until the very end: /readyz says "draining".
        let admin_stop = CancellationToken::new();
        let admin_server = admin_listener.map(|listener| {
            let app = admin::router(
                self.engine.clone(),
                self.status.clone(),
                self.control_plane.is_some(),
            );
            let stop = admin_stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            })
        });

        shutdown.cancelled().await;
        tracing::info!("shutdown requested: no new actions; finishing in-flight work");
        intake.cancel();
        let left_unfinished = self.engine.drain().await;
        // Last chance to deliver results before exit; what remains stays in the journal.
        if let Some(cp) = &self.control_plane {
            let batch = config
                .control_plane
                .as_ref()
                .map_or(100, |c| c.report_batch);
            match tokio::time::timeout(
                Duration::from_secs(10),
                loops::flush_outbox(&self.engine, Some(cp), batch),
            )
            .await
            {
                Ok(Ok(n)) => tracing::info!(reported = n, "outbox flushed"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not flush the outbox; results stay in the journal and are sent at next start")
                }
                Err(_) => tracing::warn!(
                    "outbox flush timed out; results stay in the journal and are sent at next start"
                ),
            }
        }
        background.cancel();
        tasks.close();
        tasks.wait().await;
        if let Some(server) = push_server {
            let _ = server.await;
        }
        admin_stop.cancel();
        if let Some(server) = admin_server {
            let _ = server.await;
        }
        let outbox_left = self.engine.journal().outbox_depth().await?;
        self.engine.journal().clone().close().await;
        self.status
            .control_plane_reachable
            .store(false, Ordering::SeqCst);
        tracing::info!(left_unfinished, outbox_left, "grantbridge stopped");
        Ok(RunSummary {
            left_unfinished,
            outbox_left,
        })
    }
}

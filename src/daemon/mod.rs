//! The daemon: receives actions (poll and push), hands them to the engine,
//! keeps leases alive, reports every result, sends heartbeats, and shuts down
//! gracefully (stop intake, drain within the grace period, flush the outbox).
//!
//! [`crate::app::Application`] builds it; listeners and the shutdown signal
//! come in as arguments, so tests run the real daemon on port 0 and stop it
//! with a token. It must not lose a result: the outbox is only drained by the
//! control plane's acceptance.

pub mod admin;
pub mod listener;
mod loops;
pub mod push;
mod reload;
pub mod signals;
pub mod signature;

pub use reload::{ReloadError, Reloader};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::listener::ConnectionLimits;
use crate::clock::Clock;
use crate::config::{Config, ControlPlaneSettings};
use crate::control_plane::ControlPlaneClient;
use crate::engine::Engine;
use crate::journal::JournalError;

/// Why the daemon stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

/// What the loops last learnt of the control plane, for readiness.
#[derive(Debug, Default)]
pub struct ControlPlaneState {
    /// The control plane accepted the connector token on the last call.
    pub auth_ok: AtomicBool,
    /// The last control plane call succeeded.
    pub reachable: AtomicBool,
}

/// The sockets the daemon serves, bound by [`crate::app::Application::build`].
#[derive(Default)]
pub struct Listeners {
    /// Push mode endpoint (`[push]`).
    pub push: Option<TcpListener>,
    /// Health, readiness and metrics (`[admin]`).
    pub admin: Option<TcpListener>,
}

pub struct Daemon {
    engine: Arc<Engine>,
    clock: Clock,
    control_plane: Option<ControlPlaneClient>,
    state: Arc<ControlPlaneState>,
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

/// Two levels of stopping: intake stops first; background loops (reporting,
/// leases, heartbeats) run until the drain and the final flush are done.
struct Stops {
    intake: CancellationToken,
    background: CancellationToken,
}

impl Daemon {
    pub(crate) fn new(
        engine: Arc<Engine>,
        control_plane: Option<ControlPlaneClient>,
        clock: Clock,
    ) -> Self {
        Self {
            started_at: clock.now(),
            engine,
            clock,
            control_plane,
            state: Arc::default(),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn control_plane_state(&self) -> &Arc<ControlPlaneState> {
        &self.state
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
        let config = self.engine.config().clone();
        let resumed = self.engine.resume_unfinished().await?;
        let outbox = self.engine.journal().outbox_depth().await?;
        let worker_threads = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(instance_id = %self.engine.instance_id(), resumed, outbox, worker_threads,
            poll = config.control_plane.as_ref().is_some_and(|c| c.poll), push = listeners.push.is_some(), "grantbridge started");

        let stops = Stops {
            intake: CancellationToken::new(),
            background: CancellationToken::new(),
        };
        let tasks = self.spawn_loops(&config, &stops);
        let push_server = listeners.push.map(|listener| {
            let settings = config
                .push
                .clone()
                .expect("a push listener implies push settings");
            let limits = ConnectionLimits {
                header_timeout: settings.header_timeout,
                max_connections: settings.max_connections,
            }
            .within_open_files(0.5, "push");
            serve(
                listener,
                push::router(self.engine.clone(), settings),
                limits,
                stops.background.clone(),
            )
        });
        // The admin endpoints stay up until the very end: /readyz says "draining".
        let admin_stop = CancellationToken::new();
        let admin_server = listeners.admin.map(|listener| {
            let router = admin::router(
                self.engine.clone(),
                self.state.clone(),
                self.control_plane.is_some(),
            );
            let limits = ADMIN_LIMITS.within_open_files(0.125, "admin");
            serve(listener, router, limits, admin_stop.clone())
        });

        shutdown.cancelled().await;
        tracing::info!("shutdown requested: no new actions; finishing in-flight work");
        stops.intake.cancel();
        let left_unfinished = self.engine.drain().await;
        self.last_flush(control_plane_settings(&config)).await;
        stops.background.cancel();
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
        self.state.reachable.store(false, Ordering::SeqCst);
        tracing::info!(left_unfinished, outbox_left, "grantbridge stopped");
        Ok(RunSummary {
            left_unfinished,
            outbox_left,
        })
    }

    /// Starts the background loops: poll (intake), lease keeping, heartbeats,
    /// reporting, pruning and the periodic online checks.
    fn spawn_loops(&self, config: &Config, stops: &Stops) -> TaskTracker {
        let tasks = TaskTracker::new();
        let cps = control_plane_settings(config);
        if let (Some(cp), Some(settings)) = (&self.control_plane, &config.control_plane) {
            if settings.poll {
                tasks.spawn(loops::poll(
                    self.engine.clone(),
                    cp.clone(),
                    settings.clone(),
                    self.state.clone(),
                    stops.intake.clone(),
                ));
            }
            tasks.spawn(loops::keep_leases(
                self.engine.clone(),
                cp.clone(),
                settings.lease,
                stops.background.clone(),
            ));
            tasks.spawn(loops::heartbeat(
                self.engine.clone(),
                cp.clone(),
                settings.heartbeat_interval,
                self.started_at,
                self.state.clone(),
                stops.background.clone(),
            ));
        }
        tasks.spawn(loops::report(
            self.engine.clone(),
            self.control_plane.clone(),
            cps.report_batch,
            cps.unauthorized_retry,
            self.state.clone(),
            stops.background.clone(),
        ));
        tasks.spawn(loops::prune(self.engine.clone(), stops.background.clone()));
        tasks.spawn(loops::watch_journal(
            self.engine.clone(),
            Duration::from_secs(2),
            stops.background.clone(),
        ));
        if let Some(interval) = config.online_checks {
            tasks.spawn(loops::online_checks(
                self.engine.clone(),
                interval,
                stops.background.clone(),
            ));
        }
        tasks
    }

    /// Last chance to deliver results before exit; what remains stays in the journal.
    async fn last_flush(&self, settings: ReportSettings) {
        let Some(cp) = &self.control_plane else {
            return;
        };
        match tokio::time::timeout(
            Duration::from_secs(10),
            loops::flush_outbox(&self.engine, Some(cp), settings.report_batch),
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
}

/// How results are reported; defaults when there is no control plane.
#[derive(Debug, Clone, Copy)]
struct ReportSettings {
    report_batch: u32,
    unauthorized_retry: Duration,
}

fn control_plane_settings(config: &Config) -> ReportSettings {
    config.control_plane.as_ref().map_or(
        ReportSettings {
            report_batch: 100,
            unauthorized_retry: Duration::from_secs(30),
        },
        |c: &ControlPlaneSettings| ReportSettings {
            report_batch: c.report_batch,
            unauthorized_retry: c.unauthorized_retry,
        },
    )
}

/// The admin listener's limits: probes and scrapes are small and few.
const ADMIN_LIMITS: ConnectionLimits = ConnectionLimits {
    header_timeout: Duration::from_secs(10),
    max_connections: 64,
};

/// Serves `router` on `listener` until `stop` is cancelled.
fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(listener::serve(listener, router, limits, stop))
}

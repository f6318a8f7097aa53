//! The process signals the daemon answers: SIGTERM and SIGINT stop it
//! gracefully; SIGHUP reloads the configuration.
//!
//! Only `grantbridge run` installs these; tests stop the daemon with its
//! shutdown token and call the [`Reloader`] directly.

use tokio_util::sync::CancellationToken;

use super::Reloader;
use crate::env::Environment;

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_termination() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        termination().await;
        trigger.cancel();
    });
    shutdown
}

/// Reloads the configuration on every SIGHUP, with the environment as it was
/// at start (a refused reload is logged by the reloader and changes nothing).
pub fn reload_on_hangup(reloader: Reloader, env: &dyn Environment) {
    #[cfg(unix)]
    {
        let env = crate::env::MapEnv::from_pairs(env.vars());
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; configuration reload is off");
                return;
            };
            while hup.recv().await.is_some() {
                let _ = reloader.reload(&env);
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (reloader, env);
    }
}

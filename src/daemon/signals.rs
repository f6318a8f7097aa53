//! The process signals the daemon answers: SIGTERM and SIGINT stop it
//! gracefully; SIGHUP reloads the configuration, and so does a change of the
//! files it was read from.
//!
//! Only `grantbridge run` installs these; tests stop the daemon with its
//! shutdown token and call the [`Reloader`] directly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
pub fn reload_on_hangup(reloader: Arc<Reloader>, env: &dyn Environment) {
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

/// Reloads the configuration, as SIGHUP does, when the configuration file or
/// a secret or key file it names changes (`[reload] watch`). Kubernetes
/// updates a mounted ConfigMap or Secret by swapping a symlink, and nothing
/// there sends SIGHUP: the contents are compared every `interval`, which sees
/// a swap, an edit in place and a file that appears or goes away alike. A
/// refused reload is retried at the next change, not at every tick.
pub fn reload_on_change(reloader: Arc<Reloader>, env: &dyn Environment, interval: Duration) {
    let env = crate::env::MapEnv::from_pairs(env.vars());
    tokio::spawn(async move {
        let mut files = reloader.watched_files();
        let mut seen = fingerprint(&files).await;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = fingerprint(&files).await;
            if now == seen {
                continue;
            }
            let changed: Vec<String> = files
                .iter()
                .zip(now.iter().zip(&seen))
                .filter(|(_, (a, b))| a != b)
                .map(|(f, _)| f.display().to_string())
                .collect();
            tracing::info!(files = %changed.join(", "), "a configuration file changed; reloading");
            let _ = reloader.reload(&env);
            // The new configuration may name other files.
            files = reloader.watched_files();
            seen = fingerprint(&files).await;
        }
    });
}

/// Each file's SHA-256, `None` when it cannot be read.
async fn fingerprint(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    let mut prints = Vec::with_capacity(files.len());
    for f in files {
        prints.push(tokio::fs::read(f).await.ok().map(|bytes| {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes)
                .as_ref()
                .to_vec()
        }));
    }
    prints
}

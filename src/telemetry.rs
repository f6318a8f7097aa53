//! Logging: tracing to stderr, human or JSON lines. The level filter can be
//! swapped at runtime (SIGHUP reload) unless the operator pinned it with
//! `RUST_LOG` or `--log-level`.
//!
//! It must be initialised once per process; library code only emits events.
//! Events never carry tokens, keys, secrets or response bodies: callers log ids,
//! names, statuses and error messages that are themselves secret-free.

use clap::ValueEnum;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Changes the level of the running subscriber.
#[derive(Clone)]
pub struct LogHandle {
    reload: Option<reload::Handle<EnvFilter, Registry>>,
    /// `RUST_LOG` or `--log-level` decided the level; configuration does not.
    pinned: bool,
}

impl LogHandle {
    /// A handle that changes nothing (tests, a second init).
    pub fn inert() -> Self {
        Self {
            reload: None,
            pinned: true,
        }
    }

    /// Applies a level from the configuration, unless the operator pinned one.
    pub fn set_level(&self, level: &str) -> Result<(), LogLevelError> {
        if self.pinned {
            return Ok(());
        }
        let Some(reload) = &self.reload else {
            return Ok(());
        };
        let filter = EnvFilter::try_new(level).map_err(|e| LogLevelError::Invalid {
            level: level.to_owned(),
            reason: e.to_string(),
        })?;
        reload
            .reload(filter)
            .map_err(|e| LogLevelError::Apply(e.to_string()))
    }
}

/// Why a log level could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    #[error("log level `{level}`: {reason}")]
    Invalid { level: String, reason: String },
    #[error("applying the log level: {0}")]
    Apply(String),
}

/// Starts logging. `pinned`: `level` came from the command line.
pub fn init(format: LogFormat, level: &str, pinned: bool) -> LogHandle {
    let (filter, pinned) = match EnvFilter::try_from_default_env() {
        Ok(from_env) => (from_env, true),
        Err(_) => (
            EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
            pinned,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Human => fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    match tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
    {
        Ok(()) => LogHandle {
            reload: Some(handle),
            pinned,
        },
        Err(_) => LogHandle::inert(),
    }
}

//! `grantbridge run`: the daemon. Loads the configuration, starts logging as
//! it says, builds the [`Application`], and runs it until SIGTERM or SIGINT;
//! SIGHUP reloads the configuration.

use std::process::ExitCode;

use super::{Cli, CliError};
use crate::app::Application;
use crate::clock::Clock;
use crate::config::Config;
use crate::daemon::signals;
use crate::env::Environment;

pub(super) async fn run(cli: &Cli, env: &dyn Environment) -> Result<ExitCode, CliError> {
    let config = Config::load(&cli.config, env)?;
    let output = crate::telemetry::LogOutput {
        format: cli.log_format.unwrap_or(config.log.format),
        color: crate::telemetry::stderr_wants_color(env),
        trace_project: config.log.trace_project.clone().or_else(|| {
            config
                .integrations
                .values()
                .next()
                .map(|i| i.project_id.clone())
        }),
        traces: config.traces.clone(),
    };
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| config.log.level.clone());
    let telemetry = crate::telemetry::init(&output, &level, cli.log_level.is_some())?;
    for warning in &config.warnings {
        tracing::warn!(file = %config.source.display(), "{warning}");
    }
    if let Some(traces) = &config.traces {
        tracing::info!(endpoint = %traces.endpoint, service_name = %traces.service_name, "exporting traces over OTLP/HTTP");
    }
    let watch_interval = config.watch_interval;
    let ran = async {
        let app = Application::build(config, env, Clock::system()).await?;
        let reloader = std::sync::Arc::new(app.reloader(cli.config.clone(), telemetry.log));
        signals::reload_on_hangup(reloader.clone(), env);
        if let Some(interval) = watch_interval {
            signals::reload_on_change(reloader, env, interval);
        }
        app.run_until_stopped(signals::shutdown_on_termination())
            .await?;
        Ok::<(), CliError>(())
    }
    .await;
    if let Some(exporter) = telemetry.traces {
        // The spans still buffered: the SDK's shutdown blocks until they are sent.
        let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
    }
    ran?;
    Ok(ExitCode::SUCCESS)
}

//! `grantbridge demo`: the whole product on one machine with no Google
//! account. The sandbox crate sets up the world (Google with sample
//! functions, a control plane with the scenario's actions); this runs the real
//! daemon against it, in poll and push mode, through [`Application`], and
//! fails unless every result is the expected one. Only with the `sandbox`
//! feature.

use std::process::ExitCode;
use std::time::Instant;

use grantbridge_sandbox::demo::DemoWorld;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::app::Application;
use crate::clock::Clock;
use crate::config::Config;
use crate::env::MapEnv;

pub(super) async fn demo() -> Result<ExitCode, CliError> {
    let started = Instant::now();
    let world = DemoWorld::start().await?;
    let config_path = world.dir().join("grantbridge.toml");
    world
        .config()
        .write_to(&config_path)
        .map_err(|e| CliError::Demo(format!("writing {}: {e}", config_path.display())))?;
    let (token_env, token) = world.token_env();
    let env = MapEnv::new()
        .with(token_env, token)
        .with("HOME", world.dir().display().to_string());
    let app = Application::build(Config::load(&config_path, &env)?, &env, Clock::system()).await?;
    let push_addr = app
        .push_addr()
        .ok_or_else(|| CliError::Demo("the demo configuration has no push listener".into()))?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    println!("grantbridge demo: Google sandbox, control plane and daemon on 127.0.0.1\n");
    world.enqueue_scenario();
    let pushed = world.push_one(push_addr).await;
    let results = world.wait_for_results().await;
    shutdown.cancel();
    running
        .await
        .map_err(|e| CliError::Demo(format!("the daemon task failed: {e}")))??;
    world
        .verdict(&results, &pushed, started.elapsed())
        .map(|()| ExitCode::SUCCESS)
        .map_err(CliError::Demo)
}

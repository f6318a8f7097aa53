//! `grantbridge check`: validate the configuration and mint an ID token for
//! every integration; `--online` also checks each function through the Cloud
//! Functions API. Exits non-zero on any error.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::{CliError, services};
use crate::config::{Config, Secrets};
use crate::env::Environment;
use crate::health::Health;
use crate::services::Services;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also check each integration's function through the Cloud Functions API
    /// (exists, ACTIVE, 1st gen HTTPS at the configured URL, timeout, invoke
    /// permission, not public). Exits non-zero on any error; warnings are printed.
    #[arg(long, conflicts_with = "offline")]
    pub online: bool,
    /// Validate the file only (syntax, keys, values, references), without the
    /// network; secret and key files are checked when this shell can read
    /// them and listed as not checked otherwise. For CI and off-cluster use.
    #[arg(long)]
    pub offline: bool,
}

pub(super) async fn check(
    path: &Path,
    env: &dyn Environment,
    args: CheckArgs,
) -> Result<ExitCode, CliError> {
    if args.offline {
        return offline(path, env);
    }
    // The control plane is not called: its token (and push secrets) are
    // checked when readable, so `check` works from a shell beside the daemon
    // (as do the other one-shot commands).
    let services = services(path, env)?;
    println!(
        "configuration {}: valid ({} connection(s), {} integration(s))",
        path.display(),
        services.credentials.len(),
        services.config.integrations.len()
    );
    for warning in &services.config.warnings {
        println!("  WARN  {warning}");
    }
    for note in &services.config.unchecked {
        println!("  note  {note}");
    }
    for (name, creds) in &services.credentials {
        println!("connection {name}: {}", creds.principal());
    }
    let mut failed = !mint_every_token(&services).await;
    if args.online {
        failed |= !check_online(&services).await;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `check --offline`: what loading finds, secrets only where readable.
fn offline(path: &Path, env: &dyn Environment) -> Result<ExitCode, CliError> {
    let config = Config::load_with(path, env, Secrets::IfReadable)?;
    println!(
        "configuration {}: valid ({} integration(s); offline: no token minted, nothing contacted)",
        path.display(),
        config.integrations.len()
    );
    for warning in &config.warnings {
        println!("  WARN  {warning}");
    }
    for note in &config.unchecked {
        println!("  note  {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Mints the ID token each integration will send; false when one fails.
async fn mint_every_token(services: &Services) -> bool {
    let mut ok = true;
    for (name, integration) in &services.config.integrations {
        match services
            .tokens
            .get(&integration.connection, &integration.audience)
            .await
        {
            Ok(t) => println!(
                "  ok    integration {name}: ID token for {} minted as {} (valid {}s)",
                integration.audience,
                t.email.as_deref().unwrap_or(&integration.connection),
                t.remaining(std::time::SystemTime::now()).as_secs()
            ),
            Err(e) => {
                ok = false;
                println!("  FAIL  integration {name}: {e}");
            }
        }
    }
    ok
}

/// Prints a verdict block per integration; false when any has an error.
async fn check_online(services: &Services) -> bool {
    println!(
        "online checks (Cloud Functions API at {}):",
        services.config.google.cloudfunctions_api
    );
    let verdicts = crate::check::check_all(services).await;
    print!("{}", crate::check::render_verdicts(&verdicts));
    let public = verdicts
        .iter()
        .filter(|v| v.finding("public_invoker").is_some())
        .count();
    if public > 0 {
        eprintln!(
            "WARNING: {public} integration(s) call a function anyone can invoke: anyone on the internet can grant access. See above."
        );
    }
    !verdicts.iter().any(|v| v.status == Health::Error)
}

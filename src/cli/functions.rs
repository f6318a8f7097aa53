//! `grantbridge functions list`: the functions in a connection's project(s),
//! read through the Cloud Functions API with the connection's own token.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{CliError, services};
use crate::env::Environment;

#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    /// List the functions in a project (name, region, status, generation,
    /// trigger URL, runtime, timeout, ingress).
    List(FunctionsListArgs),
}

#[derive(Debug, Args)]
pub struct FunctionsListArgs {
    /// The connection whose credentials read the API.
    #[arg(long)]
    pub connection: String,
    /// The region; default every region.
    #[arg(long)]
    pub region: Option<String>,
    /// The project; default the projects of the integrations using the
    /// connection, else the project of the connection's key file.
    #[arg(long)]
    pub project: Option<String>,
}

pub(super) async fn list(
    path: &Path,
    env: &dyn Environment,
    args: FunctionsListArgs,
) -> Result<ExitCode, CliError> {
    let services = services(path, env)?;
    let Some(creds) = services.credentials.get(&args.connection) else {
        return Err(CliError::unknown(
            "connection",
            &args.connection,
            services.credentials.keys(),
        ));
    };
    let projects = match args.project {
        Some(p) => vec![p],
        None => crate::check::projects_for_connection(&services.config, &args.connection),
    };
    if projects.is_empty() {
        return Err(CliError::NoProject(args.connection));
    }
    let region = args.region.unwrap_or_else(|| "-".to_owned());
    let api = crate::check::api(&services.config)?;
    let token = crate::check::access_token(&services, &args.connection).await?;
    let mut functions = Vec::new();
    let mut unreachable = Vec::new();
    for project in &projects {
        let found = api
            .list_functions(&token, project, &region)
            .await
            .map_err(|e| e.for_account(creds.email()))?;
        functions.extend(found.functions);
        unreachable.extend(found.unreachable);
    }
    print!("{}", crate::check::render_functions(&functions));
    if !unreachable.is_empty() {
        // Google's `unreachable`: the list is incomplete, say where.
        eprintln!(
            "WARNING: Google could not reach {}: their functions are not listed above; try again, or pass --region",
            unreachable.join(", ")
        );
    }
    let region = if region == "-" { "any region" } else { &region };
    eprintln!(
        "{} function(s) in project(s) {} ({region})",
        functions.len(),
        projects.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

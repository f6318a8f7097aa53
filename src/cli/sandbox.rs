//! `grantbridge sandbox`: serve the emulated Google on 127.0.0.1 for local
//! function development, with a generated key and configuration. Only with
//! the `sandbox` feature.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use grantbridge_sandbox::{StandaloneArgs, run_standalone};

use super::CliError;

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Folder for the generated service-account key and grantbridge config.
    #[arg(long, default_value = "./local-sandbox")]
    pub dir: PathBuf,
    /// The service account the generated key belongs to.
    #[arg(
        long,
        default_value = "grantbridge@sandbox-project.iam.gserviceaccount.com"
    )]
    pub service_account: String,
    /// A function to serve: NAME (built-in sample) or NAME=UPSTREAM_URL (a local
    /// function, e.g. functions-framework, behind the sandbox's auth front end).
    #[arg(long = "function", value_name = "NAME[=URL]", value_parser = parse_function)]
    pub functions: Vec<(String, Option<url::Url>)>,
}

/// `NAME` or `NAME=URL`.
fn parse_function(s: &str) -> Result<(String, Option<url::Url>), String> {
    match s.split_once('=') {
        Some((name, url)) => url::Url::parse(url)
            .map(|u| (name.to_owned(), Some(u)))
            .map_err(|_| format!("`{url}` is not a URL")),
        None => Ok((s.to_owned(), None)),
    }
}

pub(super) async fn sandbox(args: SandboxArgs) -> Result<ExitCode, CliError> {
    let standalone = StandaloneArgs {
        dir: args.dir,
        service_account: args.service_account,
        functions: args.functions,
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    run_standalone(standalone, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

//! The command line: the commands, their dispatch and the errors they share.
//! Each command lives in its own file as a function of its arguments that
//! prints for a person and returns an exit code.
//!
//! It must not print secrets except where the command exists to (`token`
//! prints the ID token it was asked for, like `gcloud auth print-identity-token`).
//! `demo` and `sandbox` exist only with the default `sandbox` feature.

mod api;
mod audit;
mod check;
#[cfg(feature = "sandbox")]
mod demo;
mod docs;
mod functions;
mod health;
mod invoke;
mod run;
#[cfg(feature = "sandbox")]
mod sandbox;
mod token;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::BuildError;
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::env::Environment;
use crate::metrics::Metrics;
use crate::services::{Services, ServicesError};
use crate::telemetry::LogFormat;

pub use api::{ApiArgs, ApiTargetError};
pub use audit::AuditArgs;
pub use check::CheckArgs;
pub use functions::{FunctionsCommand, FunctionsListArgs};
pub use invoke::{InvokeArgs, ParamError, parse_params};
#[cfg(feature = "sandbox")]
pub use sandbox::{SandboxArgs, SandboxCommand};

#[derive(Debug, Parser)]
#[command(
    name = "grantbridge",
    version,
    about = "Invoke Google Cloud Functions with Google-signed ID tokens for an access-management control plane"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "GRANTBRIDGE_CONFIG",
        default_value = "/etc/grantbridge/grantbridge.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr (default: `[log] format` for `run`, else human).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or filter (e.g. info, grantbridge=debug); RUST_LOG wins when set.
    /// Default: info for `run`, error otherwise (commands print their own failures).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Threads that run the daemon's tasks. 1 (the default) runs them all on
    /// one thread, beside the journal's writer thread and the blocking pool:
    /// enough for about 10,000 actions/s on one core, with the least memory
    /// and the fewest hand-offs between threads. More spread them over that
    /// many threads, for a connector that must go faster on more cores.
    #[arg(
        long,
        global = true,
        env = "GRANTBRIDGE_WORKER_THREADS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    pub worker_threads: u16,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an ID token for an audience (like `gcloud auth print-identity-token`).
    Token {
        /// The connection whose credentials mint it.
        #[arg(long)]
        connection: String,
        /// The audience, usually a function URL.
        #[arg(long)]
        audience: String,
    },
    /// Call an integration's function once and print the answer (like `gcloud functions call`).
    Invoke(InvokeArgs),
    /// Validate the configuration and mint a token for every integration;
    /// `--online` also checks every function through the Cloud Functions API.
    Check(CheckArgs),
    /// Read the Cloud Functions API with a connection's credentials.
    #[command(subcommand)]
    Functions(FunctionsCommand),
    /// Call a Google API with a connection's access token and print the answer
    /// (Google API hosts and the configured [google] endpoints only).
    Api(ApiArgs),
    /// Run Google on 127.0.0.1 (token endpoint, metadata server, IAM, functions) for local development.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// Run the daemon: receive actions (poll and/or push), invoke, report. SIGTERM/SIGINT stop it gracefully.
    Run,
    /// Show the audit trail of function calls from the journal.
    Audit(AuditArgs),
    /// Play a scenario against the embedded sandbox (Google + control plane) and print the results.
    #[cfg(feature = "sandbox")]
    Demo,
    /// Print a shell completion script, e.g. `grantbridge completions bash >
    /// /etc/bash_completion.d/grantbridge` (zsh: into a directory of `$fpath`
    /// as `_grantbridge`; fish: `~/.config/fish/completions/grantbridge.fish`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, grantbridge(1): `grantbridge man > /usr/local/share/man/man1/grantbridge.1`.
    Man,
    /// Exit 0 when the daemon's /healthz answers 200 (for container HEALTHCHECKs without curl).
    Health {
        /// The health endpoint. Default: /healthz at the configuration's
        /// `admin.listen` (a wildcard address asked on loopback), else
        /// http://127.0.0.1:9090/healthz when there is no configuration file.
        #[arg(long, env = "GRANTBRIDGE_HEALTH_URL")]
        url: Option<String>,
    },
}

/// What a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Services(#[from] ServicesError),
    #[error(transparent)]
    Token(#[from] crate::google::TokenError),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    FunctionsApi(#[from] crate::google::FunctionsApiError),
    #[error(transparent)]
    AccessToken(#[from] crate::check::AccessTokenError),
    #[error(transparent)]
    Params(#[from] crate::contract::ParamsError),
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("no {what} named `{name}` (configured: {known})")]
    Unknown {
        what: &'static str,
        name: String,
        known: String,
    },
    #[error("`{0}` is not an event type; expected one of {1}")]
    EventType(String, String),
    #[error(
        "which project? No integration uses connection `{0}` and its credentials name no project: pass --project PROJECT_ID"
    )]
    NoProject(String),
    #[error("--since `{0}`: expected a duration like 1h or an RFC 3339 time")]
    Since(String),
    #[error(transparent)]
    Traces(#[from] crate::telemetry::traces::TraceSetupError),
    #[error("building an HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error(transparent)]
    ApiTarget(#[from] ApiTargetError),
    #[error("{0}")]
    Api(String),
    #[cfg(feature = "sandbox")]
    #[error(transparent)]
    Sandbox(#[from] grantbridge_sandbox::SandboxError),
    #[cfg(feature = "sandbox")]
    #[error("demo: {0}")]
    Demo(String),
    #[cfg(feature = "sandbox")]
    #[error("{0}")]
    LocalSandbox(String),
}

impl CliError {
    /// `name` is not among `known` (the configured connections, integrations, ...).
    fn unknown<'a>(
        what: &'static str,
        name: &str,
        known: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        Self::Unknown {
            what,
            name: name.to_owned(),
            known: known
                .into_iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl Cli {
    /// The log filter: `--log-level`, else the command's default.
    pub fn log_level(&self) -> &str {
        match (&self.log_level, &self.command) {
            (Some(level), _) => level,
            (None, Command::Run) => "info",
            #[cfg(feature = "sandbox")]
            (None, Command::Demo) => "error",
            // One-shot commands print every failure themselves: the library's
            // retry warnings would say each one again (and the TLS verifier's
            // error is in theirs).
            (None, _) => "error,rustls_platform_verifier=off",
        }
    }
}

/// `err` and its causes, each said once: `top: cause: deeper cause`. Many
/// errors already quote their cause in their own message (`journal: {0}`), so
/// a cause whose text is already there is not repeated.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

/// Runs the parsed command.
pub async fn run(cli: Cli, env: &dyn Environment) -> Result<ExitCode, CliError> {
    if let Command::Run = cli.command {
        // Logging waits for the configuration, which may set its level and format.
        return run::run(&cli, env).await;
    }
    let output = crate::telemetry::LogOutput {
        format: cli.log_format.unwrap_or_default(),
        color: crate::telemetry::stderr_wants_color(env),
        trace_project: None,
        traces: None,
    };
    crate::telemetry::init(&output, cli.log_level(), cli.log_level.is_some())?;
    match cli.command {
        Command::Token {
            connection,
            audience,
        } => token::token(&cli.config, env, &connection, &audience).await,
        Command::Invoke(args) => invoke::invoke(&cli.config, env, args).await,
        Command::Check(args) => check::check(&cli.config, env, args).await,
        Command::Functions(FunctionsCommand::List(args)) => {
            functions::list(&cli.config, env, args).await
        }
        Command::Api(args) => api::api(&cli.config, env, args).await,
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => sandbox::sandbox(args).await,
        Command::Audit(args) => audit::audit(&cli.config, env, args).await,
        #[cfg(feature = "sandbox")]
        Command::Demo => demo::demo().await,
        Command::Health { url } => health::health(&cli.config, env, url).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
        Command::Run => unreachable!("handled above"),
    }
}

/// The configuration at `path`, and what it builds (for one-shot commands).
/// They call Google, never the control plane: key files must load, the
/// connector token and push secrets are read only where this shell can.
fn services(path: &Path, env: &dyn Environment) -> Result<Services, CliError> {
    let config = Config::load_with(path, env, crate::config::Secrets::ForGoogle)?;
    Ok(Services::build(
        config,
        env,
        Clock::system(),
        Arc::new(Metrics::new()),
    )?)
}

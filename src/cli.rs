//! The command line: `token`, `invoke`, `check` (`--online`), `functions list`, `sandbox`. Each command is a
//! function of its arguments that prints for a person and returns an exit code.
//!
//! It must not print secrets except where the command exists to (`token`
//! prints the ID token it was asked for, like `gcloud auth print-identity-token`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use crate::app::{BuildError, GoogleSide};
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::contract::{EventType, validate_params};
use crate::env::Environment;
use crate::function::{Call, Outcome};
use crate::metrics::Metrics;
use crate::telemetry::LogFormat;

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
    /// Default: info for `run`, error for `demo`, warn otherwise.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
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
    /// Run Google on 127.0.0.1 (token endpoint, metadata server, IAM, functions) for local development.
    Sandbox(SandboxArgs),
    /// Run the daemon: receive actions (poll and/or push), invoke, report. SIGTERM/SIGINT stop it gracefully.
    Run,
    /// Show the audit trail of function calls from the journal.
    Audit(AuditArgs),
    /// Play a scenario against the embedded sandbox (Google + control plane) and print the results.
    Demo,
    /// Exit 0 when the daemon's /healthz answers 200 (for container HEALTHCHECKs without curl).
    Health {
        /// The health endpoint.
        #[arg(
            long,
            env = "GRANTBRIDGE_HEALTH_URL",
            default_value = "http://127.0.0.1:9090/healthz"
        )]
        url: String,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also check each integration's function through the Cloud Functions API
    /// (exists, ACTIVE, 1st gen HTTPS at the configured URL, timeout, invoke
    /// permission, not public). Exits non-zero on any error; warnings are printed.
    #[arg(long)]
    pub online: bool,
}

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

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries newer than this: a duration ("1h", "7d") or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only this integration.
    #[arg(long)]
    pub integration: Option<String>,
    /// At most this many entries (newest first).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The integration's name in the configuration.
    pub integration: String,
    /// get-status, list-resources, list-resources-tags, create-credentials,
    /// reset-credentials, delete-credentials, grant-access or revoke-access.
    pub event_type: String,
    /// A param as key=value; a value starting with [ or { is read as JSON.
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Idempotency-Key to send (default: a fresh id).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Folder for the generated service-account key and grantbridge config.
    #[arg(long, default_value = "./sandbox")]
    pub dir: PathBuf,
    /// The service account the generated key belongs to.
    #[arg(
        long,
        default_value = "grantbridge@sandbox-project.iam.gserviceaccount.com"
    )]
    pub service_account: String,
    /// A function to serve: NAME (built-in sample) or NAME=UPSTREAM_URL (a local
    /// function, e.g. functions-framework, behind the sandbox's auth front end).
    #[arg(long = "function", value_name = "NAME[=URL]")]
    pub functions: Vec<String>,
}

/// What a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Token(#[from] crate::google::TokenError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("demo: {0}")]
    Demo(String),
    #[error("{0}")]
    Online(String),
    #[error(transparent)]
    FunctionsApi(#[from] crate::google::FunctionsApiError),
}

impl Cli {
    /// The log filter: `--log-level`, else the command's default.
    pub fn log_level(&self) -> &str {
        match (&self.log_level, &self.command) {
            (Some(level), _) => level,
            (None, Command::Run) => "info",
            (None, Command::Demo) => "error",
            (None, _) => "warn",
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli, env: &dyn Environment) -> Result<ExitCode, CliError> {
    if let Command::Run = cli.command {
        // Logging waits for the configuration, which may set its level and format.
        return run_daemon(&cli, env).await;
    }
    crate::telemetry::init(
        cli.log_format.unwrap_or_default(),
        cli.log_level(),
        cli.log_level.is_some(),
    );
    match cli.command {
        Command::Token {
            connection,
            audience,
        } => token(&cli.config, env, &connection, &audience).await,
        Command::Invoke(args) => invoke(&cli.config, env, args).await,
        Command::Check(args) => check(&cli.config, env, args.online).await,
        Command::Functions(FunctionsCommand::List(args)) => {
            functions_list(&cli.config, env, args).await
        }
        Command::Sandbox(args) => sandbox(args).await,
        Command::Audit(args) => audit(&cli.config, env, args).await,
        Command::Demo => crate::demo::run()
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(CliError::Demo),
        Command::Health { url } => health(&url).await,
        Command::Run => unreachable!("handled above"),
    }
}

async fn health(url: &str) -> Result<ExitCode, CliError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!("unhealthy: {url} answered HTTP {}", r.status().as_u16());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!(
                "unhealthy: {url}: {}",
                if e.is_connect() {
                    "could not connect"
                } else {
                    "no answer"
                }
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn build(path: &std::path::Path, env: &dyn Environment) -> Result<GoogleSide, CliError> {
    let config = Config::load(path, env)?;
    Ok(GoogleSide::build(
        config,
        env,
        Clock::system(),
        Arc::new(Metrics::new()),
    )?)
}

async fn token(
    path: &std::path::Path,
    env: &dyn Environment,
    connection: &str,
    audience: &str,
) -> Result<ExitCode, CliError> {
    let google = build(path, env)?;
    if !google.credentials.contains_key(connection) {
        let known: Vec<_> = google.credentials.keys().cloned().collect();
        return Err(CliError::Usage(format!(
            "no connection named `{connection}` (configured: {})",
            known.join(", ")
        )));
    }
    let token = google.tokens.get(connection, audience).await?;
    println!("{}", token.expose());
    Ok(ExitCode::SUCCESS)
}

/// Parses `key=value` params; values starting with `[` or `{` are JSON.
pub fn parse_params(raw: &[String]) -> Result<Map<String, Value>, String> {
    let mut params = Map::new();
    for p in raw {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("--param `{p}` is not KEY=VALUE"))?;
        let value = if v.starts_with('[') || v.starts_with('{') {
            serde_json::from_str(v).map_err(|e| format!("--param {k}: not valid JSON: {e}"))?
        } else {
            Value::String(v.to_owned())
        };
        params.insert(k.to_owned(), value);
    }
    Ok(params)
}

async fn invoke(
    path: &std::path::Path,
    env: &dyn Environment,
    args: InvokeArgs,
) -> Result<ExitCode, CliError> {
    let google = build(path, env)?;
    let integration = google
        .config
        .integrations
        .get(&args.integration)
        .ok_or_else(|| {
            let known: Vec<_> = google.config.integrations.keys().cloned().collect();
            CliError::Usage(format!(
                "no integration named `{}` (configured: {})",
                args.integration,
                known.join(", ")
            ))
        })?;
    let event_type = EventType::parse(&args.event_type).ok_or_else(|| {
        let all: Vec<_> = EventType::ALL.iter().map(|e| e.as_str()).collect();
        CliError::Usage(format!(
            "`{}` is not an event type; expected one of {}",
            args.event_type,
            all.join(", ")
        ))
    })?;
    let params = parse_params(&args.params).map_err(CliError::Usage)?;
    validate_params(event_type, &params).map_err(CliError::Usage)?;
    let call = Call {
        event_type,
        params,
        idempotency_key: args
            .idempotency_key
            .unwrap_or_else(|| format!("cli-{}", hex::encode(rand::random::<[u8; 8]>()))),
        not_after: None,
    };
    let report = google.invoker.invoke(integration, &call).await;
    let status = report
        .status
        .map(|s| format!("HTTP {s}"))
        .unwrap_or_else(|| "no HTTP answer".into());
    let verdict = match &report.outcome {
        Outcome::Succeeded => "succeeded".to_owned(),
        Outcome::Failed { code, .. } => format!("failed ({})", code.as_str()),
    };
    println!(
        "{status} · {verdict} · {} attempt(s) · {} ms · {}",
        report.attempts,
        report.latency.as_millis(),
        report.url
    );
    if let Some(body) = &report.body {
        match body {
            crate::contract::Body::Json(v) => {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            }
            crate::contract::Body::Text(t) => println!("{t}"),
        }
    }
    match report.outcome {
        Outcome::Succeeded => Ok(ExitCode::SUCCESS),
        Outcome::Failed { message, .. } => {
            eprintln!("error: {message}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn check(
    path: &std::path::Path,
    env: &dyn Environment,
    online: bool,
) -> Result<ExitCode, CliError> {
    let google = build(path, env)?;
    println!(
        "configuration {}: valid ({} connection(s), {} integration(s))",
        path.display(),
        google.credentials.len(),
        google.config.integrations.len()
    );
    let mut failed = false;
    for (name, creds) in &google.credentials {
        println!("connection {name}: {}", creds.principal());
    }
    for (name, integration) in &google.config.integrations {
        match google
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
                failed = true;
                println!("  FAIL  integration {name}: {e}");
            }
        }
    }
    if online {
        failed |= !check_online(&google).await;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints a verdict block per integration; false when any has an error.
async fn check_online(google: &GoogleSide) -> bool {
    println!(
        "online checks (Cloud Functions API at {}):",
        google.config.google.cloudfunctions_api
    );
    let verdicts = crate::check::check_all(google).await;
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
    !verdicts
        .iter()
        .any(|v| v.status == crate::check::Status::Error)
}

/// `grantbridge functions list`: the functions in the connection's project(s).
async fn functions_list(
    path: &std::path::Path,
    env: &dyn Environment,
    args: FunctionsListArgs,
) -> Result<ExitCode, CliError> {
    let google = build(path, env)?;
    let Some(creds) = google.credentials.get(&args.connection) else {
        let known: Vec<_> = google.credentials.keys().cloned().collect();
        return Err(CliError::Usage(format!(
            "no connection named `{}` (configured: {})",
            args.connection,
            known.join(", ")
        )));
    };
    let projects = match args.project {
        Some(p) => vec![p],
        None => crate::check::projects_for_connection(&google.config, &args.connection),
    };
    if projects.is_empty() {
        return Err(CliError::Usage(format!(
            "which project? No integration uses connection `{}` and its credentials name no project: pass --project PROJECT_ID",
            args.connection
        )));
    }
    let region = args.region.unwrap_or_else(|| "-".to_owned());
    let api = crate::check::api(&google.config).map_err(BuildError::Http)?;
    let token = crate::check::access_token(&google, &args.connection)
        .await
        .map_err(CliError::Online)?;
    let mut functions = Vec::new();
    for project in &projects {
        let found = api
            .list_functions(&token, project, &region)
            .await
            .map_err(|e| e.for_account(creds.email()))?;
        functions.extend(found);
    }
    print!("{}", crate::check::render_functions(&functions));
    let region = if region == "-" { "any region" } else { &region };
    eprintln!(
        "{} function(s) in project(s) {} ({region})",
        functions.len(),
        projects.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
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

async fn run_daemon(cli: &Cli, env: &dyn Environment) -> Result<ExitCode, CliError> {
    let config = Config::load(&cli.config, env)?;
    let format = cli.log_format.unwrap_or(if config.log.json {
        LogFormat::Json
    } else {
        LogFormat::Human
    });
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| config.log.level.clone());
    let log = crate::telemetry::init(format, &level, cli.log_level.is_some());
    let push_addr = config.push.as_ref().map(|p| p.listen);
    let admin_addr = config.admin;
    let daemon =
        crate::daemon::Daemon::build(config, env, Clock::system(), Arc::new(Metrics::new()))?;
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| crate::daemon::DaemonError::Listen(format!("{addr}: {e}")))
    };
    let listeners = crate::daemon::Listeners {
        push: match push_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        },
        admin: match admin_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        },
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        termination().await;
        trigger.cancel();
    });
    #[cfg(unix)]
    {
        let reloader = daemon.reloader(cli.config.clone(), log);
        let env_snapshot = crate::env::MapEnv::from_pairs(env.vars());
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                let _ = reloader.reload(&env_snapshot);
            }
        });
    }
    daemon.run(listeners, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// "1h" → now - 1h; an RFC 3339 time as is.
fn parse_since(s: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(std::time::SystemTime::now() - d);
    }
    crate::action::parse_rfc3339(s)
        .ok_or_else(|| format!("--since `{s}`: expected a duration like 1h or an RFC 3339 time"))
}

async fn audit(
    path: &std::path::Path,
    env: &dyn Environment,
    args: AuditArgs,
) -> Result<ExitCode, CliError> {
    let config = Config::load(path, env)?;
    let since = args
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .map_err(CliError::Usage)?;
    let journal = crate::journal::Journal::open(
        crate::journal::JournalOptions {
            retention: config.journal.retention,
            ..crate::journal::JournalOptions::new(&config.journal.path)
        },
        Clock::system(),
    )?;
    let entries = journal
        .audit(crate::journal::AuditQuery {
            since,
            integration: args.integration,
            limit: args.limit,
        })
        .await?;
    if args.json {
        for e in &entries {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        }
    } else {
        print!("{}", crate::journal::render_audit(&entries));
    }
    journal.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn sandbox(args: SandboxArgs) -> Result<ExitCode, CliError> {
    let mut functions = Vec::new();
    for f in &args.functions {
        match f.split_once('=') {
            Some((name, url)) => {
                let url = url::Url::parse(url).map_err(|_| {
                    CliError::Usage(format!("--function {f}: `{url}` is not a URL"))
                })?;
                functions.push((name.to_owned(), Some(url)));
            }
            None => functions.push((f.clone(), None)),
        }
    }
    let standalone = crate::sandbox::StandaloneArgs {
        dir: args.dir,
        service_account: args.service_account,
        functions,
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    crate::sandbox::run_standalone(standalone, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_strings_and_json() {
        let p = parse_params(&[
            "username=alice@example.com".into(),
            "resources=[\"a\",\"b\"]".into(),
            "note=a=b".into(),
        ])
        .unwrap();
        assert_eq!(p["username"], "alice@example.com");
        assert_eq!(p["resources"], serde_json::json!(["a", "b"]));
        assert_eq!(p["note"], "a=b");
        assert!(parse_params(&["novalue".into()]).is_err());
        assert!(parse_params(&["x=[broken".into()]).is_err());
    }
}

//! `grantbridge sandbox`: serve the emulated Google and a control plane on
//! 127.0.0.1 for local function development, with a generated key and
//! configuration; `sandbox enqueue` puts an action on that control plane and
//! `sandbox results` shows what came back. Only with the `sandbox` feature.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use grantbridge_sandbox::{STATE_FILE, StandaloneArgs, run_standalone};
use serde_json::{Value, json};

use super::{CliError, parse_params};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct SandboxArgs {
    /// Folder for the generated service-account key, connector token and
    /// grantbridge config (and where enqueue/results find the running sandbox).
    #[arg(long, default_value = "./local-sandbox", global = true)]
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
    #[command(subcommand)]
    pub command: Option<SandboxCommand>,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Put an action on the running sandbox's control plane (`grantbridge run` leases it).
    Enqueue {
        /// The integration's name in the generated configuration.
        integration: String,
        /// The event type, e.g. grant-access.
        event_type: String,
        /// A param as key=value; a value starting with [ or { is read as JSON.
        #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// The action id (default: a fresh one).
        #[arg(long)]
        id: Option<String>,
    },
    /// Show the results the running sandbox's control plane has received.
    Results {
        /// The whole results as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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
    match args.command {
        None => {
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
        Some(SandboxCommand::Enqueue {
            integration,
            event_type,
            params,
            id,
        }) => {
            let id =
                id.unwrap_or_else(|| format!("local-{}", hex::encode(rand::random::<[u8; 6]>())));
            let action = json!({"id": id, "integration": integration, "event_type": event_type,
                "params": parse_params(&params)?});
            let answer = admin(&args.dir, reqwest::Method::POST, "actions", Some(&action)).await?;
            println!("enqueued {}", answer["enqueued"][0].as_str().unwrap_or(&id));
            Ok(ExitCode::SUCCESS)
        }
        Some(SandboxCommand::Results { json }) => {
            let answer = admin(&args.dir, reqwest::Method::GET, "results", None).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&answer["results"]).unwrap_or_default()
                );
            } else {
                print!("{}", results_table(&answer["results"]));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Calls the running sandbox control plane's admin API.
async fn admin(
    dir: &Path,
    method: reqwest::Method,
    what: &str,
    body: Option<&Value>,
) -> Result<Value, CliError> {
    let state_file = dir.join(STATE_FILE);
    let not_running = || {
        CliError::LocalSandbox(format!(
            "no running sandbox found in {} (start one with `grantbridge sandbox --dir {}`)",
            dir.display(),
            dir.display()
        ))
    };
    let state: Value = std::fs::read_to_string(&state_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(not_running)?;
    let base = state["control_plane"].as_str().ok_or_else(not_running)?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut request = client.request(method, format!("{base}/_admin/{what}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let answer = request.send().await.map_err(|_| not_running())?;
    let status = answer.status();
    let value: Value = answer.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(CliError::LocalSandbox(format!(
            "the sandbox control plane answered HTTP {}: {}",
            status.as_u16(),
            value["message"].as_str().unwrap_or("")
        )));
    }
    Ok(value)
}

/// One line per result: id, outcome (or error code), attempts, HTTP status.
fn results_table(results: &Value) -> String {
    let mut out = format!(
        "{:<24} {:<22} {:>8} {:>6}  ACCEPTED\n",
        "ACTION", "RESULT", "ATTEMPTS", "HTTP"
    );
    let Some(map) = results.as_object() else {
        return out;
    };
    let mut rows: Vec<_> = map.iter().collect();
    rows.sort_by_key(|(_, r)| r["accepted_at"].as_str().unwrap_or("").to_owned());
    for (id, record) in rows {
        let r = &record["result"];
        let result = r["error"]["code"]
            .as_str()
            .unwrap_or_else(|| r["outcome"].as_str().unwrap_or("?"));
        let status = r["function"]["status"]
            .as_u64()
            .map_or("-".to_owned(), |s| s.to_string());
        out.push_str(&format!(
            "{:<24} {:<22} {:>8} {:>6}  {}\n",
            crate::telemetry::Escaped(id),
            result,
            r["attempts"].as_u64().unwrap_or(0),
            status,
            record["accepted_at"].as_str().unwrap_or("")
        ));
    }
    out
}

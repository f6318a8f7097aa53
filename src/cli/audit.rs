//! `grantbridge audit`: the audit trail of function calls, from the journal.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;

use super::CliError;
use crate::config::{Config, Secrets};
use crate::env::Environment;
use crate::journal::{AuditQuery, Journal, render_audit};

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

/// "1h" → now - 1h; an RFC 3339 time as is.
fn parse_since(s: &str) -> Result<SystemTime, CliError> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now() - d);
    }
    crate::action::parse_rfc3339(s).ok_or_else(|| CliError::Since(s.to_owned()))
}

pub(super) async fn audit(
    path: &Path,
    env: &dyn Environment,
    args: AuditArgs,
) -> Result<ExitCode, CliError> {
    // The journal is all it reads: no token, key or secret is needed, so it
    // works from a plain shell beside a daemon whose secrets only it can read.
    let config = Config::load_with(path, env, Secrets::Skip)?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    // Read-only and without the lock: it works while the daemon runs.
    let query = AuditQuery {
        since,
        integration: args.integration,
        limit: args.limit,
    };
    let journal_path = config.journal.path.clone();
    let entries = tokio::task::spawn_blocking(move || Journal::read_audit(&journal_path, &query))
        .await
        .map_err(|_| CliError::Api("reading the journal failed".into()))??;
    if args.json {
        for e in &entries {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        }
    } else {
        print!("{}", render_audit(&entries));
    }
    Ok(ExitCode::SUCCESS)
}

//! `grantbridge invoke`: call an integration's function once, as the daemon
//! would, and print the answer (like `gcloud functions call`).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value};

use super::{CliError, services};
use crate::contract::{Body, EventType, validate_params};
use crate::env::Environment;
use crate::function::{Call, Outcome, Report};

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

/// A `--param` that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("--param `{0}` is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("--param {key}: not valid JSON: {reason}")]
    Json { key: String, reason: String },
}

/// Parses `key=value` params; values starting with `[` or `{` are JSON.
pub fn parse_params(raw: &[String]) -> Result<Map<String, Value>, ParamError> {
    let mut params = Map::new();
    for p in raw {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| ParamError::NotKeyValue(p.clone()))?;
        let value = if v.starts_with('[') || v.starts_with('{') {
            serde_json::from_str(v).map_err(|e| ParamError::Json {
                key: k.to_owned(),
                reason: e.to_string(),
            })?
        } else {
            Value::String(v.to_owned())
        };
        params.insert(k.to_owned(), value);
    }
    Ok(params)
}

pub(super) async fn invoke(
    path: &Path,
    env: &dyn Environment,
    args: InvokeArgs,
) -> Result<ExitCode, CliError> {
    let services = services(path, env)?;
    let integrations = &services.config.integrations;
    let integration = integrations
        .get(&args.integration)
        .ok_or_else(|| CliError::unknown("integration", &args.integration, integrations.keys()))?;
    let event_type = EventType::parse(&args.event_type).ok_or_else(|| {
        let all: Vec<_> = EventType::ALL.iter().map(|e| e.as_str()).collect();
        CliError::EventType(args.event_type.clone(), all.join(", "))
    })?;
    let params = parse_params(&args.params)?;
    validate_params(event_type, &params)?;
    let call = Call {
        trace_id: None,
        sampled: true,
        event_type,
        params: params.into(),
        idempotency_key: args
            .idempotency_key
            .unwrap_or_else(|| format!("cli-{}", hex::encode(rand::random::<[u8; 8]>()))),
        not_after: None,
    };
    let report = services.invoker.invoke(integration, &call).await;
    print_report(&report);
    match report.outcome {
        Outcome::Succeeded => Ok(ExitCode::SUCCESS),
        Outcome::Failed { message, .. } => {
            eprintln!("error: {message}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// One summary line, then the body.
/// "1 attempt, answered in 12 ms" or "3 attempts in 1.9 s, the last answered
/// in 12 ms": an attempt without an answer (no token, no connection) has no
/// answer time, so none is shown for it.
fn attempts_and_time(attempts: u32, last_answer: Option<Duration>, total: Duration) -> String {
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    match (attempts, last_answer) {
        (1, Some(l)) => format!("1 attempt, answered in {}", ms(l)),
        (1, None) => format!("1 attempt, no answer after {}", ms(total)),
        (n, Some(l)) => format!(
            "{n} attempts in {}, the last answered in {}",
            ms(total),
            ms(l)
        ),
        (n, None) => format!("{n} attempts in {}, none answered", ms(total)),
    }
}

fn print_report(report: &Report) {
    let status = report
        .status
        .map(|s| format!("HTTP {s}"))
        .unwrap_or_else(|| "no HTTP answer".into());
    let verdict = match &report.outcome {
        Outcome::Succeeded => "succeeded".to_owned(),
        Outcome::Failed { code, .. } => format!("failed ({})", code.as_str()),
    };
    let total = report
        .finished_at
        .duration_since(report.started_at)
        .unwrap_or_default();
    println!(
        "{status} · {verdict} · {} · {}",
        attempts_and_time(
            report.attempts,
            report.status.map(|_| report.latency),
            total
        ),
        report.url
    );
    match &report.body {
        Some(Body::Json(v)) => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Some(Body::Text(t)) => println!("{t}"),
        None => {}
    }
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
        assert_eq!(
            parse_params(&["novalue".into()]),
            Err(ParamError::NotKeyValue("novalue".into()))
        );
        assert!(matches!(
            parse_params(&["x=[broken".into()]),
            Err(ParamError::Json { .. })
        ));
    }

    #[test]
    fn attempts_are_counted_in_words_and_unanswered_ones_have_no_answer_time() {
        let ms = Duration::from_millis;
        assert_eq!(
            attempts_and_time(1, Some(ms(12)), ms(13)),
            "1 attempt, answered in 12 ms"
        );
        assert_eq!(
            attempts_and_time(3, None, ms(1900)),
            "3 attempts in 1900 ms, none answered"
        );
        assert_eq!(
            attempts_and_time(2, Some(ms(5)), ms(300)),
            "2 attempts in 300 ms, the last answered in 5 ms"
        );
    }
}

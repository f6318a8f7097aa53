//! Logging and traces. Logs: tracing to stderr, human or JSON lines. The level filter can be
//! swapped at runtime (SIGHUP reload) unless the operator pinned it with
//! `RUST_LOG` or `--log-level`.
//!
//! It must be initialised once per process; library code only emits events.
//! Events never carry tokens, keys, secrets or response bodies: callers log ids,
//! names, statuses and error messages that are themselves secret-free.
//!
//! Nothing from outside reaches a log line raw. Values sent by the control
//! plane, a pusher or a function can hold newlines (a forged line), terminal
//! escapes (`ESC [31m`, OSC titles) or bidirectional overrides (U+202E): the
//! human format escapes every field value, and the JSON writer escapes what
//! JSON leaves raw (DEL, C1 controls, bidi controls). Colour is used only on a
//! terminal, and never with `NO_COLOR` set.
//!
//! Traces (OTLP, when configured) are in [`traces`].

pub mod traces;

use std::borrow::Cow;
use std::fmt::Write as _;

use clap::ValueEnum;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Registry, field::MakeExt, fmt, reload};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    /// One JSON object per line, with the field set of docs/operations.md.
    Json,
    /// JSON lines as Google Cloud Logging reads them (`severity`,
    /// `logging.googleapis.com/trace`, `logging.googleapis.com/spanId`).
    CloudLogging,
}

/// One JSON object per event: `time`, `level` (or `severity`), `message`,
/// `target`, the fields of the spans it happened in (`action_id`,
/// `integration`, `event_type`, `username`, `trace_id`, `span_id`) and its
/// own fields, flat. Cloud Logging mode adds the trace link.
struct JsonLines {
    cloud: bool,
    /// The project of `logging.googleapis.com/trace` links.
    trace_project: Option<String>,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use serde_json::Value;
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert(
            "time".into(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        if self.cloud {
            let severity = match *meta.level() {
                tracing::Level::ERROR => "ERROR",
                tracing::Level::WARN => "WARNING",
                tracing::Level::INFO => "INFO",
                _ => "DEBUG",
            };
            line.insert("severity".into(), severity.into());
        } else {
            line.insert("level".into(), meta.level().as_str().into());
        }
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<tracing_subscriber::fmt::FormattedFields<N>>()
                else {
                    continue;
                };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields) {
                    line.extend(map);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        if self.cloud {
            let trace = line
                .get("trace_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let (Some(trace), Some(project)) = (trace, &self.trace_project) {
                line.insert(
                    "logging.googleapis.com/trace".into(),
                    format!("projects/{project}/traces/{trace}").into(),
                );
            }
            if let Some(span) = line.get("span_id").cloned() {
                line.insert("logging.googleapis.com/spanId".into(), span);
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields into a JSON object.
struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Changes the level of the running subscriber.
#[derive(Clone)]
pub struct LogHandle {
    reload: Option<reload::Handle<EnvFilter, Registry>>,
    /// `RUST_LOG` or `--log-level` decided the level; configuration does not.
    pinned: bool,
}

impl LogHandle {
    /// A handle that changes nothing (tests, a second init).
    pub fn inert() -> Self {
        Self {
            reload: None,
            pinned: true,
        }
    }

    /// Applies a level from the configuration, unless the operator pinned one.
    pub fn set_level(&self, level: &str) -> Result<(), LogLevelError> {
        if self.pinned {
            return Ok(());
        }
        let Some(reload) = &self.reload else {
            return Ok(());
        };
        let filter = parse_filter(level).map_err(|e| LogLevelError::Invalid {
            level: level.to_owned(),
            reason: e.to_string(),
        })?;
        reload
            .reload(filter)
            .map_err(|e| LogLevelError::Apply(e.to_string()))
    }
}

/// A log filter (`info`, `grantbridge=debug,info`, ...), at most 1 KiB, with
/// span field values matched as plain strings: as regular expressions (the
/// default) a crafted filter compiles for minutes (found by fuzzing the
/// configuration).
pub fn parse_filter(level: &str) -> Result<EnvFilter, String> {
    const MAX: usize = 1024;
    if level.len() > MAX {
        return Err(format!("longer than {MAX} bytes"));
    }
    EnvFilter::builder()
        .with_regex(false)
        .parse(level)
        .map_err(|e| e.to_string())
}

/// Why a log level could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    #[error("log level `{level}`: {reason}")]
    Invalid { level: String, reason: String },
    #[error("applying the log level: {0}")]
    Apply(String),
}

/// Is `c` a character a log line must never carry raw: a control character
/// (C0 including newline, DEL, C1) or a Unicode bidirectional control?
fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every dangerous character escaped (`\n`, `\u{1b}`, `\u{202e}`).
pub fn escape_for_log(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_dangerous) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_dangerous(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A value from outside, escaped for a log line (see [`escape_for_log`]).
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&escape_for_log(self.0))
    }
}

/// Standard error for JSON lines: what JSON leaves raw (DEL, C1 controls,
/// bidi controls) is written as a JSON `\uXXXX` escape, still valid JSON.
struct JsonSafeStderr;

impl std::io::Write for JsonSafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let mut stderr = std::io::stderr().lock();
        if text.chars().any(|c| is_dangerous(c) && c != '\n') {
            let mut out = String::with_capacity(text.len() + 16);
            for c in text.chars() {
                if is_dangerous(c) && c != '\n' {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    out.push(c);
                }
            }
            stderr.write_all(out.as_bytes())?;
        } else {
            stderr.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Where and how logs are written.
#[derive(Debug, Clone, Default)]
pub struct LogOutput {
    pub format: LogFormat,
    /// stderr is a terminal and `NO_COLOR` is not set.
    pub color: bool,
    /// The project of Cloud Logging trace links.
    pub trace_project: Option<String>,
    /// Export traces here (the daemon, when configured).
    pub traces: Option<traces::TraceSettings>,
}

/// What [`init`] started: the log level handle and, when traces are
/// exported, the exporter to flush before exiting.
pub struct Telemetry {
    pub log: LogHandle,
    pub traces: Option<traces::Exporter>,
}

/// Starts logging, and exporting traces when `output.traces` says where (from
/// within a Tokio runtime, which the exporter's requests run on). `pinned`:
/// `level` came from the command line.
pub fn init(
    output: &LogOutput,
    level: &str,
    pinned: bool,
) -> Result<Telemetry, traces::TraceSetupError> {
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .and_then(|v| parse_filter(&v).ok());
    let (filter, pinned) = match from_env {
        Some(from_env) => (from_env, true),
        None => (
            parse_filter(level).unwrap_or_else(|_| EnvFilter::new("info")),
            pinned,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let logs = match output.format {
        LogFormat::Human => fmt::layer()
            .with_ansi(output.color)
            .fmt_fields(
                fmt::format::debug_fn(|w: &mut Writer<'_>, field, value| {
                    let text = format!("{value:?}");
                    match field.name() {
                        "message" => write!(w, "{}", escape_for_log(&text)),
                        name => write!(w, "{name}={}", escape_for_log(&text)),
                    }
                })
                .delimited(" "),
            )
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json | LogFormat::CloudLogging => fmt::layer()
            .fmt_fields(fmt::format::JsonFields::new())
            .event_format(JsonLines {
                cloud: output.format == LogFormat::CloudLogging,
                trace_project: output.trace_project.clone(),
            })
            .with_writer(|| JsonSafeStderr)
            .boxed(),
    }
    // The log level filters the log lines only: exported spans do not depend on it.
    .with_filter(filter);
    let (spans, exporter) = match &output.traces {
        Some(settings) => {
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| traces::TraceSetupError::new("exporting needs a Tokio runtime"))?;
            let (provider, exporter) = traces::provider(settings, runtime)?;
            (Some(traces::layer(&provider)), Some(exporter))
        }
        None => (None, None),
    };
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    Ok(Telemetry {
        log: if installed {
            LogHandle {
                reload: Some(handle),
                pinned,
            }
        } else {
            LogHandle::inert()
        },
        // A second init (tests) installs nothing; its exporter would export nothing.
        traces: exporter.filter(|_| installed),
    })
}

/// Whether logs on stderr may be coloured: a terminal, and no `NO_COLOR`
/// (any value, as no-color.org says).
pub fn stderr_wants_color(env: &dyn crate::env::Environment) -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && env.var("NO_COLOR").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_characters_are_escaped() {
        assert_eq!(escape_for_log("alice@example.com"), "alice@example.com");
        assert!(matches!(escape_for_log("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_for_log("a\n2026-01-01 INFO forged"),
            "a\\n2026-01-01 INFO forged"
        );
        assert_eq!(
            escape_for_log("\u{1b}[31mred\u{1b}]0;title\u{7}"),
            "\\u{1b}[31mred\\u{1b}]0;title\\u{7}"
        );
        assert_eq!(
            escape_for_log("evil\u{202e}txt.exe"),
            "evil\\u{202e}txt.exe"
        );
        assert_eq!(escape_for_log("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape_for_log("é ü 漢"), "é ü 漢");
    }
}

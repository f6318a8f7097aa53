//! Logging: tracing to stderr, human or JSON lines. The level filter can be
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
    Json,
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
        let filter = EnvFilter::try_new(level).map_err(|e| LogLevelError::Invalid {
            level: level.to_owned(),
            reason: e.to_string(),
        })?;
        reload
            .reload(filter)
            .map_err(|e| LogLevelError::Apply(e.to_string()))
    }
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

/// Starts logging. `pinned`: `level` came from the command line. `color`:
/// stderr is a terminal and `NO_COLOR` is not set.
pub fn init(format: LogFormat, level: &str, pinned: bool, color: bool) -> LogHandle {
    let (filter, pinned) = match EnvFilter::try_from_default_env() {
        Ok(from_env) => (from_env, true),
        Err(_) => (
            EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
            pinned,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Human => fmt::layer()
            .with_ansi(color)
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
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(|| JsonSafeStderr)
            .boxed(),
    };
    match tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
    {
        Ok(()) => LogHandle {
            reload: Some(handle),
            pinned,
        },
        Err(_) => LogHandle::inert(),
    }
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

//! Text for people: the per-integration verdict blocks of `grantbridge check
//! --online` and the table of `grantbridge functions list`.
//!
//! It must not decide anything: severities and statuses come from the checks.

use super::{Severity, Verdict};
use crate::google::functions_api::CloudFunction;
use crate::health::Health;

/// One block per integration (status, URL, every finding), then a summary line.
pub fn render_verdicts(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    let width = verdicts
        .iter()
        .map(|v| v.integration.len())
        .max()
        .unwrap_or(0);
    for v in verdicts {
        let status = match v.status {
            Health::Ok => "ok",
            Health::Degraded => "WARNING",
            Health::Error => "ERROR",
        };
        out.push_str(&format!(
            "  {status:<8} {:<width$}  {}\n",
            v.integration, v.function_url
        ));
        for f in &v.findings {
            let mark = match f.severity {
                Severity::Info => "  info   ",
                Severity::Warning => "! WARNING",
                Severity::Error => "x ERROR  ",
            };
            out.push_str(&format!("             {mark} {}\n", f.message));
        }
    }
    let count = |s: Health| verdicts.iter().filter(|v| v.status == s).count();
    out.push_str(&format!(
        "online: {} ok, {} with warnings, {} failed\n",
        count(Health::Ok),
        count(Health::Degraded),
        count(Health::Error)
    ));
    out
}

/// `NAME REGION STATE GEN URL RUNTIME TIMEOUT INGRESS`, one row per
/// function. The URL of a 2nd gen function is its Cloud Run URL: the
/// audience its tokens need (it also answers at its cloudfunctions.net URL).
pub fn render_functions(functions: &[CloudFunction]) -> String {
    let header = [
        "NAME", "REGION", "STATE", "GEN", "URL", "RUNTIME", "TIMEOUT", "INGRESS",
    ];
    let rows: Vec<[String; 8]> = functions
        .iter()
        .map(|f| {
            [
                f.name.function.clone(),
                f.name.region.clone(),
                f.state.as_str().to_owned(),
                match f.generation {
                    crate::google::functions_api::Generation::Gen1 => "1st".to_owned(),
                    crate::google::functions_api::Generation::Gen2 => "2nd".to_owned(),
                },
                match (&f.event_type, f.generation) {
                    (Some(e), _) => format!("(event: {e})"),
                    (None, crate::google::functions_api::Generation::Gen2) => {
                        { f.service_uri.clone().or_else(|| f.url.clone()) }
                            .unwrap_or_else(|| "-".to_owned())
                    }
                    (None, _) => f.url.clone().unwrap_or_else(|| "-".to_owned()),
                },
                f.runtime.clone().unwrap_or_else(|| "-".to_owned()),
                f.timeout
                    .map(|t| format!("{}s", t.as_secs()))
                    .unwrap_or_else(|| "-".to_owned()),
                f.ingress.as_str().to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| -> String {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
    }
    out
}

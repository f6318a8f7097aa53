//! The audit trail's types (one row per attempt to call a function), the query
//! over it, and the fixed-width table `grantbridge audit` prints.
//!
//! It must not hold params, tokens or response bodies: only who, what, where,
//! how it went and how long it took.

use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::action::rfc3339;

/// How many rows an [`AuditQuery`] with `limit: 0` returns.
pub const DEFAULT_AUDIT_LIMIT: usize = 1000;

/// One attempt to call a function for an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// When the attempt started (stored with millisecond precision,
    /// serialized as RFC 3339 in UTC to the second).
    #[serde(serialize_with = "serialize_rfc3339")]
    pub at: SystemTime,
    pub action_id: String,
    pub integration: String,
    pub event_type: String,
    /// The `username` param, when the action had one.
    pub username: Option<String>,
    /// `None` when no call was made (e.g. no ID token could be minted).
    pub function_url: Option<String>,
    /// `None` when no HTTP answer came back.
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    /// `succeeded` or an error code (`function_unavailable`, `permission_denied`, ...).
    pub outcome: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub instance_id: String,
}

fn serialize_rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// Which audit rows to return, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only rows at or after this instant.
    pub since: Option<SystemTime>,
    /// Only rows for this integration.
    pub integration: Option<String>,
    /// At most this many rows; 0 means [`DEFAULT_AUDIT_LIMIT`].
    pub limit: usize,
}

impl AuditQuery {
    pub(crate) fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            DEFAULT_AUDIT_LIMIT
        } else {
            self.limit
        }
    }
}

/// The widest a cell may be before it is cut short with `…`.
const MAX_CELL: usize = 40;

/// Formats entries as a fixed-width table for people: time, action,
/// integration, event, user, status, latency, outcome, attempt. Columns are as
/// wide as their widest cell (capped; longer cells end in `…`). Every line,
/// the header included, ends in a newline.
pub fn render_audit(entries: &[AuditEntry]) -> String {
    const HEADERS: [&str; 9] = [
        "TIME",
        "ACTION",
        "INTEGRATION",
        "EVENT",
        "USER",
        "STATUS",
        "LATENCY",
        "OUTCOME",
        "ATTEMPT",
    ];
    // Numbers read best right-aligned.
    const RIGHT: [bool; 9] = [false, false, false, false, false, true, true, false, true];
    let rows: Vec<[String; 9]> = entries
        .iter()
        .map(|e| {
            [
                rfc3339(e.at),
                e.action_id.clone(),
                e.integration.clone(),
                e.event_type.clone(),
                e.username.clone().unwrap_or_else(|| "-".into()),
                e.http_status.map_or_else(|| "-".into(), |s| s.to_string()),
                format!("{}ms", e.latency_ms),
                e.outcome.clone(),
                e.attempt.to_string(),
            ]
            .map(|cell| clip(&cell))
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 9]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i] - cell.chars().count();
            if RIGHT[i] {
                text.extend(std::iter::repeat_n(' ', pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(HEADERS);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}

/// Cuts a cell to [`MAX_CELL`] characters and flattens control characters so
/// one entry stays on one line.
fn clip(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= MAX_CELL {
        flat
    } else {
        let mut cut: String = flat.chars().take(MAX_CELL - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn entry(action_id: &str, status: Option<u16>) -> AuditEntry {
        AuditEntry {
            at: UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            action_id: action_id.into(),
            integration: "orders-db".into(),
            event_type: "grant-access".into(),
            username: Some("alice@example.com".into()),
            function_url: Some("https://f.example/grant".into()),
            http_status: status,
            latency_ms: 41,
            outcome: if status == Some(200) {
                "succeeded".into()
            } else {
                "function_unavailable".into()
            },
            attempt: 1,
            instance_id: "gb-0/3f9c".into(),
        }
    }

    #[test]
    fn table_columns_line_up() {
        let table = render_audit(&[entry("act-1", Some(200)), entry("act-22222", None)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("TIME "), "{table}");
        for col in ["ACTION", "INTEGRATION", "STATUS", "OUTCOME"] {
            let at = lines[0].find(col).unwrap();
            // Every row has a cell boundary (two spaces) right before the column.
            for l in &lines[1..] {
                assert_eq!(&l[at - 2..at], "  ", "{col} misaligned:\n{table}");
            }
        }
        assert!(lines[1].contains("2026-11-18T") && lines[1].contains("200"));
        assert!(lines[2].contains(" - ") && lines[2].contains("function_unavailable"));
        assert!(lines[1].ends_with('1'));
    }

    #[test]
    fn long_and_multiline_cells_are_clipped_to_one_line() {
        let mut e = entry("act-1", Some(200));
        e.username = Some(format!("{}\nevil", "u".repeat(60)));
        let table = render_audit(&[e]);
        assert_eq!(table.lines().count(), 2);
        assert!(table.contains('…'));
        assert!(!table.contains(&"u".repeat(41)));
    }

    #[test]
    fn empty_table_is_a_header() {
        assert_eq!(render_audit(&[]).lines().count(), 1);
    }

    #[test]
    fn serializes_time_as_rfc3339() {
        let v = serde_json::to_value(entry("act-1", Some(200))).unwrap();
        assert_eq!(v["at"], "2026-11-18T11:06:40Z");
        assert_eq!(v["http_status"], 200);
    }
}

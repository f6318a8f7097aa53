//! Queries: the outbox, unfinished actions, one action's state, the audit
//! trail. Plain functions over a connection, run on the read-only connection
//! (and `load_state` also inside the writer's transaction).
//!
//! It must not write. A row it cannot decode is reported as
//! [`JournalError::Corrupt`] naming the action rather than skipped, except a
//! stored result, which reads as a failed `internal` result (see
//! `parse_result`): a result must always be deliverable.

use rusqlite::{Connection, OptionalExtension, Row, ToSql};

use super::{
    ActionState, AuditEntry, AuditQuery, JournalError, OutboxItem, OutboxSummary, Progress, Source,
    Unfinished, from_ms, to_ms,
};
use crate::action::{Action, ActionResult};
use crate::contract::ErrorCode;

pub(crate) fn load_state(conn: &Connection, id: &str) -> Result<Option<ActionState>, JournalError> {
    let row = conn
        .prepare_cached(
            "SELECT status, result, source, lease_token, completed_at FROM actions WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })
        .optional()?;
    let Some((status, result, source, lease_token, completed_at)) = row else {
        return Ok(None);
    };
    Ok(Some(ActionState {
        status: Progress::parse(&status)
            .ok_or_else(|| JournalError::corrupt(id, format!("unknown status {status:?}")))?,
        result: result.map(|r| parse_result(id, &r, completed_at.unwrap_or(0))),
        source: parse_source(id, &source)?,
        lease_token,
    }))
}

pub(crate) fn outbox(conn: &Connection, limit: usize) -> Result<Vec<OutboxItem>, JournalError> {
    Ok(outbox_sized(conn, limit)?
        .into_iter()
        .map(|(item, _)| item)
        .collect())
}

/// [`outbox`], with each result's stored size in bytes.
pub(crate) fn outbox_sized(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<(OutboxItem, usize)>, JournalError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, result, lease_token, source, completed_seq, completed_at FROM actions
         WHERE completed_seq IS NOT NULL AND reported_at IS NULL
         ORDER BY completed_seq LIMIT ?1",
    )?;
    let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (id, result, lease_token, source, completed_seq, completed_at) = row?;
        let item = OutboxItem {
            result: parse_result(&id, &result, completed_at.unwrap_or(0)),
            lease_token,
            source: parse_source(&id, &source)?,
            completed_seq,
        };
        items.push((item, result.len()));
    }
    Ok(items)
}

/// How many results wait for the control plane, and since when the oldest.
pub(crate) fn outbox_summary(conn: &Connection) -> Result<OutboxSummary, JournalError> {
    let (n, oldest): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), min(completed_at) FROM actions
             WHERE completed_seq IS NOT NULL AND reported_at IS NULL",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(OutboxSummary {
        depth: n.try_into().unwrap_or(0),
        oldest: oldest.map(from_ms),
    })
}

pub(crate) fn outbox_depth(conn: &Connection) -> Result<u64, JournalError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM actions WHERE completed_seq IS NOT NULL AND reported_at IS NULL",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(n.try_into().unwrap_or(0))
}

pub(crate) fn unfinished(conn: &Connection) -> Result<Vec<Unfinished>, JournalError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, action, source, lease_token, status FROM actions
         WHERE status IN ('queued', 'running') ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (id, action, source, lease_token, status) = row?;
        let action =
            action.ok_or_else(|| JournalError::corrupt(&id, "unfinished without its action"))?;
        let action: Action = serde_json::from_str(&action)
            .map_err(|e| JournalError::corrupt(&id, format!("stored action: {e}")))?;
        items.push(Unfinished {
            action,
            source: parse_source(&id, &source)?,
            lease_token,
            was_running: status == Progress::Running.as_str(),
        });
    }
    Ok(items)
}

pub(crate) fn audit(conn: &Connection, q: &AuditQuery) -> Result<Vec<AuditEntry>, JournalError> {
    let since = q.since.map(to_ms).unwrap_or(i64::MIN);
    let limit = i64::try_from(q.effective_limit()).unwrap_or(i64::MAX);
    let columns = "SELECT at, action_id, integration, event_type, username, function_url,
                          http_status, latency_ms, outcome, attempt, instance_id FROM audit";
    let (sql, params): (String, Vec<&dyn ToSql>) = match &q.integration {
        Some(integration) => (
            format!(
                "{columns} WHERE integration = ?1 AND at >= ?2 ORDER BY at DESC, seq DESC LIMIT ?3"
            ),
            vec![integration, &since, &limit],
        ),
        None => (
            format!("{columns} WHERE at >= ?1 ORDER BY at DESC, seq DESC LIMIT ?2"),
            vec![&since, &limit],
        ),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params.as_slice(), audit_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        at: from_ms(r.get(0)?),
        action_id: r.get(1)?,
        integration: r.get(2)?,
        event_type: r.get(3)?,
        username: r.get(4)?,
        function_url: r.get(5)?,
        http_status: r.get(6)?,
        latency_ms: r.get::<_, i64>(7)?.try_into().unwrap_or(0),
        outcome: r.get(8)?,
        attempt: r.get(9)?,
        instance_id: r.get(10)?,
    })
}

/// A stored result. One that cannot be read back (a journal written by a
/// version that stored what it could not read) becomes a failed `internal`
/// result saying so, so that it can still be reported and answered: one bad
/// row must never block the outbox or a status query.
fn parse_result(id: &str, json: &str, completed_at_ms: i64) -> ActionResult {
    serde_json::from_str(json).unwrap_or_else(|e| {
        tracing::error!(action_id = %id, error = %e, "a stored result is unreadable; reporting it as failed (internal)");
        let at = from_ms(completed_at_ms);
        ActionResult::failed(
            id,
            ErrorCode::Internal,
            &format!(
                "the connector stored this action's result but cannot read it back ({e}); the function may have run: look for Idempotency-Key {id} in its logs"
            ),
            at,
            at,
            "unknown",
        )
    })
}

pub(crate) fn parse_source(id: &str, s: &str) -> Result<Source, JournalError> {
    Source::parse(s).ok_or_else(|| JournalError::corrupt(id, format!("unknown source {s:?}")))
}

//! The writer thread: owns the only write connection, takes every queued
//! write (up to the batch maximum), applies them inside ONE transaction,
//! commits (one fsync for the lot), and only then answers each caller. This
//! is group commit: durability costs one fsync per batch, not per write. A
//! batch of writes that need no fsync (results marked reported, a prune:
//! [`Op::must_sync`]) commits without one.
//!
//! A batch is applied optimistically, without savepoints. If any write in it
//! fails, the transaction is rolled back and the batch applied again with
//! each write in its own savepoint, so that the failing one is rolled back
//! alone (writes are deterministic: the second pass sees what the first did).
//!
//! It must not answer a write before its transaction has committed, and one
//! failing write must not fail the others in its batch. It must not read the
//! clock: callers stamp requests.

use super::health::{WriteHealth, is_disk_error};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::mirror::Mirror;
use super::{
    AuditEntry, Counters, JournalError, OutboxItem, Progress, Recorded, Source, read,
    read::load_state, to_ms,
};
use crate::action::{ActionResult, ResultOutcome};

/// What the channel carries.
pub(crate) enum Msg {
    Op(Request),
    /// Commit what came before, checkpoint, stop.
    Close(oneshot::Sender<()>),
    /// Commit what came before, then read the whole outbox into the mirror.
    LoadMirror,
}

/// One write, stamped with the caller's clock.
pub(crate) struct Request {
    pub(crate) op: Op,
    /// Unix ms when the caller asked.
    pub(crate) at: i64,
    pub(crate) reply: oneshot::Sender<Result<Done, JournalError>>,
}

#[derive(Debug)]
pub(crate) enum Op {
    Record {
        id: String,
        action_json: String,
        source: Source,
        lease_token: Option<String>,
    },
    Complete {
        id: String,
        status: Progress,
        result_json: String,
        /// The result itself, for the outbox in memory (taken once committed).
        result: Option<Box<ActionResult>>,
        /// Set for `complete_unrecorded`: how to store an id never recorded.
        unrecorded: Option<(Source, Option<String>)>,
        /// The audit entries of the action's attempts, stored with it.
        attempts: Vec<AuditEntry>,
    },
    Attempt(Box<AuditEntry>),
    MarkReported(Vec<String>),
    /// Puts a reported result back in the outbox (the control plane asked again).
    Requeue(String),
    Prune {
        /// Unix ms: rows older than this go.
        cutoff: i64,
    },
    /// A small real write, to learn whether the disk takes writes again.
    Probe,
}

impl Op {
    /// The operation's name in traces.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Record { .. } => "record",
            Op::Complete { .. } => "complete",
            Op::Attempt(_) => "attempt",
            Op::MarkReported(_) => "mark_reported",
            Op::Requeue(_) => "requeue",
            Op::Prune { .. } => "prune",
            Op::Probe => "probe",
        }
    }

    /// Whether the write must be on disk before its caller is answered.
    /// Two need not:
    /// - a mark of results reported: lost to a power cut (never to a crash
    ///   of the process, which leaves the WAL with the OS), the results are
    ///   reported again at the next start, and the control plane accepts a
    ///   second report of an action and keeps the first result
    ///   (docs/protocol.md);
    /// - a prune: lost, the rows go at the next round.
    ///
    /// Every other write is what something is promised on (an action
    /// acknowledged or invoked, a result reported, an audit entry). The WAL
    /// is one file written in order, so the next durable commit's fsync also
    /// makes the writes before it durable.
    pub(crate) fn must_sync(&self) -> bool {
        !matches!(self, Op::MarkReported(_) | Op::Prune { .. })
    }

    /// Serializes on the caller's thread so the writer only writes.
    pub(crate) fn complete(
        result: &ActionResult,
        unrecorded: Option<(Source, Option<String>)>,
        attempts: Vec<AuditEntry>,
    ) -> Result<Op, JournalError> {
        let result_json = serde_json::to_string(result).map_err(|e| {
            JournalError::corrupt(&result.action_id, format!("result to JSON: {e}"))
        })?;
        Ok(Op::Complete {
            id: result.action_id.clone(),
            status: match result.outcome {
                ResultOutcome::Succeeded => Progress::Succeeded,
                ResultOutcome::Failed => Progress::Failed,
            },
            result_json,
            result: Some(Box::new(result.clone())),
            unrecorded,
            attempts,
        })
    }
}

/// What a committed write answers.
#[derive(Debug)]
pub(crate) enum Done {
    Unit,
    /// A result entered the outbox at `seq`.
    Completed {
        lease_token: Option<String>,
        source: Source,
        seq: i64,
    },
    Recorded(Box<Recorded>),
    Count(u64),
}

pub(crate) struct Writer {
    conn: Connection,
    receiver: mpsc::Receiver<Msg>,
    max_batch: usize,
    counters: Arc<Counters>,
    health: Arc<WriteHealth>,
    path: std::path::PathBuf,
    mirror: Arc<Mirror>,
    /// The connection's `synchronous` now: FULL (each commit fsyncs the
    /// WAL), as [`super::schema::open_writer`] leaves it, or NORMAL (no
    /// fsync at commit) for a batch of writes that need none.
    full_sync: bool,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        receiver: mpsc::Receiver<Msg>,
        max_batch: usize,
        counters: Arc<Counters>,
        health: Arc<WriteHealth>,
        path: std::path::PathBuf,
        mirror: Arc<Mirror>,
    ) -> Self {
        Self {
            conn,
            receiver,
            max_batch,
            counters,
            health,
            path,
            mirror,
            full_sync: true,
        }
    }

    /// Sets the connection's `synchronous` to FULL (`true`) or NORMAL, when
    /// it is not already. SQLite allows it between transactions; in WAL mode
    /// NORMAL still fsyncs the WAL before each checkpoint.
    fn synchronous(&mut self, full: bool) -> rusqlite::Result<()> {
        if self.full_sync != full {
            let mode = if full { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", mode)?;
            self.full_sync = full;
        }
        Ok(())
    }

    /// Runs until [`Msg::Close`] or until every sender is gone (then what
    /// was queued is still committed).
    pub(crate) fn run(mut self) {
        let mut msgs = Vec::with_capacity(self.max_batch);
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            msgs.clear();
            if self.receiver.blocking_recv_many(&mut msgs, self.max_batch) == 0 {
                self.checkpoint();
                return;
            }
            let mut close = None;
            let mut load = false;
            for msg in msgs.drain(..) {
                match msg {
                    Msg::Op(r) if close.is_none() => batch.push(r),
                    // Sent after Close: dropping the request answers Closed.
                    Msg::Op(_) => {}
                    Msg::Close(reply) => close = Some(reply),
                    Msg::LoadMirror => load = true,
                }
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch);
            }
            if load {
                self.load_mirror();
            }
            if let Some(reply) = close {
                self.receiver.close();
                self.checkpoint();
                let _ = reply.send(());
                return;
            }
        }
    }

    /// `PRAGMA synchronous` of the connection now (2 FULL, 1 NORMAL).
    #[cfg(test)]
    pub(crate) fn synchronous_now(&self) -> i64 {
        self.conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("PRAGMA synchronous")
    }

    fn checkpoint(&self) {
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "journal: WAL checkpoint at close failed; the next open recovers it");
        }
    }

    /// Reads the whole outbox into the mirror (after everything queued before
    /// was committed), unless it holds more than the mirror keeps.
    fn load_mirror(&self) {
        let items = read::outbox_sized(&self.conn, self.mirror.max_items() + 1).ok();
        self.mirror.loaded(items);
    }

    /// The committed writes' effect on the outbox, for the mirror.
    fn update_mirror(&self, batch: &mut [Request], answers: &mut [Result<Done, JournalError>]) {
        for (request, answer) in batch.iter_mut().zip(answers.iter_mut()) {
            let Ok(done) = answer else { continue };
            match (&mut request.op, done) {
                (
                    Op::Complete {
                        result_json,
                        result,
                        ..
                    },
                    Done::Completed {
                        lease_token,
                        source,
                        seq,
                    },
                ) => {
                    if let Some(result) = result.take() {
                        let item = OutboxItem {
                            result: *result,
                            lease_token: lease_token.take(),
                            source: *source,
                            completed_seq: *seq,
                        };
                        self.mirror.completed(item, result_json.len());
                    }
                }
                (Op::MarkReported(ids), _) => self.mirror.reported(ids),
                (
                    Op::Record {
                        id,
                        lease_token: Some(token),
                        ..
                    },
                    Done::Recorded(r),
                ) if matches!(**r, Recorded::Known(_)) => self.mirror.new_lease_token(id, token),
                // Back at its completion position: read the file again.
                (Op::Requeue(_), _) => self.mirror.forget(),
                _ => {}
            }
        }
    }

    /// Applies `batch` in one transaction, commits, then answers everyone.
    /// The batch is committed with an fsync unless no write in it needs one
    /// ([`Op::must_sync`]).
    pub(crate) fn commit_batch(&mut self, batch: &mut Vec<Request>) {
        let n = batch.len() as u64;
        let started = std::time::Instant::now();
        let must_sync = batch.iter().any(|r| r.op.must_sync());
        let applied = match self.synchronous(must_sync) {
            Ok(()) => apply_all(&mut self.conn, batch),
            // Still FULL: the batch commits with an fsync it did not need.
            Err(_) if !must_sync => apply_all(&mut self.conn, batch),
            // Not FULL again: nothing that needs an fsync commits without one.
            Err(e) => Err(e),
        };
        let synced = self.full_sync;
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let answers = match applied {
            Ok(mut answers) => {
                self.update_mirror(batch.as_mut_slice(), &mut answers);
                if synced {
                    self.counters
                        .commit_nanos
                        .fetch_add(took, Ordering::Relaxed);
                    self.counters.transactions.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters
                        .unsynced_transactions
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.counters.writes.fetch_add(n, Ordering::Relaxed);
                // A statement can fail on the disk while the transaction commits.
                let mut disk_failures = answers.iter().filter_map(|a| match a {
                    Err(JournalError::Sqlite(e)) if is_disk_error(e) => Some(e.clone()),
                    _ => None,
                });
                match disk_failures.next() {
                    Some(e) => self
                        .health
                        .failed(&self.path, &e, 1 + disk_failures.count() as u64),
                    None => self.health.succeeded(&self.path),
                }
                answers
            }
            Err(e) => {
                // Nothing was written; the mirror is reloaded to be sure.
                self.mirror.forget();
                if is_disk_error(&e) {
                    // Said once, then at most every 30 s, by the health record.
                    self.health.failed(&self.path, &e, n);
                } else {
                    tracing::error!(error = %e, writes = n, "journal: group commit failed");
                }
                let e = Arc::new(e);
                batch
                    .iter()
                    .map(|_| Err(JournalError::Sqlite(e.clone())))
                    .collect()
            }
        };
        for (request, answer) in batch.drain(..).zip(answers) {
            // A caller that stopped waiting is no error: its write stands.
            let _ = request.reply.send(answer);
        }
    }
}

/// Applies `batch` in one immediate transaction: all at once, or, when one
/// of the writes fails, again with each in its own savepoint. `Err` when the
/// transaction itself failed (nothing was written).
fn apply_all(
    conn: &mut Connection,
    batch: &[Request],
) -> Result<Vec<Result<Done, JournalError>>, rusqlite::Error> {
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut seq = SeqCounter::default();
        let mut answers = Vec::with_capacity(batch.len());
        for request in batch {
            match apply(&tx, request, &mut seq) {
                Ok(done) => answers.push(Ok(done)),
                // This write's own failure (or the disk's): isolated below,
                // as the old single pass did.
                Err(_) => break,
            }
        }
        if answers.len() == batch.len() {
            seq.save(&tx)?;
            tx.commit()?;
            return Ok(answers);
        }
        // Dropping `tx` rolls the first pass back.
    }
    apply_isolated(conn, batch)
}

/// Runs every request in its own savepoint within one immediate transaction.
fn apply_isolated(
    conn: &mut Connection,
    batch: &[Request],
) -> Result<Vec<Result<Done, JournalError>>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut seq = SeqCounter::default();
    let mut answers = Vec::with_capacity(batch.len());
    // Savepoints by cached statements: rusqlite's Savepoint re-parses its SQL
    // on every use, which shows at tens of thousands of writes a second.
    let run = |sql: &str| tx.prepare_cached(sql)?.execute([]).map(drop);
    for request in batch {
        run("SAVEPOINT journal_write")?;
        let mut op_seq = seq;
        let answer = apply(&tx, request, &mut op_seq);
        if answer.is_ok() {
            seq = op_seq;
        } else {
            run("ROLLBACK TO journal_write")?;
        }
        run("RELEASE journal_write")?;
        answers.push(answer);
    }
    seq.save(&tx)?;
    tx.commit()?;
    Ok(answers)
}

/// The completion counter, read once per batch when first needed and saved
/// once at the end.
#[derive(Debug, Clone, Copy, Default)]
struct SeqCounter {
    /// (value when loaded, current value)
    loaded: Option<(i64, i64)>,
}

impl SeqCounter {
    /// The number the next completion gets.
    fn peek(&mut self, conn: &Connection) -> rusqlite::Result<i64> {
        let (_, current) = match self.loaded {
            Some(l) => l,
            None => {
                let v: i64 = conn
                    .prepare_cached("SELECT value FROM counters WHERE name = 'completed_seq'")?
                    .query_row([], |r| r.get(0))?;
                *self.loaded.insert((v, v))
            }
        };
        Ok(current + 1)
    }

    /// Takes the number [`SeqCounter::peek`] showed.
    fn advance(&mut self) {
        if let Some((_, current)) = &mut self.loaded {
            *current += 1;
        }
    }

    fn save(&self, conn: &Connection) -> rusqlite::Result<()> {
        if let Some((start, current)) = self.loaded
            && current != start
        {
            conn.prepare_cached("UPDATE counters SET value = ?1 WHERE name = 'completed_seq'")?
                .execute([current])?;
        }
        Ok(())
    }
}

/// Applies one write (inside the batch's transaction, in its own savepoint).
fn apply(conn: &Connection, request: &Request, seq: &mut SeqCounter) -> Result<Done, JournalError> {
    let at = request.at;
    match &request.op {
        Op::Record {
            id,
            action_json,
            source,
            lease_token,
        } => record(conn, id, action_json, *source, lease_token.as_deref(), at),
        Op::Complete {
            id,
            status,
            result_json,
            result: _,
            unrecorded,
            attempts,
        } => {
            let done = complete(conn, seq, id, *status, result_json, unrecorded.as_ref(), at)?;
            for attempt in attempts {
                insert_attempt(conn, attempt)?;
            }
            Ok(done)
        }
        Op::Attempt(e) => insert_attempt(conn, e),
        Op::MarkReported(ids) => mark_reported(conn, ids, at),
        Op::Requeue(id) => {
            conn.prepare_cached(
                "UPDATE actions SET reported_at = NULL WHERE id = ?1 AND result IS NOT NULL",
            )?
            .execute([id])?;
            Ok(Done::Unit)
        }
        Op::Prune { cutoff } => prune(conn, *cutoff),
        Op::Probe => {
            conn.prepare_cached(
                "INSERT INTO counters (name, value) VALUES ('write_probe', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?
            .execute([at])?;
            Ok(Done::Unit)
        }
    }
}

/// A new action, or the state of a known one (a redelivered lease brings a
/// new token; a result stored by `complete_unrecorded` gains its action).
fn record(
    conn: &Connection,
    id: &str,
    action_json: &str,
    source: Source,
    lease_token: Option<&str>,
    at: i64,
) -> Result<Done, JournalError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO actions (id, action, source, lease_token, status, recorded_at)
             VALUES (?1, ?2, ?3, ?4, 'queued', ?5) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![id, action_json, source.as_str(), lease_token, at])?;
    if inserted == 1 {
        return Ok(Done::Recorded(Box::new(Recorded::New)));
    }
    conn.prepare_cached(
        "UPDATE actions SET lease_token = coalesce(?2, lease_token), action = coalesce(action, ?3)
         WHERE id = ?1 AND (?2 IS NOT NULL OR action IS NULL)",
    )?
    .execute(params![id, lease_token, action_json])?;
    let state = load_state(conn, id)?
        .ok_or_else(|| JournalError::corrupt(id, "the row vanished between insert and read"))?;
    Ok(Done::Recorded(Box::new(Recorded::Known(state))))
}

/// Stores the first result of an action (a later one is ignored); with
/// `unrecorded`, an action never recorded gets a row holding only its result.
///
/// The row is read, then updated by its id, in two statements and not one
/// `UPDATE .. RETURNING`: SQLite runs RETURNING as a trigger, and a
/// statement with a trigger that may abort on a constraint gets a statement
/// journal, a copy of every page it changes (the row's and its indexes').
/// One profile at the ceiling put it at 9% of the daemon's CPU, another at
/// 0.5%; either way it buys nothing here. A single-row
/// UPDATE by a unique key checks its constraints before it writes, so it
/// needs none. The writer is the only one writing, inside the batch's
/// transaction: nothing changes the row between the two.
fn complete(
    conn: &Connection,
    seq: &mut SeqCounter,
    id: &str,
    status: Progress,
    result_json: &str,
    unrecorded: Option<&(Source, Option<String>)>,
    at: i64,
) -> Result<Done, JournalError> {
    let next = seq.peek(conn)?;
    let row = conn
        .prepare_cached(
            "SELECT source, lease_token, result IS NOT NULL FROM actions WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })
        .optional()?;
    let (source, lease_token) = match (row, unrecorded) {
        // Completed before: the first result stands.
        (Some((_, _, true)), _) => return Ok(Done::Unit),
        (Some((source, lease_token, false)), _) => {
            let source = read::parse_source(id, &source)?;
            conn.prepare_cached(
                "UPDATE actions SET status = ?2, result = ?3, completed_at = ?4, completed_seq = ?5
                 WHERE id = ?1",
            )?
            .execute(params![id, status.as_str(), result_json, at, next])?;
            (source, lease_token)
        }
        (None, None) => return Err(JournalError::NotRecorded { id: id.to_owned() }),
        (None, Some((source, lease_token))) => {
            insert_unrecorded(
                conn,
                id,
                *source,
                lease_token.as_deref(),
                status,
                at,
                next,
                result_json,
            )?;
            (*source, lease_token.clone())
        }
    };
    seq.advance();
    Ok(Done::Completed {
        lease_token,
        source,
        seq: next,
    })
}

/// The row of a result whose action was never recorded.
#[expect(clippy::too_many_arguments, reason = "the row's columns")]
fn insert_unrecorded(
    conn: &Connection,
    id: &str,
    source: Source,
    lease_token: Option<&str>,
    status: Progress,
    at: i64,
    next: i64,
    result_json: &str,
) -> Result<(), JournalError> {
    conn.prepare_cached(
        "INSERT INTO actions (id, action, source, lease_token, status, recorded_at,
                              completed_at, completed_seq, result)
         VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        source.as_str(),
        lease_token,
        status.as_str(),
        at,
        next,
        result_json
    ])?;
    Ok(())
}

fn insert_attempt(conn: &Connection, e: &AuditEntry) -> Result<Done, JournalError> {
    conn.prepare_cached(
        "INSERT INTO audit (at, action_id, integration, event_type, username, function_url,
                            http_status, latency_ms, outcome, attempt, instance_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        to_ms(e.at),
        e.action_id,
        e.integration,
        e.event_type,
        e.username,
        e.function_url,
        e.http_status,
        i64::try_from(e.latency_ms).unwrap_or(i64::MAX),
        e.outcome,
        e.attempt,
        e.instance_id,
    ])?;
    Ok(Done::Unit)
}

fn mark_reported(conn: &Connection, ids: &[String], at: i64) -> Result<Done, JournalError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE actions SET reported_at = ?2
         WHERE id = ?1 AND reported_at IS NULL AND result IS NOT NULL",
    )?;
    for id in ids {
        stmt.execute(params![id, at])?;
    }
    Ok(Done::Unit)
}

/// Drops audit entries, and reported actions, older than `cutoff`.
fn prune(conn: &Connection, cutoff: i64) -> Result<Done, JournalError> {
    let audit = conn
        .prepare_cached("DELETE FROM audit WHERE at < ?1")?
        .execute([cutoff])?;
    let actions = conn
        .prepare_cached("DELETE FROM actions WHERE reported_at IS NOT NULL AND completed_at < ?1")?
        .execute([cutoff])?;
    Ok(Done::Count((audit + actions) as u64))
}

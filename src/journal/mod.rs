//! The durable journal: one SQLite file (WAL, `synchronous=FULL`) that records
//! every action before it is acknowledged or invoked, keeps each result in an
//! outbox until the control plane accepts it, answers repeated action ids from
//! what it stored, lists what a crash left unfinished, and keeps an audit
//! trail of every attempt.
//!
//! Writes go through one writer thread that commits everything queued in one
//! transaction (group commit: one fsync for many writes); a caller's future
//! resolves only once its write is durable. (Marks of results reported, and
//! prunes, commit without an fsync of their own: a power cut may lose them,
//! never a crash of the process, and the next fsync covers them; a lost mark
//! means a second report, which the control plane accepts.) An action costs
//! two writes: its record (before it is acknowledged or invoked) and its
//! result with the audit entries of its attempts (before the result is
//! reported). Reads use a separate read-only connection on the blocking pool.
//! Dropping a call's future after it was sent does not cancel the write.
//!
//! ```no_run
//! # use grantbridge::action::{Action, ActionResult};
//! # use grantbridge::clock::Clock;
//! # use grantbridge::journal::*;
//! # async fn flow(action: Action, result: ActionResult) -> Result<(), JournalError> {
//! let journal = Journal::open(JournalOptions::new("/var/lib/grantbridge/journal.db"), Clock::system())?;
//! // On restart: resume what a crash interrupted (same Idempotency-Key: the id).
//! for u in journal.unfinished().await? { /* run u.action again */ }
//! match journal.record(&action, Source::Poll, Some("lease-token")).await? {
//!     Recorded::Known(state) => { /* already seen: answer from state, do not run */ }
//!     Recorded::New => {
//!         // ... call the function, keeping an AuditEntry per attempt ...
//!         // The result and its attempts: one write, durable before it is reported.
//!         journal.complete_with_attempts(&result, Vec::new()).await?;
//!     }
//! }
//! // The reporter: send the outbox, then take out what the control plane accepted.
//! let batch = journal.outbox(100).await?;
//! let accepted: Vec<String> = batch.iter().map(|i| i.result.action_id.clone()).collect();
//! journal.mark_reported(&accepted).await?;
//! journal.close().await;
//! # Ok(()) }
//! ```
//!
//! It must not decide anything (what to run, retry or report is the engine's
//! job), call the network, or read the clock other than through [`Clock`].

mod audit;
mod error;
mod health;
mod mirror;
mod read;
mod schema;
mod write;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::action::{Action, ActionResult};
use crate::clock::Clock;

pub use audit::{AuditEntry, AuditQuery, DEFAULT_AUDIT_LIMIT, render_audit};
pub use error::JournalError;
pub use health::WriteFailure;
use write::{Done, Msg, Op, Request};

/// How long a statement waits for a lock another process holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many items [`Journal::outbox`] returns when asked for 0.
pub const DEFAULT_OUTBOX_LIMIT: usize = 1000;

/// Where the journal lives and how it behaves.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The SQLite file. Created (0600, parent directory 0700) when missing.
    pub path: PathBuf,
    /// [`Journal::prune`] removes audit rows and reported actions older than
    /// this. Default 30 days.
    pub retention: Duration,
    /// Most writes committed in one transaction. Default 1024.
    pub max_batch: usize,
}

impl JournalOptions {
    /// Options for a journal at `path`, with the default retention and batch size.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            retention: Duration::from_secs(30 * 24 * 3600),
            max_batch: 1024,
        }
    }
}

/// Where an action came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Leased from the control plane.
    Poll,
    /// Posted to the connector's listener.
    Push,
}

/// The outbox at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSummary {
    pub depth: u64,
    /// When the oldest waiting result was stored (`None`: the outbox is empty).
    pub oldest: Option<SystemTime>,
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Progress {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Push => "push",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "poll" => Some(Self::Poll),
            "push" => Some(Self::Push),
            _ => None,
        }
    }
}

impl Progress {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// What the journal knows about an action.
#[derive(Debug, Clone)]
pub struct ActionState {
    pub status: Progress,
    /// Set once the action has completed.
    pub result: Option<ActionResult>,
    pub source: Source,
    /// The latest lease token seen for it (poll mode).
    pub lease_token: Option<String>,
}

/// The answer to [`Journal::record`].
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "the API the daemon is written against; returned once per record, never stored in bulk"
)]
pub enum Recorded {
    /// First time this id was seen: now durably queued.
    New,
    /// The id was already recorded: here is its state (with the new lease
    /// token, when one was given). Do not run it again.
    Known(ActionState),
}

/// A result waiting to be reported to the control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub result: ActionResult,
    pub lease_token: Option<String>,
    pub source: Source,
    /// Completion order; strictly increasing, never reused.
    pub completed_seq: i64,
}

/// An action recorded without a result: to be resumed after a restart, with
/// the same Idempotency-Key (its id).
#[derive(Debug, Clone)]
pub struct Unfinished {
    pub action: Action,
    pub source: Source,
    pub lease_token: Option<String>,
    /// It had been marked running (by an earlier version, which did), so
    /// the function may already have been called. Any unfinished action may
    /// have been: this one only says so for sure.
    pub was_running: bool,
}

/// Counters that show group commit at work: `writes / (transactions +
/// unsynced_transactions)` is the mean batch size, `commit_time /
/// transactions` the mean durable commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Durable transactions committed: each one fsync of the WAL.
    pub transactions: u64,
    /// Transactions committed without an fsync: those that only marked
    /// results reported or pruned old rows. The next durable commit's fsync
    /// makes them durable too; a power cut before it loses at most the
    /// marks (the results are reported again, which the control plane
    /// accepts) and the pruning (done again at the next round).
    pub unsynced_transactions: u64,
    /// Write calls answered from committed transactions (a call refused on
    /// its own, such as completing an unrecorded id, counts too).
    pub writes: u64,
    /// Time spent applying and committing the durable transactions (fsync
    /// included): what writers waited for, once per batch.
    pub commit_time: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    unsynced_transactions: AtomicU64,
    writes: AtomicU64,
    commit_nanos: AtomicU64,
}

/// The durable journal. Cheap to clone; every clone shares one writer thread
/// and one read-only connection (reads take turns on it, on tokio's blocking
/// pool; they never wait for the writer).
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    retention: Duration,
    clock: Clock,
    sender: mpsc::Sender<Msg>,
    reader: Mutex<Connection>,
    counters: Arc<Counters>,
    health: Arc<health::WriteHealth>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The outbox in memory, kept by the writer.
    mirror: Arc<mirror::Mirror>,
    /// Held (locked) while the journal is open: one daemon per journal.
    /// Released by `close` (or when the last clone goes).
    lock: Mutex<Option<std::fs::File>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.inner.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (creating when missing) the journal at `opts.path` and starts its
    /// writer thread. Does not need a tokio runtime; the async methods do.
    pub fn open(opts: JournalOptions, clock: Clock) -> Result<Journal, JournalError> {
        Self::open_with(opts, clock, BUSY_TIMEOUT)
    }

    pub(crate) fn open_with(
        opts: JournalOptions,
        clock: Clock,
        busy_timeout: Duration,
    ) -> Result<Journal, JournalError> {
        let mirror = mirror::Mirror::new(mirror::MAX_ITEMS, mirror::MAX_BYTES);
        Self::open_with_mirror(opts, clock, busy_timeout, mirror)
    }

    pub(crate) fn open_with_mirror(
        opts: JournalOptions,
        clock: Clock,
        busy_timeout: Duration,
        mirror: mirror::Mirror,
    ) -> Result<Journal, JournalError> {
        let mirror = Arc::new(mirror);
        let path = opts.path;
        // Locked before anything touches the file.
        let lock = schema::lock(&path)?;
        let conn = schema::open_writer(&path, busy_timeout)?;
        let reader = schema::open_reader(&path, busy_timeout)?;
        let max_batch = opts.max_batch.max(1);
        let (sender, receiver) = mpsc::channel(max_batch.saturating_mul(2));
        let counters = Arc::new(Counters::default());
        let health = Arc::new(health::WriteHealth::default());
        let writer = write::Writer::new(
            conn,
            receiver,
            max_batch,
            counters.clone(),
            health.clone(),
            path.clone(),
            mirror.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| {
                JournalError::open(
                    &path,
                    "The writer thread could not start: the host is out of threads or memory",
                    e,
                )
            })?;
        let journal = Journal {
            inner: Arc::new(Inner {
                path,
                retention: opts.retention,
                clock,
                sender,
                reader: Mutex::new(reader),
                counters,
                health,
                writer: Mutex::new(Some(handle)),
                mirror,
                lock: Mutex::new(Some(lock)),
            }),
        };
        // What the last run left in the outbox.
        journal.load_mirror();
        Ok(journal)
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the journal can write: `Err` from its first failed write on a
    /// disk error (full, failing, read-only) until a write commits again.
    pub fn writable(&self) -> Result<(), WriteFailure> {
        self.inner.health.current().map_or(Ok(()), Err)
    }

    /// Writes that failed on a disk error since the journal was opened.
    pub fn failed_writes(&self) -> u64 {
        self.inner.health.failed_total()
    }

    /// A small real write: whether the disk takes writes again (it clears
    /// [`Journal::writable`] when it commits).
    pub async fn probe(&self) -> Result<(), JournalError> {
        self.write(Op::Probe).await.map(drop)
    }

    /// Records an action before it is acknowledged (push) or invoked (poll).
    /// `New`: durably queued. `Known`: the id was seen before; nothing changes
    /// except the stored lease token, replaced when `lease_token` is given (a
    /// redelivered lease carries a new token, needed to report or extend).
    pub async fn record(
        &self,
        action: &Action,
        source: Source,
        lease_token: Option<&str>,
    ) -> Result<Recorded, JournalError> {
        let action_json = serde_json::to_string(action)
            .map_err(|e| JournalError::corrupt(&action.id, format!("action to JSON: {e}")))?;
        let op = Op::Record {
            id: action.id.clone(),
            action_json,
            source,
            lease_token: lease_token.map(str::to_owned),
        };
        match self.write(op).await? {
            Done::Recorded(r) => Ok(*r),
            other => unreachable!("record answered {other:?}"),
        }
    }

    /// Stores a result (status from its outcome) and puts it in the outbox
    /// with the next completion number. An action that already has a result
    /// keeps its first one and this returns Ok.
    pub async fn complete(&self, result: &ActionResult) -> Result<(), JournalError> {
        self.complete_with_attempts(result, Vec::new()).await
    }

    /// [`Journal::complete`] and the audit entries of the action's attempts,
    /// in one write: both are durable, or neither is. The entries are
    /// appended even when the action had a result already (each attempt is
    /// a fact), the result is not.
    pub async fn complete_with_attempts(
        &self,
        result: &ActionResult,
        attempts: Vec<AuditEntry>,
    ) -> Result<(), JournalError> {
        self.write(Op::complete(result, None, attempts)?)
            .await
            .map(drop)
    }

    /// Like [`Journal::complete`] for a result whose action was never recorded
    /// because it could not be parsed (an `invalid_action` failure): stores the
    /// result without an action. For a recorded id it is `complete`.
    pub async fn complete_unrecorded(
        &self,
        result: &ActionResult,
        source: Source,
        lease_token: Option<&str>,
    ) -> Result<(), JournalError> {
        let op = Op::complete(
            result,
            Some((source, lease_token.map(str::to_owned))),
            Vec::new(),
        )?;
        self.write(op).await.map(drop)
    }

    /// Appends one attempt to the audit trail.
    pub async fn record_attempt(&self, entry: AuditEntry) -> Result<(), JournalError> {
        self.write(Op::Attempt(Box::new(entry))).await.map(drop)
    }

    /// Results not yet accepted by the control plane, in completion order, at
    /// most `limit` (0 means [`DEFAULT_OUTBOX_LIMIT`]). From memory when the
    /// outbox is small (the writer keeps it there as it commits), else from
    /// the file.
    pub async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, JournalError> {
        let limit = if limit == 0 {
            DEFAULT_OUTBOX_LIMIT
        } else {
            limit
        };
        if let Some(items) = self.inner.mirror.first(limit) {
            return Ok(items);
        }
        let items = self.outbox_from_file(limit).await?;
        if items.len() < limit {
            // All of it fits in one read: keep it in memory from now on.
            self.load_mirror();
        }
        Ok(items)
    }

    /// [`Journal::outbox`], always read from the file.
    pub(crate) async fn outbox_from_file(
        &self,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, JournalError> {
        self.read(move |c| read::outbox(c, limit)).await
    }

    /// Whether [`Journal::outbox`] reads from memory now.
    #[cfg(test)]
    pub(crate) fn outbox_in_memory(&self) -> bool {
        self.inner.mirror.is_known()
    }

    /// Asks the writer to load the outbox into memory, once.
    fn load_mirror(&self) {
        if self.inner.mirror.wants_load() && self.inner.sender.try_send(Msg::LoadMirror).is_err() {
            self.inner.mirror.load_not_sent();
        }
    }

    /// Takes accepted results out of the outbox. Unknown ids, ids without a
    /// result and ids already reported are ignored. Committed without an
    /// fsync of its own when nothing else in its batch needs one: a power
    /// cut before the next durable commit can put the results back in the
    /// outbox, to be reported a second time (which the control plane
    /// accepts); a crash of the process cannot.
    pub async fn mark_reported(&self, ids: &[String]) -> Result<(), JournalError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(Op::MarkReported(ids.to_vec())).await.map(drop)
    }

    /// Puts an action's result back in the outbox, at its completion position:
    /// the control plane handed the action out again, so it does not have it.
    /// Ids without a result are ignored.
    pub async fn requeue_result(&self, id: &str) -> Result<(), JournalError> {
        self.write(Op::Requeue(id.to_owned())).await.map(drop)
    }

    /// How many results wait in the outbox.
    pub async fn outbox_depth(&self) -> Result<u64, JournalError> {
        self.read(read::outbox_depth).await
    }

    /// How many results wait in the outbox, and when the oldest was stored.
    pub async fn outbox_summary(&self) -> Result<OutboxSummary, JournalError> {
        self.read(read::outbox_summary).await
    }

    /// Actions recorded but without a result (queued or running), oldest
    /// recorded first: what to resume after a restart.
    pub async fn unfinished(&self) -> Result<Vec<Unfinished>, JournalError> {
        self.read(read::unfinished).await
    }

    /// What the journal knows about an action, `None` when it never saw it
    /// (or pruned it).
    pub async fn state(&self, id: &str) -> Result<Option<ActionState>, JournalError> {
        let id = id.to_owned();
        self.read(move |c| read::load_state(c, &id)).await
    }

    /// Audit rows matching `q`, newest first.
    pub async fn audit(&self, q: AuditQuery) -> Result<Vec<AuditEntry>, JournalError> {
        self.read(move |c| read::audit(c, &q)).await
    }

    /// The audit trail of the journal at `path`, read through a read-only
    /// connection that takes no lock and writes nothing (so it works while a
    /// daemon has the journal open). Blocking.
    pub fn read_audit(path: &Path, q: &AuditQuery) -> Result<Vec<AuditEntry>, JournalError> {
        if !path.is_file() {
            return Err(JournalError::open(
                path,
                "There is no journal there: check `[journal] path` (the daemon creates it on its first start)",
                "no such file",
            ));
        }
        let conn = schema::open_reader(path, BUSY_TIMEOUT)?;
        read::audit(&conn, q)
    }

    /// Removes audit rows and reported actions older than the retention.
    /// Never removes an unreported result or an unfinished action. Returns
    /// how many rows were removed.
    pub async fn prune(&self) -> Result<u64, JournalError> {
        let cutoff = self
            .inner
            .clock
            .now()
            .checked_sub(self.inner.retention)
            .unwrap_or(UNIX_EPOCH);
        match self
            .write(Op::Prune {
                cutoff: to_ms(cutoff),
            })
            .await?
        {
            Done::Count(n) => Ok(n),
            other => unreachable!("prune answered {other:?}"),
        }
    }

    /// Transactions and writes committed so far by this journal.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            transactions: self.inner.counters.transactions.load(Ordering::Relaxed),
            unsynced_transactions: self
                .inner
                .counters
                .unsynced_transactions
                .load(Ordering::Relaxed),
            writes: self.inner.counters.writes.load(Ordering::Relaxed),
            commit_time: Duration::from_nanos(
                self.inner.counters.commit_nanos.load(Ordering::Relaxed),
            ),
        }
    }

    /// Commits everything queued before this call, checkpoints the WAL into
    /// the database file and stops the writer. Writes sent afterwards, through
    /// any clone, fail with [`JournalError::Closed`].
    pub async fn close(self) {
        let (reply, done) = oneshot::channel();
        if self.inner.sender.send(Msg::Close(reply)).await.is_ok() {
            let _ = done.await;
        }
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // The writer has replied and is returning: this join is short.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        // Nothing more is written through any clone: another process may take
        // it, so the outbox is the file's again.
        self.inner.mirror.forget();
        drop(
            self.inner
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }

    async fn write(&self, op: Op) -> Result<Done, JournalError> {
        let span = tracing::debug_span!("journal write", op = op.name());
        self.write_unspanned(op).instrument(span).await
    }

    async fn write_unspanned(&self, op: Op) -> Result<Done, JournalError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            op,
            at: to_ms(self.inner.clock.now()),
            reply,
        };
        self.inner
            .sender
            .send(Msg::Op(request))
            .await
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            let conn = inner.reader.lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn)
        });
        match task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(JournalError::Closed),
        }
    }
}

/// Unix milliseconds, as the journal stores times (saturating; negative
/// before 1970).
fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

fn from_ms(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

//! Opening the journal file: the directory and the file (mode 0600) created when
//! missing, the durability pragmas (WAL, `synchronous=FULL`), the schema and
//! its version, and a read-only connection beside the writer's.
//!
//! It must not read or write journal rows, and every failure it returns is a
//! [`JournalError::Open`] naming the path.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::JournalError;

/// `PRAGMA application_id`: marks the file as a grantbridge journal ("gbj1").
pub(super) const APPLICATION_ID: i32 = 0x6762_6a31;

/// The schema this code writes; `PRAGMA user_version` holds the file's.
const SCHEMA_VERSION: i32 = 2;

/// The tables of version 2. Times are Unix milliseconds (UTC).
///
/// `actions.seq` orders recording. It is a plain rowid (the largest plus
/// one), not AUTOINCREMENT: that would write `sqlite_sequence` in every
/// commit that inserts a row, a page more per commit, and order needs no
/// more. Only reported rows are pruned, so a new row always comes after
/// every unfinished one. `completed_seq` orders completion and only grows:
/// the `counters` row survives pruning. It is unique because only the writer
/// hands it out, from that row; version 1's unique index on it (which also
/// indexed every NULL) cost another page per commit. `audit.seq` only
/// breaks ties between entries of the same millisecond.
const TABLES: &str = "
CREATE TABLE actions (
    seq           INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
    action        TEXT,     -- Action JSON; NULL for a result whose action could not be parsed
    source        TEXT    NOT NULL CHECK (source IN ('poll', 'push')),
    lease_token   TEXT,
    status        TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    recorded_at   INTEGER NOT NULL,
    running_at    INTEGER,
    completed_at  INTEGER,
    completed_seq INTEGER,
    result        TEXT,     -- ActionResult JSON
    reported_at   INTEGER,
    CHECK ((result IS NULL) = (completed_seq IS NULL)),
    CHECK (reported_at IS NULL OR result IS NOT NULL)
);
CREATE TABLE audit (
    seq          INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    action_id    TEXT    NOT NULL,
    integration  TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    username     TEXT,
    function_url TEXT,
    http_status  INTEGER,
    latency_ms   INTEGER NOT NULL,
    outcome      TEXT    NOT NULL,
    attempt      INTEGER NOT NULL,
    instance_id  TEXT    NOT NULL
);
";

/// The indexes of both versions.
const INDEXES: &str = "
CREATE INDEX actions_outbox ON actions (completed_seq)
    WHERE completed_seq IS NOT NULL AND reported_at IS NULL;
CREATE INDEX actions_unfinished ON actions (seq) WHERE status IN ('queued', 'running');
CREATE INDEX actions_reported ON actions (completed_at) WHERE reported_at IS NOT NULL;
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_integration_at ON audit (integration, at);
";

const COUNTERS: &str = "
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('completed_seq', 0);
";

/// Version 1 to 2: the same columns and rows, in tables without
/// AUTOINCREMENT and without the unique index on `completed_seq`. SQLite
/// cannot drop either from a table, so both tables are copied: the old ones
/// are renamed, the new ones created and filled, the old ones dropped (their
/// `sqlite_sequence` rows go with them). `seq` values are copied, so the
/// order of recording and of the audit trail is kept.
const V1_TO_V2: &str = "
DROP INDEX actions_outbox;
DROP INDEX actions_unfinished;
DROP INDEX actions_reported;
DROP INDEX audit_at;
DROP INDEX audit_integration_at;
ALTER TABLE actions RENAME TO actions_v1;
ALTER TABLE audit RENAME TO audit_v1;
";

const V1_TO_V2_COPY: &str = "
INSERT INTO actions (seq, id, action, source, lease_token, status, recorded_at, running_at,
                     completed_at, completed_seq, result, reported_at)
    SELECT seq, id, action, source, lease_token, status, recorded_at, running_at,
           completed_at, completed_seq, result, reported_at FROM actions_v1;
INSERT INTO audit (seq, at, action_id, integration, event_type, username, function_url,
                   http_status, latency_ms, outcome, attempt, instance_id)
    SELECT seq, at, action_id, integration, event_type, username, function_url,
           http_status, latency_ms, outcome, attempt, instance_id FROM audit_v1;
DROP TABLE actions_v1;
DROP TABLE audit_v1;
";

/// What version 1 created, for the upgrade tests: a journal it wrote is
/// built from this.
#[cfg(test)]
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE actions (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    action        TEXT,     -- Action JSON; NULL for a result whose action could not be parsed
    source        TEXT    NOT NULL CHECK (source IN ('poll', 'push')),
    lease_token   TEXT,
    status        TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    recorded_at   INTEGER NOT NULL,
    running_at    INTEGER,
    completed_at  INTEGER,
    completed_seq INTEGER UNIQUE,
    result        TEXT,     -- ActionResult JSON
    reported_at   INTEGER,
    CHECK ((result IS NULL) = (completed_seq IS NULL)),
    CHECK (reported_at IS NULL OR result IS NOT NULL)
);
CREATE INDEX actions_outbox ON actions (completed_seq)
    WHERE completed_seq IS NOT NULL AND reported_at IS NULL;
CREATE INDEX actions_unfinished ON actions (seq) WHERE status IN ('queued', 'running');
CREATE INDEX actions_reported ON actions (completed_at) WHERE reported_at IS NOT NULL;

CREATE TABLE audit (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    action_id    TEXT    NOT NULL,
    integration  TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    username     TEXT,
    function_url TEXT,
    http_status  INTEGER,
    latency_ms   INTEGER NOT NULL,
    outcome      TEXT    NOT NULL,
    attempt      INTEGER NOT NULL,
    instance_id  TEXT    NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_integration_at ON audit (integration, at);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('completed_seq', 0);
";

/// Opens (creating when missing) the journal for writing, with the durability
/// pragmas set and the schema in place.
/// Takes the journal's lock: `PATH.lock`, locked exclusively (an OS file
/// lock, released when the process exits, however it exits) for as long as
/// the returned file is open. A second daemon on the same journal would
/// invoke the same actions twice: it is refused, naming the holder's pid.
pub(crate) fn lock(path: &Path) -> Result<std::fs::File, JournalError> {
    use std::io::{Read, Seek, Write};
    prepare_file(path)?;
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&lock_path).map_err(|e| {
        JournalError::open(
            path,
            "Its lock file (the journal's path plus `.lock`) cannot be created: make the journal's directory writable by grantbridge's user",
            e,
        )
    })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.chars().all(|c| c.is_ascii_digit()) && !holder.is_empty() {
                format!("another grantbridge process (pid {holder})")
            } else {
                "another grantbridge process".to_owned()
            };
            return Err(JournalError::open(
                path,
                "Two daemons must never share a journal: stop the other one, or give this one its own `[journal] path`",
                format!("{who} has it open"),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(JournalError::open(
                path,
                "Its lock file cannot be locked: put the journal on a local file system",
                e,
            ));
        }
    }
    // Who holds it, for the message a second daemon gets.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

pub(crate) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, JournalError> {
    prepare_file(path)?;
    let fail = |e| JournalError::open_sqlite(path, e);
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(busy_timeout).map_err(fail)?;
    if conn.is_readonly("main").map_err(fail)? {
        return Err(JournalError::open(
            path,
            "The file is read-only to grantbridge: make it writable by the user grantbridge runs as",
            "opened read-only",
        ));
    }
    // The first statement reads the header: a file that is not a database fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(JournalError::open(
            path,
            "The file system must support SQLite's write-ahead log (shared memory and locks): put the journal on a local disk",
            format!("could not switch to WAL mode (still {mode})"),
        ));
    }
    // FULL: every commit fsyncs the WAL, so an acknowledged write survives
    // power loss, not just a crash of the process.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(fail)?;
    // After a checkpoint, shrink a WAL that a burst grew back to this size.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(fail)?;
    conn.set_prepared_statement_cache_capacity(32);
    cache_size(&conn).map_err(fail)?;
    migrate(path, &mut conn)?;
    Ok(conn)
}

/// Each connection's page cache: 512 KiB, not SQLite's 2 MB. The hot pages
/// (the outbox's index, the latest rows) fit many times over; anything else
/// is read from the OS's cache of the file.
fn cache_size(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -512)
}

/// A read-only connection to a journal that [`open_writer`] has set up.
pub(crate) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, JournalError> {
    let fail = |e| JournalError::open_sqlite(path, e);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(busy_timeout).map_err(fail)?;
    conn.set_prepared_statement_cache_capacity(32);
    cache_size(&conn).map_err(fail)?;
    Ok(conn)
}

/// Creates the parent directory (0700) and the file (0600) when missing, so the
/// journal, which holds action params and results, is never readable by others.
/// An existing file keeps its mode; SQLite gives the `-wal` and `-shm` files
/// the database file's mode.
fn prepare_file(path: &Path) -> Result<(), JournalError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| {
            JournalError::open(
                path,
                "Its directory could not be created: create it, writable by the user grantbridge runs as, or configure another journal path",
                e,
            )
        })?;
    }
    if path.is_dir() {
        return Err(JournalError::open(
            path,
            "The journal path must name a file, not a directory: add a file name such as journal.db",
            "is a directory",
        ));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(JournalError::open(
            path,
            "The file could not be created: check that its directory is writable by the user grantbridge runs as",
            e,
        )),
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], refusing files that belong to
/// something else or to a newer grantbridge. Takes the write lock, so a
/// journal another process is writing fails here, naming the path.
fn migrate(path: &Path, conn: &mut Connection) -> Result<(), JournalError> {
    let fail = |e| JournalError::open_sqlite(path, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let app_id: i32 = tx
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(fail)?;
    let version: i32 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(fail)?;
    let tables: i64 = tx
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(fail)?;
    if app_id != APPLICATION_ID && (app_id != 0 || tables > 0) {
        return Err(JournalError::open(
            path,
            "It is an SQLite database of some other program: configure another journal path",
            format!("not a grantbridge journal (application_id {app_id:#x}, {tables} tables)"),
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(JournalError::open(
            path,
            "It was written by a newer grantbridge: upgrade grantbridge, or move the file aside",
            format!(
                "journal schema version {version} is newer than the {SCHEMA_VERSION} this grantbridge knows"
            ),
        ));
    }
    match version {
        ..=0 => {
            for part in [TABLES, INDEXES, COUNTERS] {
                tx.execute_batch(part).map_err(fail)?;
            }
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(fail)?;
        }
        1 => {
            for part in [V1_TO_V2, TABLES, V1_TO_V2_COPY, INDEXES] {
                tx.execute_batch(part).map_err(fail)?;
            }
        }
        _ => return tx.commit().map_err(fail),
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(fail)?;
    tx.commit().map_err(fail)?;
    if version == 1 {
        tracing::info!(
            journal = %path.display(),
            from = version,
            to = SCHEMA_VERSION,
            "journal schema upgraded"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSY: Duration = Duration::from_millis(50);

    #[test]
    fn creates_the_directory_and_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/journal.db");
        let conn = open_writer(&path, BUSY).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&dir.path().join("a/b/journal.db-wal")), 0o600);
            assert_eq!(mode(&dir.path().join("a")), 0o700);
        }
        // Reopening an existing journal keeps its schema.
        drop(conn);
        let conn = open_writer(&path, BUSY).unwrap();
        let v: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        open_reader(&path, BUSY).unwrap();
    }

    #[test]
    fn refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let err = open_writer(&path, BUSY).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, JournalError::Open { .. }));
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not a database"), "{msg}");
        assert!(msg.contains("move it aside"), "{msg}");
        // Left untouched.
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 8192]);
    }

    #[test]
    fn refuses_another_programs_database_and_newer_versions() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let msg = open_writer(&other, BUSY).unwrap_err().to_string();
        assert!(msg.contains("not a grantbridge journal"), "{msg}");

        let newer = dir.path().join("newer.db");
        drop(open_writer(&newer, BUSY).unwrap());
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let msg = open_writer(&newer, BUSY).unwrap_err().to_string();
        assert!(msg.contains("newer grantbridge"), "{msg}");
    }

    #[test]
    fn a_path_that_cannot_be_created_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("sub/journal.db");
        let err = open_writer(&path, BUSY).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("directory could not be created"), "{msg}");

        let msg = open_writer(dir.path(), BUSY).unwrap_err().to_string();
        assert!(msg.contains("not a directory"), "{msg}");
    }

    #[test]
    fn a_journal_locked_by_another_writer_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        drop(open_writer(&path, BUSY).unwrap());
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO counters VALUES ('x', 1);")
            .unwrap();
        let err = open_writer(&path, BUSY).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("locked"), "{msg}");
        assert!(err.is_retryable());
        other.execute_batch("ROLLBACK").unwrap();
        open_writer(&path, BUSY).unwrap();
    }
}

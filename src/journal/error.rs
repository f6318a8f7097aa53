//! What can go wrong with the journal, classified (retryable or not) and each
//! saying what the operator should do next.
//!
//! It must not carry action params or result bodies (they may hold
//! credentials): only ids, paths and SQLite's own message.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::ErrorCode;

/// Why a journal call failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal file could not be opened or set up. Nothing was written.
    #[error("cannot open the journal {}: {source}. {hint}", path.display())]
    Open {
        path: PathBuf,
        /// What to do about it, in a sentence.
        hint: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// SQLite failed a read or a write. Shared (`Arc`) because one failed
    /// group commit fails every write in it.
    #[error("journal database error: {0}. {hint}", hint = sqlite_hint(.0))]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// The writer thread has stopped (the journal was closed, or the thread
    /// died); nothing more can be written through this handle.
    #[error(
        "the journal is closed (its writer thread stopped); nothing was written. Restart grantbridge"
    )]
    Closed,
    /// A stored row could not be decoded.
    #[error(
        "journal row for action {id} is unreadable: {reason}. The file was changed outside grantbridge or by an incompatible version; move it aside and restart"
    )]
    Corrupt { id: String, reason: String },
    /// `complete` named an action that was never recorded.
    #[error(
        "action {id} was never recorded in the journal: record it before marking it running or completing it (results of actions that could not be parsed go through complete_unrecorded)"
    )]
    NotRecorded { id: String },
}

impl JournalError {
    /// Worth trying again later: the database was busy, or the disk failed
    /// or filled up in a way that may pass. Permanent errors need an operator
    /// or a code fix.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Sqlite(e) => retryable_code(e.sqlite_error_code()),
            Self::Open { source, .. } => {
                source.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
                    matches!(
                        e.sqlite_error_code(),
                        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    )
                })
            }
            Self::Closed | Self::Corrupt { .. } | Self::NotRecorded { .. } => false,
        }
    }

    pub(crate) fn open(
        path: impl Into<PathBuf>,
        hint: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::Open {
            path: path.into(),
            hint,
            source: source.into(),
        }
    }

    /// An `Open` error for a SQLite failure, with the hint chosen from its code.
    pub(crate) fn open_sqlite(path: impl Into<PathBuf>, err: rusqlite::Error) -> Self {
        let hint = open_hint(&err);
        Self::open(path, hint, err)
    }

    pub(crate) fn corrupt(id: &str, reason: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            id: id.to_owned(),
            reason: reason.to_string(),
        }
    }
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(Arc::new(e))
    }
}

fn retryable_code(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::OutOfMemory
        )
    )
}

fn sqlite_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "Another process holds the journal locked; retry, and make sure only one grantbridge uses this journal file"
        }
        Some(ErrorCode::DiskFull) => "The disk is full: free space; the write can be retried",
        Some(ErrorCode::SystemIoFailure) => {
            "The disk failed an I/O: check the disk and the system log; the write can be retried"
        }
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
            "The journal file or its directory is no longer writable: fix its permissions"
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            "The journal is damaged: stop grantbridge and move the file aside"
        }
        _ => "This is a bug in grantbridge or an incompatible journal file: report it",
    }
}

fn open_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            "The file is not an SQLite database, so not a grantbridge journal: move it aside or configure another journal path"
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "It is locked by another process: stop the other grantbridge using this file, or give each instance its own journal path"
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            "Check that the file and its directory exist and are readable and writable by the user grantbridge runs as"
        }
        Some(ErrorCode::DatabaseCorrupt) => {
            "The journal is corrupt: move it aside (keep it for investigation) and restart with an empty journal"
        }
        Some(ErrorCode::DiskFull) => "The disk is full: free space and restart",
        _ => "Check the configured journal path and the file at it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn busy_and_io_are_retryable_but_misuse_is_not() {
        assert!(JournalError::from(sqlite(rusqlite::ffi::SQLITE_BUSY)).is_retryable());
        assert!(JournalError::from(sqlite(rusqlite::ffi::SQLITE_FULL)).is_retryable());
        assert!(!JournalError::from(sqlite(rusqlite::ffi::SQLITE_MISUSE)).is_retryable());
        assert!(!JournalError::Closed.is_retryable());
        assert!(JournalError::open_sqlite("/x", sqlite(rusqlite::ffi::SQLITE_BUSY)).is_retryable());
        assert!(
            !JournalError::open_sqlite("/x", sqlite(rusqlite::ffi::SQLITE_NOTADB)).is_retryable()
        );
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = JournalError::open_sqlite("/var/lib/gb/j.db", sqlite(rusqlite::ffi::SQLITE_NOTADB));
        let msg = e.to_string();
        assert!(msg.contains("/var/lib/gb/j.db"), "{msg}");
        assert!(msg.contains("not an SQLite database"), "{msg}");
        let msg = JournalError::from(sqlite(rusqlite::ffi::SQLITE_FULL)).to_string();
        assert!(msg.contains("disk is full"), "{msg}");
    }
}

//! Whether the journal can write now: a full or failing disk, seen by the
//! writer thread on every commit.
//!
//! While it cannot, the daemon takes no new work (no leases; pushes get 503),
//! `/readyz` says why, and the log gets one line when it starts, at most one
//! every [`REPEAT`] while it lasts (with counts), and one when it ends. The
//! writer notices the end itself: the next write that commits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::ErrorCode;

/// How often a continuing failure is logged again.
const REPEAT: Duration = Duration::from_secs(30);

/// The journal cannot write: since when, why, and how many writes failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    pub since: SystemTime,
    /// SQLite's error and what to do about it.
    pub error: String,
    /// Writes that failed since it started.
    pub failed_writes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    failing: Mutex<Option<Failing>>,
    /// When a failure was last logged, across episodes: a disk that flaps
    /// (takes a small write, fails the next batch) is one problem, logged
    /// at most every [`REPEAT`], not once per flap.
    last_logged: Mutex<Option<Instant>>,
    /// Writes that failed on a disk error, ever (the metric).
    failed_total: AtomicU64,
}

#[derive(Debug)]
struct Failing {
    started: Instant,
    since: SystemTime,
    error: String,
    failed_writes: u64,
    logged: Instant,
    logged_writes: u64,
}

/// Is `e` the disk's fault (full, failing, or gone read-only), rather than a
/// bad request or a bug?
pub(crate) fn is_disk_error(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::OutOfMemory
        )
    )
}

/// What to say about a disk error, in one line.
fn describe(e: &rusqlite::Error) -> String {
    let what = match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => "the file system has no space left (ENOSPC): free space",
        Some(ErrorCode::SystemIoFailure) => {
            "the disk failed an I/O (EIO): check the disk and the system log"
        }
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            "the file or its directory is no longer writable: check the mount and permissions"
        }
        Some(ErrorCode::OutOfMemory) => "out of memory",
        _ => "see the error",
    };
    format!("{e} ({what})")
}

impl WriteHealth {
    /// `writes` writes failed on `e`.
    pub(crate) fn failed(&self, path: &std::path::Path, e: &rusqlite::Error, writes: u64) {
        self.failed_total.fetch_add(writes, Ordering::Relaxed);
        let now = Instant::now();
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let mut last_logged = self.last_logged.lock().unwrap_or_else(|p| p.into_inner());
        match failing.as_mut() {
            None => {
                let error = describe(e);
                if last_logged.is_none_or(|at| now.duration_since(at) >= REPEAT) {
                    tracing::error!(journal = %path.display(), error = %error, writes,
                        "the journal cannot write: taking no new work until it can (leases paused, pushes answered 503); running actions keep their results in memory and store them when it can");
                    *last_logged = Some(now);
                }
                *failing = Some(Failing {
                    started: now,
                    since: SystemTime::now(),
                    error,
                    failed_writes: writes,
                    logged: now,
                    logged_writes: writes,
                });
            }
            Some(f) => {
                f.failed_writes += writes;
                f.error = describe(e);
                if now.duration_since(f.logged) >= REPEAT
                    && last_logged.is_none_or(|at| now.duration_since(at) >= REPEAT)
                {
                    *last_logged = Some(now);
                    tracing::warn!(journal = %path.display(), error = %f.error,
                        failed_writes = f.failed_writes, new_failures = f.failed_writes - f.logged_writes,
                        for_s = now.duration_since(f.started).as_secs(),
                        "the journal still cannot write");
                    f.logged = now;
                    f.logged_writes = f.failed_writes;
                }
            }
        }
    }

    /// A write committed.
    pub(crate) fn succeeded(&self, path: &std::path::Path) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = failing.take() {
            tracing::info!(journal = %path.display(), failed_writes = f.failed_writes,
                after_s = f.started.elapsed().as_secs(),
                "the journal writes again; taking work again");
        }
    }

    /// `Some` while the journal cannot write.
    pub(crate) fn current(&self) -> Option<WriteFailure> {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing.as_ref().map(|f| WriteFailure {
            since: f.since,
            error: f.error.clone(),
            failed_writes: f.failed_writes,
        })
    }

    pub(crate) fn failed_total(&self) -> u64 {
        self.failed_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None)
    }

    #[test]
    fn a_failure_is_remembered_until_a_write_commits() {
        let h = WriteHealth::default();
        let path = std::path::Path::new("/j.db");
        assert!(h.current().is_none());
        assert!(is_disk_error(&full()));
        h.failed(path, &full(), 3);
        h.failed(path, &full(), 2);
        let f = h.current().unwrap();
        assert_eq!(f.failed_writes, 5);
        assert!(f.error.contains("ENOSPC"), "{}", f.error);
        h.succeeded(path);
        assert!(h.current().is_none());
        assert_eq!(h.failed_total(), 5);
    }
}

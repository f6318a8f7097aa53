//! Tests of the journal through its public API, on real files in temporary
//! directories: idempotency, the outbox, crash recovery (a dropped journal and
//! a SIGKILLed child process), the audit trail, pruning and group commit.
//!
//! They must not sleep to synchronise: every wait is on an answer.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::action::{FunctionCall, ResultError, ResultOutcome};
use crate::contract::ErrorCode;

fn action(id: &str) -> Action {
    Action::from_value(&json!({
        "id": id, "integration": "orders-db", "event_type": "grant-access",
        "params": {"grant_id": "g-1", "username": "alice@example.com"},
        "not_after": "2026-11-22T10:00:00Z"
    }))
    .unwrap()
}

fn result(id: &str, ok: bool) -> ActionResult {
    ActionResult {
        action_id: id.into(),
        outcome: if ok {
            ResultOutcome::Succeeded
        } else {
            ResultOutcome::Failed
        },
        error: (!ok).then(|| ResultError {
            code: ErrorCode::FunctionUnavailable,
            message: "HTTP 503".into(),
            retryable: true,
        }),
        function: Some(FunctionCall {
            url: "https://f.example/grant".into(),
            status: Some(if ok { 200 } else { 503 }),
            body: Some(json!({"status": "ok"})),
            latency_ms: 41,
        }),
        attempts: 1,
        started_at: "2026-11-22T09:59:59Z".into(),
        finished_at: "2026-11-22T10:00:00Z".into(),
        instance_id: "gb-test/1".into(),
        connector_version: "0.1.0".into(),
        access_details: None,
    }
}

fn open(path: &Path) -> Journal {
    Journal::open(JournalOptions::new(path), Clock::system()).unwrap()
}

fn temp_journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(&dir.path().join("journal.db"));
    (dir, journal)
}

fn ids(outbox: &[OutboxItem]) -> Vec<&str> {
    outbox.iter().map(|o| o.result.action_id.as_str()).collect()
}

#[tokio::test]
async fn record_answers_new_then_known_with_the_stored_state() {
    let (_dir, j) = temp_journal();
    let a = action("act-1");
    assert!(matches!(
        j.record(&a, Source::Push, None).await.unwrap(),
        Recorded::New
    ));
    let Recorded::Known(state) = j.record(&a, Source::Push, None).await.unwrap() else {
        panic!("second record must be Known");
    };
    assert_eq!(state.status, Progress::Queued);
    assert_eq!(state.source, Source::Push);
    assert!(state.result.is_none());

    // Once completed, a repeated id is answered with the stored result.
    j.complete(&result("act-1", true)).await.unwrap();
    let Recorded::Known(state) = j.record(&a, Source::Push, None).await.unwrap() else {
        panic!("a completed action is Known");
    };
    assert_eq!(state.status, Progress::Succeeded);
    assert_eq!(state.result.unwrap(), result("act-1", true));
    assert!(j.state("nope").await.unwrap().is_none());
    // Progress serializes as the push API shows it.
    assert_eq!(serde_json::to_value(Progress::Running).unwrap(), "running");
}

#[tokio::test]
async fn a_redelivered_lease_replaces_the_stored_token() {
    let (_dir, j) = temp_journal();
    let a = action("act-1");
    j.record(&a, Source::Poll, Some("lease-1")).await.unwrap();
    let Recorded::Known(state) = j.record(&a, Source::Poll, Some("lease-2")).await.unwrap() else {
        panic!("redelivery is Known");
    };
    assert_eq!(state.lease_token.as_deref(), Some("lease-2"));
    // No token given: the stored one stays.
    j.record(&a, Source::Poll, None).await.unwrap();
    let state = j.state("act-1").await.unwrap().unwrap();
    assert_eq!(state.lease_token.as_deref(), Some("lease-2"));
    // The outbox reports with the latest token.
    j.complete(&result("act-1", true)).await.unwrap();
    j.record(&a, Source::Poll, Some("lease-3")).await.unwrap();
    let outbox = j.outbox(10).await.unwrap();
    assert_eq!(outbox[0].lease_token.as_deref(), Some("lease-3"));
    assert_eq!(outbox[0].source, Source::Poll);
}

#[tokio::test]
async fn complete_keeps_the_first_result() {
    let (_dir, j) = temp_journal();
    j.record(&action("act-1"), Source::Push, None)
        .await
        .unwrap();
    j.complete(&result("act-1", false)).await.unwrap();
    j.complete(&result("act-1", true)).await.unwrap();
    let state = j.state("act-1").await.unwrap().unwrap();
    assert_eq!(state.status, Progress::Failed);
    assert_eq!(state.result.unwrap(), result("act-1", false));
    assert_eq!(j.outbox_depth().await.unwrap(), 1);
}

#[tokio::test]
async fn the_outbox_is_in_completion_order_and_mark_reported_drains_it() {
    let (_dir, j) = temp_journal();
    for id in ["a", "b", "c", "d"] {
        j.record(&action(id), Source::Poll, Some("t"))
            .await
            .unwrap();
    }
    for id in ["c", "a", "d", "b"] {
        j.complete(&result(id, id != "d")).await.unwrap();
    }
    let outbox = j.outbox(0).await.unwrap();
    assert_eq!(ids(&outbox), ["c", "a", "d", "b"]);
    assert!(
        outbox
            .windows(2)
            .all(|w| w[0].completed_seq < w[1].completed_seq)
    );
    assert_eq!(ids(&j.outbox(2).await.unwrap()), ["c", "a"]);

    j.mark_reported(&["a".into(), "d".into(), "unknown".into()])
        .await
        .unwrap();
    assert_eq!(ids(&j.outbox(10).await.unwrap()), ["c", "b"]);
    assert_eq!(j.outbox_depth().await.unwrap(), 2);
    // Reporting twice changes nothing; an action without a result is not reported.
    j.record(&action("e"), Source::Poll, None).await.unwrap();
    j.mark_reported(&["a".into(), "e".into()]).await.unwrap();
    j.complete(&result("e", true)).await.unwrap();
    assert_eq!(ids(&j.outbox(10).await.unwrap()), ["c", "b", "e"]);
    j.mark_reported(&["c".into(), "b".into(), "e".into()])
        .await
        .unwrap();
    assert!(j.outbox(10).await.unwrap().is_empty());
    assert_eq!(j.outbox_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn completion_numbers_keep_growing_across_reopen_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let opts = JournalOptions {
        retention: Duration::ZERO,
        ..JournalOptions::new(&path)
    };
    let j = Journal::open(opts.clone(), Clock::system()).unwrap();
    j.record(&action("a"), Source::Push, None).await.unwrap();
    j.complete(&result("a", true)).await.unwrap();
    let first = j.outbox(1).await.unwrap()[0].completed_seq;
    j.mark_reported(&["a".into()]).await.unwrap();
    // Zero retention, with a clock a minute ahead: everything reported goes.
    j.close().await;
    let j = Journal::open(opts, Clock::system().skewed(60)).unwrap();
    assert_eq!(j.prune().await.unwrap(), 1);
    j.record(&action("b"), Source::Push, None).await.unwrap();
    j.complete(&result("b", true)).await.unwrap();
    assert!(j.outbox(1).await.unwrap()[0].completed_seq > first);
}

/// Every row of a table, in rowid order, as SQLite stores it.
fn rows(conn: &rusqlite::Connection, table: &str) -> Vec<Vec<rusqlite::types::Value>> {
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY seq"))
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The tables and indexes a journal's schema holds, by name, with their SQL.
fn schema_of(path: &Path) -> Vec<(String, Option<String>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_version_1_journal_is_upgraded_in_place_with_every_row_and_order_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::tokio();
    // Today's journal, with actions in every state and an audit trail...
    let today = dir.path().join("today.db");
    let j = Journal::open(JournalOptions::new(&today), clock.clone()).unwrap();
    for id in ["q1", "b", "a", "reported", "q2"] {
        j.record(&action(id), Source::Poll, Some(&format!("lease-{id}")))
            .await
            .unwrap();
    }
    for id in ["reported", "b", "a"] {
        j.complete_with_attempts(
            &result(id, id != "b"),
            vec![attempt(&clock, id, "orders-db", 2)],
        )
        .await
        .unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    j.complete_unrecorded(&result("bad-1", false), Source::Push, None)
        .await
        .unwrap();
    j.mark_reported(&["reported".into()]).await.unwrap();
    for id in ["x", "y"] {
        j.record_attempt(attempt(&clock, id, "wiki", 1))
            .await
            .unwrap();
    }
    let outbox = j.outbox(10).await.unwrap();
    let audit = j.audit(AuditQuery::default()).await.unwrap();
    j.close().await;

    // ...copied row for row into the tables version 1 created.
    let v1 = dir.path().join("v1.db");
    let conn = rusqlite::Connection::open(&v1).unwrap();
    conn.execute_batch(schema::SCHEMA_V1).unwrap();
    conn.execute("ATTACH ?1 AS today", [today.to_str().unwrap()])
        .unwrap();
    conn.execute_batch(
        "INSERT INTO actions SELECT * FROM today.actions;
         INSERT INTO audit SELECT * FROM today.audit;
         UPDATE counters SET value = (SELECT value FROM today.counters WHERE name = 'completed_seq');
         DETACH today;",
    )
    .unwrap();
    conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
        .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    let (actions_before, audit_before) = (rows(&conn, "actions"), rows(&conn, "audit"));
    assert_eq!(actions_before.len(), 6);
    drop(conn);

    let j = Journal::open(JournalOptions::new(&v1), clock.clone()).unwrap();
    assert_eq!(j.outbox(10).await.unwrap(), outbox);
    assert_eq!(ids(&outbox), ["b", "a", "bad-1"]);
    assert_eq!(j.audit(AuditQuery::default()).await.unwrap(), audit);
    let unfinished: Vec<_> = j.unfinished().await.unwrap();
    let unfinished: Vec<&str> = unfinished.iter().map(|u| u.action.id.as_str()).collect();
    assert_eq!(unfinished, ["q1", "q2"]);
    assert!(j.state("reported").await.unwrap().is_some());
    // New rows come after the old ones, and completion numbers keep growing.
    j.record(&action("c"), Source::Poll, None).await.unwrap();
    j.complete(&result("c", true)).await.unwrap();
    let after = j.outbox(10).await.unwrap();
    assert_eq!(ids(&after), ["b", "a", "bad-1", "c"]);
    assert!(after[3].completed_seq > outbox[2].completed_seq);
    j.close().await;

    let conn = rusqlite::Connection::open(&v1).unwrap();
    let mut actions_after = rows(&conn, "actions");
    assert_eq!(actions_after.pop().unwrap()[1], "c".to_owned().into());
    assert_eq!(actions_after, actions_before);
    assert_eq!(rows(&conn, "audit"), audit_before);
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let sequences: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_sequence", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sequences, 0, "no AUTOINCREMENT left");
    drop(conn);
    // The same schema, index for index, as a journal created today.
    assert_eq!(schema_of(&v1), schema_of(&today));
}

#[tokio::test]
async fn unknown_ids_are_refused_and_unparsed_actions_still_reach_the_outbox() {
    let (_dir, j) = temp_journal();
    let err = j.complete(&result("ghost", true)).await.unwrap_err();
    assert!(matches!(err, JournalError::NotRecorded { .. }), "{err}");
    assert!(!err.is_retryable());

    j.complete_unrecorded(&result("bad-1", false), Source::Poll, Some("t"))
        .await
        .unwrap();
    let outbox = j.outbox(10).await.unwrap();
    assert_eq!(ids(&outbox), ["bad-1"]);
    assert_eq!(outbox[0].lease_token.as_deref(), Some("t"));
    assert!(j.unfinished().await.unwrap().is_empty());
    let Recorded::Known(state) = j
        .record(&action("bad-1"), Source::Poll, None)
        .await
        .unwrap()
    else {
        panic!("an id with a result is Known");
    };
    assert_eq!(state.status, Progress::Failed);
    // For a recorded id it behaves as complete, first result kept.
    j.record(&action("ok-1"), Source::Push, None).await.unwrap();
    j.complete_unrecorded(&result("ok-1", true), Source::Push, None)
        .await
        .unwrap();
    j.complete_unrecorded(&result("ok-1", false), Source::Push, None)
        .await
        .unwrap();
    assert_eq!(
        j.state("ok-1").await.unwrap().unwrap().status,
        Progress::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_does_not_fail_the_others_in_its_batch() {
    let (_dir, j) = temp_journal();
    for i in 0..50 {
        j.record(&action(&format!("a{i}")), Source::Push, None)
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let j = j.clone();
        tasks.spawn(async move {
            // Even i: a recorded action; odd i: never recorded.
            let id = if i % 2 == 0 {
                format!("a{}", i / 2)
            } else {
                format!("ghost{i}")
            };
            (i, j.complete(&result(&id, true)).await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, answer) = joined.unwrap();
        assert_eq!(answer.is_ok(), i % 2 == 0, "write {i}: {answer:?}");
    }
    assert_eq!(j.outbox_depth().await.unwrap(), 50);
    let outbox = j.outbox(0).await.unwrap();
    assert!(
        outbox
            .windows(2)
            .all(|w| w[0].completed_seq + 1 == w[1].completed_seq)
    );
}

/// One write stores a result and its attempts: both, or (an unrecorded id)
/// neither.
#[tokio::test(start_paused = true)]
async fn a_result_and_its_attempts_are_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::tokio();
    let j = Journal::open(JournalOptions::new(dir.path().join("j.db")), clock.clone()).unwrap();
    j.record(&action("a1"), Source::Push, None).await.unwrap();
    let before = j.stats().writes;
    let attempts = vec![
        attempt(&clock, "a1", "orders-db", 1),
        attempt(&clock, "a1", "orders-db", 2),
    ];
    j.complete_with_attempts(&result("a1", true), attempts.clone())
        .await
        .unwrap();
    assert_eq!(j.stats().writes, before + 1);
    assert_eq!(j.audit(AuditQuery::default()).await.unwrap().len(), 2);
    assert!(j.state("a1").await.unwrap().unwrap().result.is_some());

    let err = j
        .complete_with_attempts(&result("ghost", true), attempts)
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::NotRecorded { .. }), "{err}");
    assert_eq!(
        j.audit(AuditQuery::default()).await.unwrap().len(),
        2,
        "the failed write left no audit rows"
    );
}

#[tokio::test]
async fn unfinished_actions_survive_a_drop_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let j = open(&path);
    for id in ["q1", "r1", "done", "q2"] {
        j.record(&action(id), Source::Poll, Some(&format!("lease-{id}")))
            .await
            .unwrap();
    }
    j.complete(&result("done", true)).await.unwrap();
    drop(j);
    // A journal an earlier version wrote, which marked actions running.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE actions SET status = 'running' WHERE id = 'r1'", [])
        .unwrap();

    let j = open(&path);
    let unfinished = j.unfinished().await.unwrap();
    let got: Vec<(&str, bool, Option<&str>)> = unfinished
        .iter()
        .map(|u| {
            (
                u.action.id.as_str(),
                u.was_running,
                u.lease_token.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("q1", false, Some("lease-q1")),
            ("r1", true, Some("lease-r1")),
            ("q2", false, Some("lease-q2")),
        ]
    );
    assert_eq!(unfinished[0].action, action("q1"));
    assert_eq!(ids(&j.outbox(10).await.unwrap()), ["done"]);
}

#[tokio::test]
async fn close_flushes_and_later_writes_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let j = open(&path);
    let other = j.clone();
    j.record(&action("a"), Source::Push, None).await.unwrap();
    j.close().await;
    let err = other
        .record(&action("b"), Source::Push, None)
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Closed), "{err}");
    assert!(err.to_string().contains("Restart grantbridge"));
    // The WAL was checkpointed into the database file (and emptied or removed).
    let wal = std::fs::metadata(dir.path().join("journal.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0);
    drop(other);
    let j = open(&path);
    assert!(j.state("a").await.unwrap().is_some());
    assert!(j.state("b").await.unwrap().is_none());
}

fn attempt(clock: &Clock, id: &str, integration: &str, attempt: u32) -> AuditEntry {
    AuditEntry {
        at: clock.now(),
        action_id: id.into(),
        integration: integration.into(),
        event_type: "grant-access".into(),
        username: Some("alice@example.com".into()),
        function_url: Some(format!("https://f.example/{integration}")),
        http_status: (attempt > 1).then_some(200),
        latency_ms: 10 * u64::from(attempt),
        outcome: if attempt > 1 {
            "succeeded".into()
        } else {
            "function_unavailable".into()
        },
        attempt,
        instance_id: "gb-test/1".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn audit_queries_filter_by_time_and_integration_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::tokio();
    let j = Journal::open(JournalOptions::new(dir.path().join("j.db")), clock.clone()).unwrap();
    j.record_attempt(attempt(&clock, "a1", "orders-db", 1))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    let since = clock.now();
    j.record_attempt(attempt(&clock, "a1", "orders-db", 2))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    j.record_attempt(attempt(&clock, "b1", "wiki", 1))
        .await
        .unwrap();

    let all = j.audit(AuditQuery::default()).await.unwrap();
    let key = |v: &[AuditEntry]| {
        v.iter()
            .map(|e| (e.action_id.clone(), e.attempt))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        key(&all),
        [("b1".into(), 1), ("a1".into(), 2), ("a1".into(), 1)]
    );
    // Times are stored to the millisecond.
    assert!(since.duration_since(all[1].at).unwrap() < Duration::from_millis(1));
    let mut expected = attempt(&clock, "a1", "orders-db", 2);
    expected.at = all[1].at;
    assert_eq!(all[1], expected);
    let orders = j
        .audit(AuditQuery {
            integration: Some("orders-db".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(key(&orders), [("a1".into(), 2), ("a1".into(), 1)]);
    let recent = j
        .audit(AuditQuery {
            since: Some(since),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(key(&recent), [("b1".into(), 1), ("a1".into(), 2)]);
    let both = j
        .audit(AuditQuery {
            since: Some(since),
            integration: Some("orders-db".into()),
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(key(&both), [("a1".into(), 2)]);
    let one = j
        .audit(AuditQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(key(&one), [("b1".into(), 1)]);
    assert!(render_audit(&all).contains("function_unavailable"));
}

#[tokio::test(start_paused = true)]
async fn prune_removes_only_old_audit_rows_and_old_reported_actions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::tokio();
    let opts = JournalOptions {
        retention: Duration::from_secs(30 * 24 * 3600),
        ..JournalOptions::new(dir.path().join("j.db"))
    };
    let j = Journal::open(opts, clock.clone()).unwrap();
    for id in ["old-reported", "old-unreported", "old-unfinished"] {
        j.record(&action(id), Source::Poll, None).await.unwrap();
    }
    j.complete(&result("old-reported", true)).await.unwrap();
    j.complete(&result("old-unreported", true)).await.unwrap();
    j.mark_reported(&["old-reported".into()]).await.unwrap();
    j.record_attempt(attempt(&clock, "old-reported", "orders-db", 1))
        .await
        .unwrap();

    tokio::time::advance(Duration::from_secs(29 * 24 * 3600)).await;
    assert_eq!(
        j.prune().await.unwrap(),
        0,
        "nothing is older than 30 days yet"
    );

    tokio::time::advance(Duration::from_secs(2 * 24 * 3600)).await;
    j.record(&action("new"), Source::Poll, None).await.unwrap();
    j.complete(&result("new", true)).await.unwrap();
    j.mark_reported(&["new".into()]).await.unwrap();
    j.record_attempt(attempt(&clock, "new", "orders-db", 1))
        .await
        .unwrap();

    assert_eq!(j.prune().await.unwrap(), 2, "one audit row, one action");
    assert!(j.state("old-reported").await.unwrap().is_none());
    assert!(j.state("old-unreported").await.unwrap().is_some());
    assert!(j.state("new").await.unwrap().is_some());
    assert_eq!(ids(&j.outbox(10).await.unwrap()), ["old-unreported"]);
    assert_eq!(j.unfinished().await.unwrap()[0].action.id, "old-unfinished");
    let audit = j.audit(AuditQuery::default()).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action_id, "new");
    assert_eq!(j.prune().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_transactions() {
    const N: usize = 1000;
    let (_dir, j) = temp_journal();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let j = j.clone();
        tasks.spawn(async move {
            let id = format!("act-{i}");
            j.record(&action(&id), Source::Push, None).await.unwrap();
            j.complete(&result(&id, true)).await.unwrap();
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    let stats = j.stats();
    assert_eq!(stats.writes, 2 * N as u64);
    assert!(
        stats.transactions < stats.writes / 5,
        "group commit should batch writes: {stats:?}"
    );
    let outbox = j.outbox(0).await.unwrap();
    assert_eq!(outbox.len(), DEFAULT_OUTBOX_LIMIT);
    let outbox = j.outbox(N).await.unwrap();
    assert_eq!(outbox.len(), N);
    assert!(
        outbox
            .windows(2)
            .all(|w| w[0].completed_seq < w[1].completed_seq)
    );
    let distinct: HashSet<&str> = ids(&outbox).into_iter().collect();
    assert_eq!(distinct.len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_never_exceed_max_batch() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        max_batch: 1,
        ..JournalOptions::new(dir.path().join("j.db"))
    };
    let j = Journal::open(opts, Clock::system()).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let j = j.clone();
        tasks.spawn(async move {
            j.record(&action(&format!("a{i}")), Source::Push, None)
                .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().unwrap();
    }
    let stats = j.stats();
    assert_eq!((stats.transactions, stats.writes), (50, 50));
    assert!(stats.commit_time > Duration::ZERO);
}

/// The writer's connection, run batch by batch: each batch commits with the
/// `synchronous` its writes need, read back from SQLite after the commit.
#[test]
fn only_batches_of_report_marks_and_prunes_commit_without_an_fsync() {
    use tokio::sync::{mpsc, oneshot};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let conn = schema::open_writer(&path, BUSY_TIMEOUT).unwrap();
    let (_sender, receiver) = mpsc::channel(1);
    let counters = std::sync::Arc::new(Counters::default());
    let mut writer = write::Writer::new(
        conn,
        receiver,
        8,
        counters.clone(),
        Default::default(),
        path.clone(),
        std::sync::Arc::new(mirror::Mirror::new(mirror::MAX_ITEMS, mirror::MAX_BYTES)),
    );
    let record = |id: &str| write::Op::Record {
        id: id.into(),
        action_json: serde_json::to_string(&action(id)).unwrap(),
        source: Source::Push,
        lease_token: None,
    };
    let complete = |id: &str| write::Op::complete(&result(id, true), None, Vec::new()).unwrap();
    let marks = |ids: &[&str]| write::Op::MarkReported(ids.iter().map(|i| i.to_string()).collect());
    // (the batch, `PRAGMA synchronous` it committed with: 2 FULL, 1 NORMAL)
    let batches: Vec<(Vec<write::Op>, i64)> = vec![
        (vec![record("a"), record("b")], 2),
        (vec![complete("a")], 2),
        (vec![marks(&["a"])], 1),
        (vec![write::Op::Prune { cutoff: 0 }, marks(&["a"])], 1),
        // A mark with a write that needs the fsync: all of it gets one.
        (vec![complete("b"), marks(&["b"])], 2),
        (vec![marks(&["b"])], 1),
        (vec![write::Op::Probe], 2),
        (vec![record("c")], 2),
    ];
    for (i, (ops, expected)) in batches.into_iter().enumerate() {
        let mut answers = Vec::new();
        let mut batch: Vec<write::Request> = ops
            .into_iter()
            .map(|op| {
                let (reply, answer) = oneshot::channel();
                answers.push(answer);
                write::Request { op, at: 1, reply }
            })
            .collect();
        writer.commit_batch(&mut batch);
        for mut answer in answers {
            assert!(answer.try_recv().unwrap().is_ok(), "batch {i}");
        }
        assert_eq!(writer.synchronous_now(), expected, "batch {i}");
    }
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(counters.transactions.load(Relaxed), 5, "fsync'd commits");
    assert_eq!(counters.unsynced_transactions.load(Relaxed), 3);
    // The marks are in the file: both results left the outbox.
    drop(writer);
    let other = rusqlite::Connection::open(&path).unwrap();
    let reported: Vec<String> = other
        .prepare("SELECT id FROM actions WHERE reported_at IS NOT NULL ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(reported, ["a", "b"]);
}

#[tokio::test]
async fn a_write_blocked_by_another_process_fails_retryably_and_the_journal_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let j = Journal::open_with(
        JournalOptions::new(&path),
        Clock::system(),
        Duration::from_millis(20),
    )
    .unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = j
        .record(&action("a"), Source::Push, None)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("only one grantbridge"), "{err}");
    // Reads do not wait for writers.
    assert!(j.state("a").await.unwrap().is_none());
    other.execute_batch("ROLLBACK").unwrap();
    assert!(matches!(
        j.record(&action("a"), Source::Push, None).await.unwrap(),
        Recorded::New
    ));
    assert_eq!(j.stats().transactions, 1, "the failed batch did not commit");
}

#[test]
fn open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let bad = blocker.join("journal.db");
    let err = Journal::open(JournalOptions::new(&bad), Clock::system()).unwrap_err();
    assert!(matches!(err, JournalError::Open { ref path, .. } if path == &bad));
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );

    let garbage = dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        "this is not a database, it is a text file\n".repeat(200),
    )
    .unwrap();
    let err = Journal::open(JournalOptions::new(&garbage), Clock::system()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&garbage.display().to_string()), "{msg}");
    assert!(msg.contains("file is not a database"), "{msg}");
    assert!(msg.contains("not a grantbridge journal"), "{msg}");
}

#[test]
fn a_journal_locked_by_another_process_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    drop(open(&path));
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = Journal::open_with(
        JournalOptions::new(&path),
        Clock::system(),
        Duration::from_millis(20),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
}

// ---- crash recovery across a real SIGKILL ----

/// Set in the child: the journal file to write to.
const CRASH_CHILD_ENV: &str = "GRANTBRIDGE_JOURNAL_CRASH_CHILD";

/// The child half of [`kill9_keeps_every_acknowledged_write`]: writes through
/// the journal from several tasks and prints `ACK <kind> <id>` after each
/// write's future resolved (and `ACK reporting <id>` before asking to mark
/// it reported), until it is killed (or, as a bound, after 60 s or
/// 20,000 actions per task).
#[test]
#[ignore = "child process of kill9_keeps_every_acknowledged_write, which runs it"]
fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let j = open(Path::new(&path));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let j = j.clone();
            tasks.spawn(async move {
                let ack = |kind: &str, id: &str| {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {kind} {id}").unwrap();
                    out.flush().unwrap();
                };
                for i in 0..20_000 {
                    if std::time::Instant::now() > deadline {
                        return;
                    }
                    let id = format!("w{worker}-{i}");
                    j.record(&action(&id), Source::Poll, Some("lease"))
                        .await
                        .unwrap();
                    ack("recorded", &id);
                    if i % 4 == 3 {
                        continue; // left unfinished
                    }
                    if i % 4 == 2 {
                        continue; // left unfinished (as if its function were being called)
                    }
                    j.complete(&result(&id, i % 3 == 0)).await.unwrap();
                    ack("completed", &id);
                    if i % 4 == 0 {
                        // Said before the call: from here on it may be reported.
                        ack("reporting", &id);
                        j.mark_reported(std::slice::from_ref(&id)).await.unwrap();
                        ack("reported", &id);
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

#[test]
fn kill9_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let test_name = concat!(module_path!(), "::crash_child")
        .split_once("::")
        .unwrap()
        .1;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CRASH_CHILD_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut acked: HashMap<String, HashSet<String>> = HashMap::new();
    let mut completed = 0;
    let mut killed = false;
    // Lines printed before the kill are still in the pipe: read to EOF.
    for line in stdout.lines() {
        let line = line.unwrap();
        let Some(rest) = line.strip_prefix("ACK ") else {
            continue;
        };
        let (kind, id) = rest.split_once(' ').unwrap();
        acked.entry(kind.into()).or_default().insert(id.into());
        if kind == "completed" {
            completed += 1;
            if completed == 400 && !killed {
                child.kill().unwrap(); // SIGKILL on unix
                killed = true;
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the child exited ({status}) before it was killed; see its stderr"
    );
    let recorded = &acked["recorded"];
    assert!(
        recorded.len() >= 400,
        "killed mid-stream, after {} records",
        recorded.len()
    );
    let completed = &acked["completed"];
    let reported = &acked["reported"];

    let integrity: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let j = open(&path);
        for id in recorded {
            let state = j.state(id).await.unwrap();
            assert!(state.is_some(), "acknowledged record of {id} was lost");
        }
        for id in completed {
            let state = j.state(id).await.unwrap().unwrap();
            assert!(
                state.result.is_some(),
                "acknowledged result of {id} was lost"
            );
        }
        let outbox = j.outbox(usize::MAX).await.unwrap();
        assert!(
            outbox
                .windows(2)
                .all(|w| w[0].completed_seq < w[1].completed_seq)
        );
        let in_outbox: HashSet<&str> = ids(&outbox).into_iter().collect();
        for id in completed.difference(&acked["reporting"]) {
            assert!(
                in_outbox.contains(id.as_str()),
                "{id} left the outbox unreported"
            );
        }
        for id in reported {
            assert!(
                !in_outbox.contains(id.as_str()),
                "{id} reported but back in the outbox"
            );
        }
        // Everything durable is either finished or listed to resume.
        let unfinished = j.unfinished().await.unwrap();
        let resumable: HashSet<&str> = unfinished.iter().map(|u| u.action.id.as_str()).collect();
        for id in recorded.difference(completed) {
            let state = j.state(id).await.unwrap().unwrap();
            assert!(
                state.result.is_some() || resumable.contains(id.as_str()),
                "{id} has no result and is not listed as unfinished"
            );
        }
        assert!(!unfinished.is_empty());
        j.close().await;
    });
}

// ---- model-based: any sequence of calls matches a simple in-memory model ----

mod model {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Call {
        Record(u8, Option<u8>),
        Complete(u8, bool),
        Report(Vec<u8>),
        Reopen,
    }

    fn call() -> impl Strategy<Value = Call> {
        let id = 0u8..6;
        prop_oneof![
            3 => (id.clone(), proptest::option::of(0u8..3)).prop_map(|(i, l)| Call::Record(i, l)),
            3 => (id.clone(), any::<bool>()).prop_map(|(i, ok)| Call::Complete(i, ok)),
            1 => proptest::collection::vec(id, 0..4).prop_map(Call::Report),
            1 => Just(Call::Reopen),
        ]
    }

    #[derive(Debug, Default)]
    struct Expected {
        status: Option<Progress>,
        lease: Option<String>,
        result_ok: Option<bool>,
        reported: bool,
    }

    async fn check(calls: Vec<Call>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut j = open(&path);
        let mut model: BTreeMap<u8, Expected> = BTreeMap::new();
        let mut recorded_order: Vec<u8> = Vec::new();
        let mut completed_order: Vec<u8> = Vec::new();
        let name = |i: u8| format!("act-{i}");
        for call in calls {
            match call {
                Call::Record(i, lease) => {
                    let lease = lease.map(|l| format!("lease-{l}"));
                    let answer = j
                        .record(&action(&name(i)), Source::Poll, lease.as_deref())
                        .await
                        .unwrap();
                    let known = model.contains_key(&i);
                    let e = model.entry(i).or_default();
                    if lease.is_some() || !known {
                        e.lease = lease;
                    }
                    match answer {
                        Recorded::New => {
                            assert!(!known, "{i} recorded twice as New");
                            e.status = Some(Progress::Queued);
                            recorded_order.push(i);
                        }
                        Recorded::Known(state) => {
                            assert!(known, "{i} Known before it was recorded");
                            assert_eq!(Some(state.status), e.status);
                            assert_eq!(state.lease_token, e.lease);
                        }
                    }
                }
                Call::Complete(i, ok) => {
                    let answer = j.complete(&result(&name(i), ok)).await;
                    match model.get_mut(&i) {
                        None => assert!(matches!(answer, Err(JournalError::NotRecorded { .. }))),
                        Some(e) => {
                            answer.unwrap();
                            if e.result_ok.is_none() {
                                e.result_ok = Some(ok);
                                e.status = Some(if ok {
                                    Progress::Succeeded
                                } else {
                                    Progress::Failed
                                });
                                completed_order.push(i);
                            }
                        }
                    }
                }
                Call::Report(ids) => {
                    let names: Vec<String> = ids.iter().map(|&i| name(i)).collect();
                    j.mark_reported(&names).await.unwrap();
                    for i in ids {
                        if let Some(e) = model.get_mut(&i)
                            && e.result_ok.is_some()
                        {
                            e.reported = true;
                        }
                    }
                }
                Call::Reopen => {
                    drop(j);
                    j = open(&path);
                }
            }
        }
        for (i, e) in &model {
            let state = j.state(&name(*i)).await.unwrap().unwrap();
            assert_eq!(Some(state.status), e.status, "status of {i}");
            assert_eq!(state.lease_token, e.lease, "lease of {i}");
            assert_eq!(
                state.result.map(|r| r.succeeded()),
                e.result_ok,
                "result of {i}"
            );
        }
        let want_outbox: Vec<String> = completed_order
            .iter()
            .filter(|i| !model[i].reported)
            .map(|&i| name(i))
            .collect();
        let outbox = j.outbox(0).await.unwrap();
        assert_eq!(ids(&outbox), want_outbox);
        assert_eq!(j.outbox_depth().await.unwrap(), want_outbox.len() as u64);
        let want_unfinished: Vec<(String, bool)> = recorded_order
            .iter()
            .filter(|i| model[i].result_ok.is_none())
            .map(|&i| (name(i), model[&i].status == Some(Progress::Running)))
            .collect();
        let unfinished: Vec<(String, bool)> = j
            .unfinished()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.action.id, u.was_running))
            .collect();
        assert_eq!(unfinished, want_unfinished);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn any_call_sequence_matches_the_model(calls in proptest::collection::vec(call(), 1..30)) {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(check(calls));
        }
    }
}

/// A stored result that cannot be read back (here: nested past serde_json's
/// recursion limit, as an older version stored a deep function answer) is
/// delivered as a failed `internal` result and never blocks the others.
#[tokio::test]
async fn an_unreadable_stored_result_is_reported_failed_and_blocks_nothing() {
    let (dir, journal) = temp_journal();
    for id in ["a-1", "a-2", "a-3"] {
        journal
            .record(&action(id), Source::Poll, None)
            .await
            .unwrap();
        journal.complete(&result(id, true)).await.unwrap();
    }
    journal.clone().close().await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let conn = rusqlite::Connection::open(dir.path().join("journal.db")).unwrap();
    conn.execute(
        "UPDATE actions SET result = json_set(result, '$.function.body', ?1) WHERE id = 'a-2'",
        [&deep],
    )
    .unwrap();
    // json_set stored it as a string; store the nesting itself, as the old code did.
    let raw: String = conn
        .query_row("SELECT result FROM actions WHERE id = 'a-2'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let poisoned = raw.replace(&format!("\"{deep}\""), &deep);
    conn.execute(
        "UPDATE actions SET result = ?1 WHERE id = 'a-2'",
        [&poisoned],
    )
    .unwrap();
    assert!(serde_json::from_str::<ActionResult>(&poisoned).is_err());
    drop(conn);

    let journal = open(&dir.path().join("journal.db"));
    let outbox = journal.outbox(10).await.unwrap();
    assert_eq!(ids(&outbox), ["a-1", "a-2", "a-3"]);
    let bad = &outbox[1].result;
    assert_eq!(bad.error_code(), Some(ErrorCode::Internal));
    assert!(
        bad.error
            .as_ref()
            .unwrap()
            .message
            .contains("Idempotency-Key a-2")
    );
    let state = journal.state("a-2").await.unwrap().unwrap();
    assert_eq!(
        state.result.unwrap().error_code(),
        Some(ErrorCode::Internal)
    );
    journal
        .mark_reported(&["a-1".into(), "a-2".into(), "a-3".into()])
        .await
        .unwrap();
    assert_eq!(journal.outbox_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn the_outbox_summary_names_the_oldest_waiting_result() {
    let (_dir, journal) = temp_journal();
    assert_eq!(
        journal.outbox_summary().await.unwrap(),
        OutboxSummary {
            depth: 0,
            oldest: None
        }
    );
    let before = SystemTime::now() - Duration::from_secs(1);
    journal
        .record(&action("o-1"), Source::Poll, None)
        .await
        .unwrap();
    journal.complete(&result("o-1", true)).await.unwrap();
    let summary = journal.outbox_summary().await.unwrap();
    assert_eq!(summary.depth, 1);
    assert!(summary.oldest.is_some_and(|t| t >= before));
}

/// What the reporter reads (the outbox the writer keeps in memory) and what
/// the file holds, compared field by field.
async fn outbox_as_in_the_file(j: &Journal) -> Vec<String> {
    let memory = j.outbox(0).await.unwrap();
    let file = j.outbox_from_file(DEFAULT_OUTBOX_LIMIT).await.unwrap();
    let fields = |o: &[OutboxItem]| {
        o.iter()
            .map(|i| {
                (
                    i.result.clone(),
                    i.lease_token.clone(),
                    i.source,
                    i.completed_seq,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(fields(&memory), fields(&file));
    ids(&memory).into_iter().map(String::from).collect()
}

/// Until the writer has handled everything sent before (a load of the
/// outbox included): two writes in turn, the second in a later batch.
async fn writer_caught_up(j: &Journal) {
    j.probe().await.unwrap();
    j.probe().await.unwrap();
}

#[tokio::test]
async fn the_outbox_in_memory_is_the_outbox_in_the_file_after_every_kind_of_write() {
    let (_dir, j) = temp_journal();
    writer_caught_up(&j).await;
    assert!(j.outbox_in_memory(), "an empty outbox is known at open");
    j.record(&action("a-1"), Source::Poll, Some("lt-1"))
        .await
        .unwrap();
    j.record(&action("a-2"), Source::Push, None).await.unwrap();
    j.complete(&result("a-1", true)).await.unwrap();
    assert!(j.outbox_in_memory());
    assert_eq!(outbox_as_in_the_file(&j).await, ["a-1"]);

    j.complete(&result("a-2", false)).await.unwrap();
    // A second result is ignored, in memory as in the file.
    j.complete(&result("a-1", false)).await.unwrap();
    assert_eq!(outbox_as_in_the_file(&j).await, ["a-1", "a-2"]);
    assert!(j.outbox(0).await.unwrap()[0].result.error.is_none());

    // A redelivered lease brings a new token.
    j.record(&action("a-1"), Source::Poll, Some("lt-2"))
        .await
        .unwrap();
    assert_eq!(
        j.outbox(1).await.unwrap()[0].lease_token.as_deref(),
        Some("lt-2")
    );
    j.complete_unrecorded(&result("bad-1", false), Source::Poll, Some("lt-b"))
        .await
        .unwrap();
    assert_eq!(outbox_as_in_the_file(&j).await, ["a-1", "a-2", "bad-1"]);

    j.mark_reported(&["a-1".into(), "unknown".into()])
        .await
        .unwrap();
    assert!(j.outbox_in_memory());
    assert_eq!(outbox_as_in_the_file(&j).await, ["a-2", "bad-1"]);

    // Back at its completion position: read from the file until reloaded.
    j.requeue_result("a-1").await.unwrap();
    assert!(!j.outbox_in_memory());
    assert_eq!(ids(&j.outbox(0).await.unwrap()), ["a-1", "a-2", "bad-1"]);
    writer_caught_up(&j).await;
    assert!(j.outbox_in_memory());
    assert_eq!(outbox_as_in_the_file(&j).await, ["a-1", "a-2", "bad-1"]);

    j.mark_reported(&["a-1".into(), "a-2".into(), "bad-1".into()])
        .await
        .unwrap();
    assert!(outbox_as_in_the_file(&j).await.is_empty());
}

#[tokio::test]
async fn a_large_outbox_is_read_from_the_file_and_kept_in_memory_again_once_small() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open_with_mirror(
        JournalOptions::new(dir.path().join("journal.db")),
        Clock::system(),
        BUSY_TIMEOUT,
        mirror::Mirror::new(3, mirror::MAX_BYTES),
    )
    .unwrap();
    writer_caught_up(&j).await;
    for n in 1..=5 {
        let id = format!("a-{n}");
        j.record(&action(&id), Source::Poll, None).await.unwrap();
        j.complete(&result(&id, true)).await.unwrap();
        assert_eq!(j.outbox_in_memory(), n <= 3, "after {n} results");
    }
    // Read in pages from the file; a read of all of it asks for a load, which
    // finds more than memory keeps.
    assert_eq!(ids(&j.outbox(2).await.unwrap()), ["a-1", "a-2"]);
    assert_eq!(j.outbox(10).await.unwrap().len(), 5);
    writer_caught_up(&j).await;
    assert!(!j.outbox_in_memory());

    j.mark_reported(&["a-1".into(), "a-2".into(), "a-3".into()])
        .await
        .unwrap();
    assert_eq!(ids(&j.outbox(10).await.unwrap()), ["a-4", "a-5"]);
    writer_caught_up(&j).await;
    assert!(j.outbox_in_memory());
    assert_eq!(outbox_as_in_the_file(&j).await, ["a-4", "a-5"]);
    j.close().await;

    // Reopened: what the last run left is loaded at once.
    let j = open(&dir.path().join("journal.db"));
    writer_caught_up(&j).await;
    assert!(j.outbox_in_memory());
    assert_eq!(outbox_as_in_the_file(&j).await, ["a-4", "a-5"]);

    // Bytes are bounded too: a mirror of 10 bytes keeps no result.
    j.close().await;
    let j = Journal::open_with_mirror(
        JournalOptions::new(dir.path().join("journal.db")),
        Clock::system(),
        BUSY_TIMEOUT,
        mirror::Mirror::new(100, 10),
    )
    .unwrap();
    writer_caught_up(&j).await;
    assert!(!j.outbox_in_memory());
    assert_eq!(ids(&j.outbox(10).await.unwrap()), ["a-4", "a-5"]);
}

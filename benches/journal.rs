//! Group commit, measured: N `complete` writes from 64 concurrent tasks through
//! the journal, against a baseline in the same run of one transaction (one
//! fsync) per write on a plain rusqlite connection with the same pragmas
//! (WAL, synchronous=FULL). Prints writes/s for each and the ratio.
//!
//! It must stay under a minute or two on 2 cores: the baseline stops after
//! 20 s and reports the rate it reached. `JOURNAL_BENCH_N` changes N.
//! Files go under Cargo's target tmp dir (a real disk, so fsync costs what it
//! costs there), not /tmp, which may be memory-backed; `JOURNAL_BENCH_DIR`
//! points it at another disk, e.g. the one the journal will live on.

use std::time::{Duration, Instant};

use grantbridge::action::{Action, ActionResult, FunctionCall, ResultOutcome};
use grantbridge::clock::Clock;
use grantbridge::journal::{Journal, JournalOptions, Source};

const TASKS: usize = 64;
const BASELINE_BUDGET: Duration = Duration::from_secs(20);

fn main() {
    let n: usize = std::env::var("JOURNAL_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let base = std::env::var_os("JOURNAL_BENCH_DIR").map_or_else(
        || env!("CARGO_TARGET_TMPDIR").into(),
        std::path::PathBuf::from,
    );
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "journal bench: {n} complete() writes, {TASKS} tasks, dir {}",
        dir.path().display()
    );
    let grouped = rt.block_on(through_journal(&dir.path().join("grouped.db"), n, TASKS));
    report("group commit, 64 tasks", &grouped);
    let serial = rt.block_on(through_journal(
        &dir.path().join("serial.db"),
        n.min(1_000),
        1,
    ));
    report("group commit, 1 task (no concurrency)", &serial);
    let baseline = baseline(&dir.path().join("baseline.db"), n);
    report("baseline: 1 transaction per write", &baseline);
    println!(
        "ratio: group commit (64 tasks) is {:.1}x the baseline's writes/s",
        grouped.rate() / baseline.rate()
    );
}

struct Run {
    writes: usize,
    elapsed: Duration,
    transactions: Option<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }
}

fn report(name: &str, run: &Run) {
    let tx = match run.transactions {
        Some(t) => format!(
            ", {t} transactions ({:.1} writes each)",
            run.writes as f64 / t.max(1) as f64
        ),
        None => format!(", {} transactions", run.writes),
    };
    println!(
        "{name:<40} {:>6} writes in {:>7.3} s = {:>9.0} writes/s{tx}",
        run.writes,
        run.elapsed.as_secs_f64(),
        run.rate()
    );
}

/// `n` completes spread over `tasks` concurrent tasks, each awaited until
/// durable. Recording the actions first is not timed.
async fn through_journal(path: &std::path::Path, n: usize, tasks: usize) -> Run {
    let journal = Journal::open(JournalOptions::new(path), Clock::system()).expect("open journal");
    let ids: Vec<String> = (0..n).map(|i| format!("act-{i}")).collect();
    run_tasks(&journal, &ids, tasks, |j, id| async move {
        j.record(&action(&id), Source::Poll, Some("lease"))
            .await
            .expect("record");
    })
    .await;
    let before = journal.stats();
    let start = Instant::now();
    run_tasks(&journal, &ids, tasks, |j, id| async move {
        j.complete(&result(&id)).await.expect("complete");
    })
    .await;
    let elapsed = start.elapsed();
    let after = journal.stats();
    assert_eq!(journal.outbox_depth().await.expect("depth"), n as u64);
    journal.close().await;
    Run {
        writes: (after.writes - before.writes) as usize,
        elapsed,
        transactions: Some(after.transactions - before.transactions),
    }
}

async fn run_tasks<F, Fut>(journal: &Journal, ids: &[String], tasks: usize, f: F)
where
    F: Fn(Journal, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for chunk in ids.chunks(ids.len().div_ceil(tasks).max(1)) {
        let (j, chunk, f) = (journal.clone(), chunk.to_vec(), f.clone());
        set.spawn(async move {
            for id in chunk {
                f(j.clone(), id).await;
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("task");
    }
}

/// The same result rows written one transaction (one fsync) at a time.
fn baseline(path: &std::path::Path, n: usize) -> Run {
    let conn = rusqlite::Connection::open(path).expect("open baseline");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("wal");
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    conn.execute_batch(
        "CREATE TABLE actions (id TEXT PRIMARY KEY, action TEXT, result TEXT, completed_seq INTEGER)",
    )
    .expect("schema");
    conn.execute_batch("BEGIN").expect("begin");
    for i in 0..n {
        let id = format!("act-{i}");
        let action = serde_json::to_string(&action(&id)).expect("json");
        conn.execute(
            "INSERT INTO actions (id, action) VALUES (?1, ?2)",
            (&id, &action),
        )
        .expect("insert");
    }
    conn.execute_batch("COMMIT").expect("commit");

    let start = Instant::now();
    let mut writes = 0;
    for i in 0..n {
        if start.elapsed() > BASELINE_BUDGET {
            break;
        }
        let id = format!("act-{i}");
        let json = serde_json::to_string(&result(&id)).expect("json");
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        conn.execute(
            "UPDATE actions SET result = ?2, completed_seq = ?3 WHERE id = ?1",
            (&id, &json, i as i64),
        )
        .expect("update");
        conn.execute_batch("COMMIT").expect("commit");
        writes += 1;
    }
    Run {
        writes,
        elapsed: start.elapsed(),
        transactions: None,
    }
}

fn action(id: &str) -> Action {
    Action::from_value(&serde_json::json!({
        "id": id, "integration": "orders-db", "event_type": "grant-access",
        "params": {"grant_id": "g-123", "username": "alice@example.com", "resource_type": "db",
                   "resources": ["orders"], "permission": "read"}
    }))
    .expect("action")
}

fn result(id: &str) -> ActionResult {
    ActionResult {
        action_id: id.into(),
        outcome: ResultOutcome::Succeeded,
        error: None,
        function: Some(FunctionCall {
            url: "https://us-central1-acme-prod.cloudfunctions.net/grant-db".into(),
            status: Some(200),
            body: Some(serde_json::json!({"status": "ok"})),
            latency_ms: 41,
        }),
        attempts: 1,
        started_at: "2026-11-22T09:59:59Z".into(),
        finished_at: "2026-11-22T10:00:00Z".into(),
        instance_id: "grantbridge-0/3f9c".into(),
        connector_version: "0.1.0".into(),
        access_details: None,
    }
}

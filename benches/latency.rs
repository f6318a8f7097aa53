//! What one action costs the connector in time and memory, measured on the
//! release `grantbridge run` binary in a process of its own.
//!
//! 1. **Start**: from spawning the process to the first `/readyz` 200, which
//!    includes minting the first ID token at the sandbox's token endpoint (a
//!    network wait, timed by the sandbox and shown apart).
//! 2. **Added latency at a fixed offered load** (200/s and 2,000/s): actions
//!    enqueued at a steady rate on the simulated control plane, each measured
//!    from its lease to its result being accepted, minus the function's own
//!    time (from the front end letting the call through to its answer): p50,
//!    p90, p99 and max, and the p50 of its parts (lease → the call at the
//!    front end; the front end's token check and body read; the answer → the
//!    result accepted). And **long-poll wake-up**: from enqueuing an action,
//!    while the connector waits in a long poll, to its function being called.
//! 3. **Memory**: RSS (`/proc/PID/status`) idle, with N calls in flight (the
//!    function holds every call) and with N actions queued (one call at a
//!    time allowed), for N = 1,000 and 10,000, and what that makes per action;
//!    and the slope between the two sizes (what one more call costs, without
//!    what does not grow with N).
//!
//! `--runs N` repeats each part and prints median, min and max; `--part 1|2|3`
//! runs one part. Run: `cargo bench --bench latency -- [--runs N] [--seconds S] [--part K]`.

use std::time::{Duration, Instant, SystemTime};

use grantbridge_sandbox::daemon_config::{DaemonConfig, Integration};
use grantbridge_sandbox::{Faults, FunctionImpl};
use serde_json::json;

#[path = "common/mod.rs"]
mod common;
use common::{Daemon, SA, flag, quantile, spread};

fn revoke(i: usize) -> serde_json::Value {
    json!({"grant_id": format!("g-{i}"), "username": format!("user{i}@example.com"), "resource_type": "db", "resources": ["orders"], "permission": "read"})
}

fn action(prefix: &str, i: usize) -> serde_json::Value {
    json!({"id": format!("{prefix}-{i}"), "integration": "db", "event_type": "revoke-access", "params": revoke(i)})
}

/// A daemon on one integration `db` calling the sandbox's sample function.
fn config(google: &common::Google, cp_url: &str, dir: &std::path::Path) -> DaemonConfig {
    DaemonConfig::new("bench")
        .instance_id("bench/0")
        .key_file_connection("c", &google.key_file)
        .control_plane(cp_url, "T")
        .journal(&dir.join("journal.db"))
        .integration(
            "db",
            Integration::new(
                "c",
                "sandbox-project",
                "revoke",
                &google.sandbox.function_url("revoke"),
            ),
        )
}

/// A sandbox with the sample function `revoke`, a control plane, and the
/// daemon on them.
async fn setup() -> (
    tempfile::TempDir,
    common::Google,
    grantbridge_sandbox::ControlPlane,
    Daemon,
) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let google = common::google(dir.path()).await;
    google
        .sandbox
        .deploy_function("revoke", FunctionImpl::Sample, &[SA]);
    let cp = common::control_plane().await;
    let daemon = Daemon::start(dir.path(), config(&google, &cp.url(), dir.path())).await;
    (dir, google, cp, daemon)
}

/// Start: spawn → `/readyz` 200, and the part of it the token mint took.
async fn start_once() -> (Duration, Duration) {
    let (_dir, google, _cp, daemon) = setup().await;
    let ready = daemon.ready_after;
    let mint = google.sandbox.token_endpoint_time();
    daemon.stop().await;
    (ready, mint)
}

struct Load {
    added: Vec<Duration>,
    wakeup: Vec<Duration>,
    /// Where `added` went, action by action (each sorted on its own):
    /// lease → the call at the front end; the front end's token check and
    /// body read; the function's answer → the result accepted.
    before: Vec<Duration>,
    front_end: Vec<Duration>,
    after: Vec<Duration>,
    /// The daemon's mean journal commit (apply and fsync) over the load, ms.
    commit_ms: f64,
    /// The daemon's fsync'd journal commits over the load, per action.
    fsyncs_per_action: f64,
}

/// The daemon's time spent committing its journal, and its commits, so far.
async fn commit_totals(daemon: &Daemon) -> (f64, f64) {
    (
        daemon
            .metric("grantbridge_journal_commit_seconds_total")
            .await,
        daemon.metric("grantbridge_journal_commits_total").await,
    )
}

/// `rate` actions per second for `seconds`, enqueued one at a time on a
/// steady clock; every action's added latency and wake-up time, and the
/// daemon's mean journal commit meanwhile (its own metrics).
async fn offered_load(rate: u32, seconds: u64) -> Load {
    let (_dir, google, cp, daemon) = setup().await;
    let (seconds0, commits0) = commit_totals(&daemon).await;
    let n = (rate as u64 * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut enqueued = Vec::with_capacity(n);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + interval * i as u32).await;
        enqueued.push(SystemTime::now());
        cp.enqueue(action("load", i));
    }
    let results = cp.wait_for_results(n, Duration::from_secs(120)).await;
    let (seconds1, commits1) = commit_totals(&daemon).await;
    daemon.stop().await;
    let calls: std::collections::HashMap<String, grantbridge_sandbox::Invocation> = google
        .sandbox
        .invocations("revoke")
        .into_iter()
        .filter_map(|c| Some((c.idempotency_key.clone()?, c)))
        .collect();
    let mut load = Load {
        added: Vec::with_capacity(n),
        wakeup: Vec::with_capacity(n),
        before: Vec::with_capacity(n),
        front_end: Vec::with_capacity(n),
        after: Vec::with_capacity(n),
        commit_ms: 0.0,
        fsyncs_per_action: (commits1 - commits0) / n as f64,
    };
    for (i, at) in enqueued.iter().enumerate() {
        let id = format!("load-{i}");
        let (Some(r), Some(call)) = (results.get(&id), calls.get(&id)) else {
            panic!("{id}: no result or no call");
        };
        let leased = r.first_leased_at.expect("leased");
        let total = r.accepted_at.duration_since(leased).unwrap_or_default();
        load.added.push(total.saturating_sub(call.duration));
        load.wakeup
            .push(call.received_at.duration_since(*at).unwrap_or_default());
        let since = |later: SystemTime, earlier: SystemTime| {
            later.duration_since(earlier).unwrap_or_default()
        };
        load.before.push(since(call.arrived_at, leased));
        load.front_end
            .push(since(call.received_at, call.arrived_at));
        load.after
            .push(since(r.accepted_at, call.received_at + call.duration));
    }
    for v in [
        &mut load.added,
        &mut load.wakeup,
        &mut load.before,
        &mut load.front_end,
        &mut load.after,
    ] {
        v.sort();
    }
    load.commit_ms = (seconds1 - seconds0) * 1e3 / (commits1 - commits0).max(1.0);
    load
}

/// Column `k` of per-run rows.
fn col<const N: usize>(rows: &[[f64; N]], k: usize) -> Vec<f64> {
    rows.iter().map(|r| r[k]).collect()
}

fn percentiles(sorted: &[Duration]) -> [f64; 4] {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    [
        ms(quantile(sorted, 0.5)),
        ms(quantile(sorted, 0.9)),
        ms(quantile(sorted, 0.99)),
        ms(*sorted.last().unwrap_or(&Duration::ZERO)),
    ]
}

/// How the connector reaches the function in the memory part.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    /// The plain front end: HTTP/1.1, one connection per concurrent call.
    Http1,
    /// The TLS front end: HTTP/2 by ALPN, as with Google's front end, every
    /// call a stream on one connection.
    Http2,
}

/// RSS idle, with `n` calls held in flight, and with `n` actions queued
/// behind one call (`None` when not asked).
async fn memory(n: usize, protocol: Protocol, queued: bool) -> (u64, u64, Option<u64>) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let google = common::google(dir.path()).await;
    google
        .sandbox
        .deploy_function("revoke", FunctionImpl::Sample, &[SA]);
    let front_end =
        common::FrontEnd::start(&google.sandbox, dir.path(), protocol == Protocol::Http2).await;
    let url = front_end.url(&google.sandbox, "revoke");
    let env = front_end.daemon_env();
    // Every call hangs until the connector gives up (the integration's timeout).
    google.sandbox.set_faults(
        "revoke",
        Faults {
            hang_next: u32::MAX,
            ..Faults::default()
        },
    );
    let rss = |in_flight: bool| {
        let (google, dir, url, env) = (&google, dir.path(), url.as_str(), env.as_slice());
        async move {
            let cp = common::control_plane().await;
            let limit = if in_flight { n } else { 1 };
            let config = config(google, &cp.url(), dir)
                .set("integrations.db.url", url)
                .set("engine.max_concurrency", n.min(10_000) as i64)
                .set("engine.per_integration_concurrency", limit as i64)
                .set("engine.queue_capacity", (2 * n) as i64)
                .set("control_plane.max_actions", 1000)
                .set("integrations.db.timeout", "540s")
                .set("integrations.db.max_attempts", 1)
                .set(
                    "journal.path",
                    dir.join(format!("journal-{in_flight}.db"))
                        .display()
                        .to_string(),
                );
            let daemon = Daemon::start_with_env(dir, config, env).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let idle = daemon.rss_kib();
            let prefix = if in_flight { "held" } else { "queued" };
            let before = google.sandbox.invocations("revoke").len();
            cp.enqueue_many((0..n).map(|i| action(prefix, i)).collect());
            // Held: every call reached the function. Queued: all leased, one calling.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let calls = google.sandbox.invocations("revoke").len() - before;
                let done = if in_flight {
                    calls >= n
                } else {
                    cp.leased() >= n && calls >= 1
                };
                if done {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{prefix}: {calls} calls, {} leased",
                    cp.leased()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Let the daemon settle (journal commits, buffers) before reading.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let loaded = daemon.rss_kib();
            drop(daemon); // kill: the held calls would wait out the grace period
            (idle, loaded)
        }
    };
    let (idle, in_flight) = rss(true).await;
    let queued = match queued {
        true => Some(rss(false).await.1),
        false => None,
    };
    (idle, in_flight, queued)
}

#[tokio::main]
async fn main() {
    let runs = flag("--runs").unwrap_or(1).max(1);
    let seconds = flag("--seconds").unwrap_or(5) as u64;
    let part = flag("--part");
    let runs_part = |k: usize| part.is_none_or(|p| p == k);
    println!("latency and memory of the release grantbridge binary, {runs} run(s)");

    let mut starts = Vec::new();
    let mut mints = Vec::new();
    for _ in 0..if runs_part(1) { runs.max(5) } else { 0 } {
        let (ready, mint) = start_once().await;
        starts.push(ready.as_secs_f64() * 1e3);
        mints.push(mint.as_secs_f64() * 1e3);
    }
    let without: Vec<f64> = starts.iter().zip(&mints).map(|(s, m)| s - m).collect();
    if runs_part(1) {
        println!(
            "start → /readyz 200: {} ms, of which minting the first ID token at the sandbox {} ms; without it {} ms ({} starts)",
            spread(&starts, 1),
            spread(&mints, 1),
            spread(&without, 1),
            starts.len()
        );
    }

    for rate in [200u32, 2000].into_iter().filter(|_| runs_part(2)) {
        let mut added: Vec<[f64; 4]> = Vec::new();
        let mut wakeup: Vec<[f64; 4]> = Vec::new();
        let mut floor: Vec<f64> = Vec::new();
        // p50s of the parts, per run: [before the call, front end, after].
        let mut parts: Vec<[f64; 3]> = Vec::new();
        for run in 1..=runs {
            let load = offered_load(rate, seconds).await;
            let (a, w) = (percentiles(&load.added), percentiles(&load.wakeup));
            println!(
                "  run {run}  {rate}/s for {seconds} s: added by grantbridge (lease → result accepted, minus the function) p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms; enqueue → function called p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms; journal commit (apply + fsync) mean {:.2} ms, {:.2} fsyncs per action",
                a[0],
                a[1],
                a[2],
                a[3],
                w[0],
                w[1],
                w[2],
                w[3],
                load.commit_ms,
                load.fsyncs_per_action
            );
            let p50 = |v: &[Duration]| quantile(v, 0.5).as_secs_f64() * 1e3;
            parts.push([p50(&load.before), p50(&load.front_end), p50(&load.after)]);
            added.push(a);
            wakeup.push(w);
            floor.push(load.commit_ms);
        }
        let above: Vec<f64> = col(&added, 0)
            .iter()
            .zip(&floor)
            .map(|(a, f)| a - 2.0 * f)
            .collect();
        println!(
            "{rate}/s, median [min–max] over {runs} run(s): added p50 {} ms, p90 {} ms, p99 {} ms, max {} ms; long-poll wake-up (enqueue → function called) p50 {} ms, p99 {} ms",
            spread(&col(&added, 0), 2),
            spread(&col(&added, 1), 2),
            spread(&col(&added, 2), 2),
            spread(&col(&added, 3), 2),
            spread(&col(&wakeup, 0), 2),
            spread(&col(&wakeup, 2), 2)
        );
        println!(
            "  the disk: a journal commit took {} ms (mean, fsync included); an action waits for two (its record before the call, its result before the report): p50 less two commits {} ms",
            spread(&floor, 2),
            spread(&above, 2)
        );
        println!(
            "  where it went (p50 of each part, so they need not add up): lease → the call at the front end {} ms (one commit in it); the front end checking the ID token and reading the body {} ms (the sandbox's, as Google's front end's, not grantbridge's); the function's answer → the result accepted {} ms (one commit in it)",
            spread(&col(&parts, 0), 2),
            spread(&col(&parts, 1), 2),
            spread(&col(&parts, 2), 2)
        );
    }

    // KiB above idle with N calls in flight, per run: [HTTP/1.1, HTTP/2].
    let mut above_idle: Vec<(usize, Vec<[f64; 2]>)> = Vec::new();
    for n in [1_000usize, 10_000].into_iter().filter(|_| runs_part(3)) {
        let mut per_call = Vec::new();
        let mut per_stream = Vec::new();
        let mut queued_mib = Vec::new();
        let mut above = Vec::new();
        for run in 1..=runs {
            let (idle, in_flight, queued) = memory(n, Protocol::Http1, true).await;
            let queued = queued.expect("asked");
            let call = (in_flight.saturating_sub(idle)) as f64 / n as f64;
            let queue = (queued.saturating_sub(idle)) as f64 / 1024.0;
            let (idle2, in_flight2, _) = memory(n, Protocol::Http2, false).await;
            let stream = (in_flight2.saturating_sub(idle2)) as f64 / n as f64;
            println!(
                "  run {run}  N = {n}: RSS idle {idle} KiB; {n} calls in flight over HTTP/1.1 {in_flight} KiB ({call:.1} KiB per call), over HTTP/2 (TLS) {in_flight2} KiB, idle {idle2} KiB ({stream:.1} KiB per call); {n} actions queued {queued} KiB ({queue:.1} MiB above idle)"
            );
            per_call.push(call);
            per_stream.push(stream);
            queued_mib.push(queue);
            above.push([call * n as f64, stream * n as f64]);
        }
        above_idle.push((n, above));
        println!(
            "N = {n}, median [min–max]: per call in flight {} KiB over HTTP/1.1 (a connection each), {} KiB over HTTP/2 (streams on one TLS connection, as to Google's front end); {} MiB above idle with {n} queued",
            spread(&per_call, 1),
            spread(&per_stream, 1),
            spread(&queued_mib, 1)
        );
    }
    // What one more call costs, without what does not grow with N (the
    // journal's page cache filling, connection tables, allocator arenas):
    // the slope between the two sizes, run by run.
    if let [(small, a), (large, b)] = above_idle.as_slice() {
        let slope = |k: usize| -> Vec<f64> {
            a.iter()
                .zip(b)
                .map(|(a, b)| (b[k] - a[k]) / (large - small) as f64)
                .collect()
        };
        println!(
            "per call in flight from N = {small} to {large} (the slope; what does not grow with N left out): {} KiB over HTTP/1.1, {} KiB over HTTP/2",
            spread(&slope(0), 1),
            spread(&slope(1), 1)
        );
    }
}

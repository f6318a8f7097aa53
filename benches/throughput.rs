//! Throughput of the whole connector on a burst: ACTIONS revocations (someone
//! left the company) across two integrations, leased from the simulated
//! control plane, invoked through the sandbox's authenticating front end,
//! journaled and reported. The connector is the release `grantbridge run`
//! binary in a process of its own. Baseline, same run: direct calls from the
//! bench process to the same functions at the same concurrency with a
//! pre-minted token and no journal.
//!
//! Three scenarios per run:
//! - the ceiling: a function that answers at once (0 ms) with 32 concurrent
//!   calls per integration, so the connector's own cost is what shows, through
//!   the sandbox's plain front end (HTTP/1.1: a connection per concurrent call);
//! - the same ceiling through the sandbox's TLS front end, which negotiates
//!   HTTP/2 by ALPN as Google's front end does, so every call is a stream on
//!   one connection: what a deployment does (plain http is for loopback
//!   development only). Each client speaks what it would to Google: the
//!   baseline and grantbridge HTTP/2 (reqwest), the Python peer HTTP/1.1 over
//!   TLS (requests);
//! - a 5 ms function with 16 concurrent calls per integration (the
//!   function's concurrency is the bottleneck, as with real functions).
//!
//! The baseline runs twice, before grantbridge's burst and after it, and the
//! ratio divides by the faster: a baseline slowed by the machine, or by what
//! earlier scenarios left in this process, must not flatter the ratio.
//!
//! Each prints the baseline, the connector, their ratio, the CPU each side
//! spent per action, journal writes and fsyncs (commits that waited for the
//! disk; a batch of report marks alone commits without) per action, and the
//! peak concurrency each function saw; and, over the runs, the CPU the
//! target ratio (0.7 at the ceiling, 0.95 with 5 ms) would allow every
//! process on the machine per action, what the sandbox side spent of it, and
//! how many cores were busy. Then the Python peer
//! (benches/peer/peer.py: google-auth + requests, the same concurrency) does
//! the same burst on the same sandbox: its throughput and peak RSS beside
//! grantbridge's (`pip install -r benches/peer/requirements.txt`; skipped,
//! and said so, when Python lacks them). `--runs N` repeats everything and prints the median, min and
//! max of each figure: these machines are shared and noisy.
//!
//! Run: `cargo bench --bench throughput -- [--runs N] [--actions N] [--scenario 1|2|3]`
//! (`--scenario` runs one of the three, e.g. to profile it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use grantbridge_sandbox::daemon_config::{DaemonConfig, Integration};
use grantbridge_sandbox::{FunctionImpl, Sandbox};
use serde_json::json;

#[path = "common/mod.rs"]
mod common;
use common::{Daemon, SA, flag, spread};

const INTEGRATIONS: usize = 2;

/// One scenario: how long the function takes and how many calls it may
/// have at once.
#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    service_time: Duration,
    per_integration: usize,
    /// Through the sandbox's TLS front end (HTTP/2 by ALPN, as Google's
    /// front end), not the plain one (HTTP/1.1, a connection per call).
    tls: bool,
    /// The ratio issue 10 asks of the connector here.
    target: f64,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "ceiling: 0 ms function, 32 calls per integration",
        service_time: Duration::ZERO,
        per_integration: 32,
        tls: false,
        target: 0.7,
    },
    Scenario {
        name: "ceiling over TLS (HTTP/2): 0 ms, 32 per integration",
        service_time: Duration::ZERO,
        per_integration: 32,
        tls: true,
        target: 0.7,
    },
    Scenario {
        name: "5 ms function, 16 calls per integration",
        service_time: Duration::from_millis(5),
        per_integration: 16,
        tls: false,
        target: 0.95,
    },
];

/// A function upstream that counts calls in flight and remembers the peak.
/// A 0 ms function holds each call for microseconds, so there the peak
/// stays near 1 however many calls the connector has open.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

async fn upstream(gauge: Arc<Gauge>, service_time: Duration) -> url::Url {
    let app = Router::new().fallback(post(move || {
        let g = gauge.clone();
        async move {
            let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
            g.peak.fetch_max(n, Ordering::SeqCst);
            if !service_time.is_zero() {
                tokio::time::sleep(service_time).await;
            }
            g.now.fetch_sub(1, Ordering::SeqCst);
            axum::Json(json!({"status": "ok"}))
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn revoke(i: usize) -> serde_json::Value {
    json!({"grant_id": format!("g-{i}"), "username": format!("user{i}@example.com"), "resource_type": "db", "resources": ["orders"], "permission": "read"})
}

/// Direct calls: one pre-minted token, `concurrency` at a time, no journal.
/// Returns how long they took and the sum of the calls' own durations (from
/// sending to the answer read).
async fn baseline(
    sandbox: &Sandbox,
    functions: &[String],
    n: usize,
    concurrency: usize,
    ca_pem: Option<&str>,
) -> (Duration, Duration) {
    let mut http = reqwest::Client::builder();
    if let Some(pem) = ca_pem {
        http = http.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    let http = http.build().unwrap();
    let tokens: Vec<String> = functions
        .iter()
        .map(|f| sandbox.mint_id_token(SA, f).unwrap())
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (http, next, f, t) = (
                http.clone(),
                next.clone(),
                functions[w % functions.len()].clone(),
                tokens[w % functions.len()].clone(),
            );
            tokio::spawn(async move {
                let mut busy = Duration::ZERO;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break busy;
                    }
                    let sent = Instant::now();
                    let r = http
                        .post(&f)
                        .bearer_auth(&t)
                        .json(&json!({"event_type": "revoke-access", "params": revoke(i)}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                    r.bytes().await.unwrap();
                    busy += sent.elapsed();
                }
            })
        })
        .collect();
    let mut busy = Duration::ZERO;
    for w in workers {
        busy += w.await.unwrap();
    }
    (started.elapsed(), busy)
}

/// What one scenario measured.
struct Figures {
    /// The faster of the two baselines (calls/s).
    baseline: f64,
    /// The baseline before grantbridge's burst and after it.
    baseline_both: (f64, f64),
    connector: f64,
    /// Calls in flight on average (the calls' summed durations over the
    /// phase's): direct calls, and grantbridge's (its attempt latencies).
    baseline_in_flight: f64,
    connector_in_flight: f64,
    writes_per_action: f64,
    /// CPU time per action: the grantbridge process; the bench process
    /// (sandbox, simulated control plane, upstream) during the same phase.
    connector_cpu_us: f64,
    bench_cpu_us: f64,
    /// The bench process's CPU per call during the baseline (client + front end + upstream).
    baseline_cpu_us: f64,
    fsyncs_per_action: f64,
    peaks: Vec<usize>,
    /// Peak RSS (VmHWM) of the grantbridge process over the burst.
    connector_peak_kib: u64,
    /// Peak private memory (RssAnon) of the grantbridge process over the burst.
    connector_anon_kib: u64,
    /// The Python peer on the same burst: actions/s, peak RSS, peak RssAnon.
    peer: Option<(f64, u64, u64)>,
}

impl Figures {
    fn ratio(&self) -> f64 {
        self.connector / self.baseline
    }
}

async fn measure(s: Scenario, n: usize) -> Figures {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let google = common::google(dir.path()).await;
    let sandbox = &google.sandbox;
    let gauges: Vec<Arc<Gauge>> = (0..INTEGRATIONS).map(|_| Arc::default()).collect();
    let names: Vec<String> = (0..INTEGRATIONS).map(|i| format!("revoke-{i}")).collect();
    for (name, g) in names.iter().zip(&gauges) {
        let upstream = upstream(g.clone(), s.service_time).await;
        sandbox.deploy_function(name, FunctionImpl::Proxy(upstream), &[SA]);
    }
    let front_end = common::FrontEnd::start(sandbox, dir.path(), s.tls).await;
    let functions: Vec<String> = names
        .iter()
        .map(|name| front_end.url(sandbox, name))
        .collect();
    let concurrency = s.per_integration * functions.len();
    let me = std::process::id();
    let cpu0 = common::cpu_time(me);
    let (base, base_busy) = baseline(sandbox, &functions, n, concurrency, front_end.ca_pem()).await;
    let baseline_cpu = common::cpu_time(me) - cpu0;
    for g in &gauges {
        g.peak.store(0, Ordering::SeqCst);
    }

    let cp = common::control_plane().await;
    let config = functions.iter().enumerate().fold(
        DaemonConfig::new("bench")
            .instance_id("bench/0")
            .key_file_connection("c", &google.key_file)
            .control_plane(&cp.url(), "T")
            .set("control_plane.max_actions", 500)
            .set("control_plane.report_batch", 500)
            .journal(&dir.path().join("journal.db"))
            .set("engine.max_concurrency", concurrency as i64)
            .set(
                "engine.per_integration_concurrency",
                s.per_integration as i64,
            ),
        |config, (i, f)| {
            config.integration(
                &format!("db-{i}"),
                Integration::new("c", "sandbox-project", &format!("revoke-{i}"), f),
            )
        },
    );
    let daemon = Daemon::start_with_env(dir.path(), config, &front_end.daemon_env()).await;
    let (writes0, commits0) = (
        daemon.metric("grantbridge_journal_writes_total").await,
        daemon.metric("grantbridge_journal_commits_total").await,
    );
    const CALL_SECONDS: &str = "grantbridge_function_latency_seconds_sum";
    let calls0 = daemon.metric_sum(CALL_SECONDS).await;
    let (daemon_cpu0, bench_cpu0) = (daemon.cpu_time(), common::cpu_time(me));
    let anon = common::AnonPeak::start(daemon.pid());
    let started = Instant::now();
    cp.enqueue_many((0..n).map(|i| json!({"id": format!("rev-{i}"), "integration": format!("db-{}", i % INTEGRATIONS), "event_type": "revoke-access", "params": revoke(i)})).collect());
    let results = cp.wait_for_results(n, Duration::from_secs(600)).await;
    let through = started.elapsed();
    let (daemon_cpu, bench_cpu) = (
        daemon.cpu_time() - daemon_cpu0,
        common::cpu_time(me) - bench_cpu0,
    );
    let connector_peak_kib = common::peak_rss_kib(daemon.pid());
    let connector_anon_kib = anon.stop();
    let writes = daemon.metric("grantbridge_journal_writes_total").await - writes0;
    let commits = daemon.metric("grantbridge_journal_commits_total").await - commits0;
    let calls_busy = daemon.metric_sum(CALL_SECONDS).await - calls0;
    daemon.stop().await;
    assert_eq!(results.len(), n, "every action has a result");
    let failed = results.values().filter(|r| !r.parsed.succeeded()).count();
    let duplicates: u32 = results.values().map(|r| r.reports - 1).sum();
    assert_eq!(failed, 0, "no failed results");
    assert_eq!(duplicates, 0, "no duplicate reports");
    let peaks = gauges
        .iter()
        .map(|g| g.peak.load(Ordering::SeqCst))
        .collect();
    // The baseline again, after grantbridge. The ratio divides by the faster
    // of the two, so a baseline slowed by the machine, or by what earlier
    // scenarios left in this process, never flatters it.
    let (after, after_busy) =
        baseline(sandbox, &functions, n, concurrency, front_end.ca_pem()).await;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let baseline_both = (rate(base), rate(after));
    let (base, base_busy) = if after < base {
        (after, after_busy)
    } else {
        (base, base_busy)
    };
    let peer = peer(&google, &functions, n, concurrency, front_end.ca_file())
        .await
        .map(|(d, kib, anon)| (rate(d), kib, anon));
    Figures {
        baseline: rate(base),
        baseline_both,
        connector: rate(through),
        baseline_in_flight: base_busy.as_secs_f64() / base.as_secs_f64(),
        connector_in_flight: calls_busy / through.as_secs_f64(),
        writes_per_action: writes / n as f64,
        connector_cpu_us: daemon_cpu.as_secs_f64() * 1e6 / n as f64,
        bench_cpu_us: bench_cpu.as_secs_f64() * 1e6 / n as f64,
        baseline_cpu_us: baseline_cpu.as_secs_f64() * 1e6 / n as f64,
        fsyncs_per_action: commits / n as f64,
        peaks,
        connector_peak_kib,
        connector_anon_kib,
        peer,
    }
}

/// The Python peer on the same burst against a fresh control plane: its
/// time, peak RSS and peak RssAnon (KiB); `None` when Python lacks its libraries.
async fn peer(
    google: &common::Google,
    functions: &[String],
    n: usize,
    workers: usize,
    ca_bundle: Option<&std::path::Path>,
) -> Option<(Duration, u64, u64)> {
    let ready = std::process::Command::new("python3")
        .args(["-c", "import google.oauth2.service_account, requests"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        return None;
    }
    let cp = common::control_plane().await;
    let integrations: serde_json::Map<String, serde_json::Value> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("db-{i}"), json!(f)))
        .collect();
    let mut child = tokio::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer/peer.py"))
        .args([
            "--control-plane",
            &cp.url(),
            "--connector-id",
            "bench",
            "--token",
            "t",
        ])
        .arg("--key-file")
        .arg(&google.key_file)
        .args([
            "--integrations",
            &serde_json::Value::Object(integrations).to_string(),
        ])
        .args(["--workers", &workers.to_string()])
        .envs(ca_bundle.map(|b| ("REQUESTS_CA_BUNDLE", b)))
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let pid = child.id().expect("running");
    let anon = common::AnonPeak::start(pid);
    let started = Instant::now();
    cp.enqueue_many((0..n).map(|i| json!({"id": format!("rev-{i}"), "integration": format!("db-{}", i % INTEGRATIONS), "event_type": "revoke-access", "params": revoke(i)})).collect());
    let results = cp.wait_for_results(n, Duration::from_secs(1200)).await;
    let elapsed = started.elapsed();
    let peak = common::peak_rss_kib(pid);
    let anon = anon.stop();
    let _ = child.start_kill();
    let _ = child.wait().await;
    assert_eq!(results.len(), n, "the peer reported every action");
    Some((elapsed, peak, anon))
}

#[tokio::main]
async fn main() {
    let n = flag("--actions").unwrap_or(10_000);
    let runs = flag("--runs").unwrap_or(1).max(1);
    let only = flag("--scenario");
    println!(
        "throughput: a burst of {n} revocations over {INTEGRATIONS} integrations, {runs} run(s); baseline = direct calls at the same concurrency, one pre-minted token, no journal"
    );
    let mut all: Vec<Vec<Figures>> = SCENARIOS.iter().map(|_| Vec::new()).collect();
    for run in 1..=runs {
        for (k, (s, figures)) in SCENARIOS.iter().zip(&mut all).enumerate() {
            if only.is_some_and(|o| o != k + 1) {
                continue;
            }
            let f = measure(*s, n).await;
            println!(
                "  run {run}  {:<50} baseline {:>7.0} calls/s (before {:.0}, after {:.0})  grantbridge {:>7.0} actions/s  ratio {:.2}  CPU per action: grantbridge {:.0} µs, sandbox+control plane {:.0} µs (baseline {:.0} µs)  journal {:.2} writes, {:.3} fsyncs per action  calls in flight on average: direct {:.1}, grantbridge {:.1}  peak calls per function {:?} (limit {})  peak RSS {} KiB (private {} KiB)  python peer {}",
                s.name,
                f.baseline,
                f.baseline_both.0,
                f.baseline_both.1,
                f.connector,
                f.ratio(),
                f.connector_cpu_us,
                f.bench_cpu_us,
                f.baseline_cpu_us,
                f.writes_per_action,
                f.fsyncs_per_action,
                f.baseline_in_flight,
                f.connector_in_flight,
                f.peaks,
                s.per_integration,
                f.connector_peak_kib,
                f.connector_anon_kib,
                f.peer
                    .map(|(r, kib, anon)| format!(
                        "{r:.0} actions/s, peak RSS {kib} KiB (private {anon} KiB)"
                    ))
                    .unwrap_or_else(
                        || "not run (pip install -r benches/peer/requirements.txt)".into()
                    )
            );
            figures.push(f);
        }
    }
    println!("median [min–max] over {runs} run(s):");
    for (s, figures) in SCENARIOS.iter().zip(&all) {
        if figures.is_empty() {
            continue;
        }
        let of = |pick: fn(&Figures) -> f64| figures.iter().map(pick).collect::<Vec<f64>>();
        println!("  {}", s.name);
        println!(
            "    baseline        {} calls/s (the faster of: before grantbridge {}, after {})",
            spread(&of(|f| f.baseline), 0),
            spread(&of(|f| f.baseline_both.0), 0),
            spread(&of(|f| f.baseline_both.1), 0)
        );
        println!(
            "    grantbridge     {} actions/s",
            spread(&of(|f| f.connector), 0)
        );
        println!("    ratio           {}", spread(&of(Figures::ratio), 2));
        println!(
            "    CPU per action  grantbridge {} µs; sandbox + control plane + upstream {} µs (per direct call: {} µs)",
            spread(&of(|f| f.connector_cpu_us), 0),
            spread(&of(|f| f.bench_cpu_us), 0),
            spread(&of(|f| f.baseline_cpu_us), 0)
        );
        println!(
            "    journal         {} writes per action, {} fsyncs per action",
            spread(&of(|f| f.writes_per_action), 2),
            spread(&of(|f| f.fsyncs_per_action), 3)
        );
        println!(
            "    calls in flight on average (the calls' durations summed over the burst's): direct {}, grantbridge {} (of {})",
            spread(&of(|f| f.baseline_in_flight), 1),
            spread(&of(|f| f.connector_in_flight), 1),
            s.per_integration * INTEGRATIONS
        );
        // The CPU the target ratio allows every process on this machine per
        // action, what the others spent of it, and how busy the cores were.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let budget = |f: &Figures| cores * 1e6 / (s.target * f.baseline);
        println!(
            "    CPU budget      at a ratio of {} every process may spend {} µs per action; the others spent {}, which left grantbridge {} µs; cores busy {} of {cores}",
            s.target,
            spread(&figures.iter().map(budget).collect::<Vec<f64>>(), 0),
            spread(&of(|f| f.bench_cpu_us), 0),
            spread(
                &figures
                    .iter()
                    .map(|f| budget(f) - f.bench_cpu_us)
                    .collect::<Vec<f64>>(),
                0
            ),
            spread(
                &of(|f| (f.connector_cpu_us + f.bench_cpu_us) * f.connector / 1e6),
                2
            )
        );
        let peers: Vec<(f64, u64, u64)> = figures.iter().filter_map(|f| f.peer).collect();
        if !peers.is_empty() {
            let gb_kib = of(|f| f.connector_peak_kib as f64);
            let gb_anon = of(|f| f.connector_anon_kib as f64);
            let peer_rate: Vec<f64> = peers.iter().map(|p| p.0).collect();
            let peer_kib: Vec<f64> = peers.iter().map(|p| p.1 as f64).collect();
            let peer_anon: Vec<f64> = peers.iter().map(|p| p.2 as f64).collect();
            let ratio = |pick: fn(&Figures, (f64, u64, u64)) -> f64| -> Vec<f64> {
                figures
                    .iter()
                    .filter_map(|f| f.peer.map(|p| pick(f, p)))
                    .collect()
            };
            let times = ratio(|f, p| f.connector / p.0);
            let memory = ratio(|f, p| f.connector_peak_kib as f64 / p.1 as f64);
            let private = ratio(|f, p| f.connector_anon_kib as f64 / p.2 as f64);
            println!(
                "    python peer     {} actions/s, peak RSS {} KiB, private {} KiB (grantbridge {} KiB, private {} KiB): grantbridge does {}x its throughput at {} its peak RSS, {} its private memory",
                spread(&peer_rate, 0),
                spread(&peer_kib, 0),
                spread(&peer_anon, 0),
                spread(&gb_kib, 0),
                spread(&gb_anon, 0),
                spread(&times, 1),
                spread(&memory, 2),
                spread(&private, 2)
            );
        }
        println!(
            "    peak calls per function {:?} (limit {})",
            figures.iter().map(|f| f.peaks.clone()).collect::<Vec<_>>(),
            s.per_integration
        );
    }
}

//! Throughput of the whole connector on a burst: 10,000 revocations (someone
//! left the company) across two integrations, leased from the simulated control
//! plane, invoked through the sandbox's authenticating front end, journaled and
//! reported. Baseline, same run: direct calls to the same functions at the same
//! concurrency with a pre-minted token and no journal. Prints figures and the
//! ratio, and the highest concurrency each function saw (the per-integration
//! limit at work). Run: `cargo bench --bench throughput [-- ACTIONS]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use grantbridge::app::Application;
use grantbridge::clock::Clock;
use grantbridge::config::Config;
use grantbridge::env::MapEnv;
use grantbridge_sandbox::daemon_config::{DaemonConfig, Integration};
use grantbridge_sandbox::{
    ControlPlane, ControlPlaneOptions, FunctionImpl, Sandbox, SandboxOptions,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SA: &str = "bench@sandbox-project.iam.gserviceaccount.com";
/// What a real revoke function spends per call.
const SERVICE_TIME: Duration = Duration::from_millis(5);
const PER_INTEGRATION: usize = 16;

/// A function upstream that counts calls in flight and remembers the peak.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

async fn upstream(gauge: Arc<Gauge>) -> url::Url {
    let app = Router::new().fallback(post(move || {
        let g = gauge.clone();
        async move {
            let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
            g.peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(SERVICE_TIME).await;
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
async fn baseline(
    sandbox: &Sandbox,
    functions: &[String],
    n: usize,
    concurrency: usize,
) -> Duration {
    let http = reqwest::Client::new();
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
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let r = http
                        .post(&f)
                        .bearer_auth(&t)
                        .json(&json!({"event_type": "revoke-access", "params": revoke(0)}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sandbox.create_service_account(SA);
    let key_file = dir.path().join("sa.json");
    std::fs::write(&key_file, sandbox.create_key(SA).json).unwrap();
    let gauges = [Arc::new(Gauge::default()), Arc::new(Gauge::default())];
    let mut functions = Vec::new();
    for (i, g) in gauges.iter().enumerate() {
        functions.push(sandbox.deploy_function(
            &format!("revoke-{i}"),
            FunctionImpl::Proxy(upstream(g.clone()).await),
            &[SA],
        ));
    }
    let concurrency = PER_INTEGRATION * functions.len();

    let base = baseline(&sandbox, &functions, n, concurrency).await;
    for g in &gauges {
        g.peak.store(0, Ordering::SeqCst);
    }

    let cp = ControlPlane::start(ControlPlaneOptions {
        connector_id: "bench".into(),
        tokens: vec!["t".into()],
        clock: grantbridge_sandbox::Clock::system(),
    })
    .await
    .unwrap();
    let config = functions.iter().enumerate().fold(
        DaemonConfig::new("bench")
            .instance_id("bench/0")
            .key_file_connection("c", &key_file)
            .control_plane(&cp.url(), "T")
            .set("control_plane.max_actions", 500)
            .set("control_plane.report_batch", 500)
            .journal(&dir.path().join("journal.db"))
            .set("engine.max_concurrency", 64)
            .set("engine.per_integration_concurrency", PER_INTEGRATION as i64),
        |config, (i, f)| {
            config.integration(
                &format!("db-{i}"),
                Integration::new("c", "sandbox-project", &format!("revoke-{i}"), f),
            )
        },
    );
    let config_path = dir.path().join("bench.toml");
    config.write_to(&config_path).unwrap();
    let env = MapEnv::new().with("T", "t");
    let app = Application::build(
        Config::load(&config_path, &env).unwrap(),
        &env,
        Clock::system(),
    )
    .await
    .unwrap();
    let journal = app.engine().journal().clone();
    cp.enqueue_many((0..n).map(|i| json!({"id": format!("rev-{i}"), "integration": format!("db-{}", i % 2), "event_type": "revoke-access", "params": revoke(i)})).collect());

    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let results = cp.wait_for_results(n, Duration::from_secs(600)).await;
    let through = started.elapsed();
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(results.len(), n, "every action has a result");
    let failed = results.values().filter(|r| !r.parsed.succeeded()).count();
    let stats = journal.stats();

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "burst of {n} revocations over {} integrations, function service time {SERVICE_TIME:?}, {PER_INTEGRATION} concurrent calls per integration",
        functions.len()
    );
    println!(
        "  baseline  direct calls, {concurrency} at a time, one token, no journal: {:>8.0} calls/s  ({:.2} s)",
        rate(base),
        base.as_secs_f64()
    );
    println!(
        "  grantbridge  lease → journal → invoke → journal → report:        {:>8.0} actions/s ({:.2} s)",
        rate(through),
        through.as_secs_f64()
    );
    println!(
        "  ratio grantbridge / baseline: {:.2}",
        rate(through) / rate(base)
    );
    println!(
        "  peak concurrent calls per function: {:?} (limit {PER_INTEGRATION})",
        gauges
            .iter()
            .map(|g| g.peak.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    );
    println!(
        "  journal: {} writes in {} transactions (group commit: {:.1} writes per fsync)",
        stats.writes,
        stats.transactions,
        stats.writes as f64 / stats.transactions.max(1) as f64
    );
    println!(
        "  failed results: {failed}; duplicate reports: {}",
        results.values().map(|r| r.reports - 1).sum::<u32>()
    );
}

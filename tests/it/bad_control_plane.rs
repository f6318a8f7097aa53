//! A control plane that misbehaves: it is trusted to send actions, not to
//! exhaust the connector. Each scenario serves one kind of bad lease answer
//! to a `grantbridge run` child, then a good one, and checks that the
//! connector stayed small (peak RSS), said what was wrong in the log, never
//! followed the control plane anywhere, and went on serving.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::helpers::{action, spawn_env};

const WAIT: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bad {
    /// A 100 MB answer.
    Huge,
    /// Not JSON at all.
    Malformed,
    /// 200 with an HTML page.
    Html,
    /// A redirect to another server.
    Redirect,
    /// One byte a second, for ever.
    Trickle,
    /// Good actions, and one whose params nest 10,000 levels deep.
    Deep,
    /// Every extend answered 409, for actions it never leased.
    ExtendConflict,
}

#[derive(Default)]
struct Plane {
    bad: Mutex<Option<Bad>>,
    /// Lease calls answered badly.
    bad_answers: AtomicUsize,
    /// Actions still to hand out when answering well.
    queue: Mutex<Vec<Value>>,
    results: Mutex<Vec<Value>>,
    extends: AtomicUsize,
    trap: String,
}

/// `a` with a 3 s lease (extended while it runs).
fn leased(mut a: Value) -> Value {
    let expires =
        grantbridge::action::rfc3339(std::time::SystemTime::now() + Duration::from_secs(3));
    a["lease"] =
        json!({"token": format!("t-{}", a["id"].as_str().unwrap()), "expires_at": expires});
    a
}

async fn lease(State(p): State<Arc<Plane>>) -> Response {
    let bad = *p.bad.lock().unwrap();
    let good = |p: &Plane| {
        let actions: Vec<Value> = p.queue.lock().unwrap().drain(..).map(leased).collect();
        if actions.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
        axum::Json(json!({"actions": actions})).into_response()
    };
    let Some(bad) = bad.filter(|b| *b != Bad::ExtendConflict) else {
        return good(&p);
    };
    p.bad_answers.fetch_add(1, Ordering::SeqCst);
    match bad {
        Bad::Huge => {
            // `{"actions":[` and then 100 MB of spaces, streamed.
            let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
            let head = bytes::Bytes::from_static(b"{\"actions\":[");
            let body = futures_util::stream::iter(
                std::iter::once(head)
                    .chain((0..100).map(move |_| chunk.clone()))
                    .map(Ok::<_, std::io::Error>),
            );
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(body),
            )
                .into_response()
        }
        Bad::Malformed => (
            [(header::CONTENT_TYPE, "application/json")],
            "{\"actions\": [{\"id\": ",
        )
            .into_response(),
        Bad::Html => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>Welcome to nginx!</h1></body></html>",
        )
            .into_response(),
        Bad::Redirect => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, p.trap.clone())],
        )
            .into_response(),
        Bad::Trickle => {
            let body = futures_util::stream::unfold(0u8, |n| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")),
                    n.wrapping_add(1),
                ))
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(body),
            )
                .into_response()
        }
        Bad::Deep => {
            let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
            let mut poisoned = leased(action("deep-1", "orders-db"));
            poisoned["params"]["nested"] = json!("PLACEHOLDER");
            let poisoned = poisoned.to_string().replace("\"PLACEHOLDER\"", &deep);
            let good: Vec<String> = ["deep-ok-1", "deep-ok-2"]
                .iter()
                .map(|id| leased(action(id, "orders-db")).to_string())
                .collect();
            *p.bad.lock().unwrap() = None; // once
            (
                [(header::CONTENT_TYPE, "application/json")],
                format!("{{\"actions\":[{},{poisoned},{}]}}", good[0], good[1]),
            )
                .into_response()
        }
        Bad::ExtendConflict => unreachable!(),
    }
}

async fn results(State(p): State<Arc<Plane>>, axum::Json(body): axum::Json<Value>) -> Response {
    let items = body["results"].as_array().cloned().unwrap_or_default();
    let ids: Vec<Value> = items.iter().map(|r| r["action_id"].clone()).collect();
    p.results.lock().unwrap().extend(items);
    axum::Json(json!({"accepted": ids, "rejected": []})).into_response()
}

async fn extend(State(p): State<Arc<Plane>>) -> Response {
    p.extends.fetch_add(1, Ordering::SeqCst);
    if *p.bad.lock().unwrap() == Some(Bad::ExtendConflict) {
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({"error": "lease_lost", "message": "no such lease"})),
        )
            .into_response();
    }
    let expires =
        grantbridge::action::rfc3339(std::time::SystemTime::now() + Duration::from_secs(60));
    axum::Json(json!({"expires_at": expires})).into_response()
}

/// What a scenario left behind.
struct Run {
    log: String,
    results: Vec<Value>,
    peak_rss_kib: u64,
    trap_hits: usize,
    plane: Arc<Plane>,
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Serves `bad` until it was answered `times` times, then answers well with
/// `after` queued; returns once all of `expect` have results.
async fn scenario(bad: Bad, times: usize, after: &[&str], expect: &[&str], slow_ms: u64) -> Run {
    let env = spawn_env().await;
    env.deploy("grant-db");
    if slow_ms > 0 {
        env.sandbox.set_faults(
            "grant-db",
            grantbridge_sandbox::Faults {
                latency: Duration::from_millis(slow_ms),
                ..Default::default()
            },
        );
    }
    // Anything the connector is redirected to lands here, and is counted.
    let trap_hits = Arc::new(AtomicUsize::new(0));
    let trap = axum::Router::new().fallback({
        let hits = trap_hits.clone();
        move || async move {
            hits.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({"actions": []}))
        }
    });
    let trap_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!(
        "http://{}/v1/connectors/test/lease",
        trap_listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(trap_listener, trap).await });

    let plane = Arc::new(Plane {
        bad: Mutex::new(Some(bad)),
        trap: trap_url,
        ..Plane::default()
    });
    let app = axum::Router::new()
        .route("/v1/connectors/test/lease", post(lease))
        .route("/v1/connectors/test/results", post(results))
        .route("/v1/connectors/test/actions/{id}/extend", post(extend))
        .fallback(|| async { axum::Json(json!({})) })
        .with_state(plane.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    if bad == Bad::Deep || bad == Bad::ExtendConflict {
        plane
            .queue
            .lock()
            .unwrap()
            .extend(after.iter().map(|id| action(id, "orders-db")));
    }
    let config = crate::helpers::TestEnv::config(&env, &[("orders-db", "grant-db")])
        .instance_id("it-0/0001")
        .control_plane(&url, "CP_TOKEN")
        .set("control_plane.wait", "1s")
        .set("control_plane.lease", "2s")
        .journal(&env.dir.path().join("journal.db"))
        .admin();
    let (mut child, log) = env.spawn_run(&config, "bad-cp", &["--log-format", "json"]);
    let deadline = Instant::now() + WAIT;
    if bad != Bad::Deep && bad != Bad::ExtendConflict {
        while plane.bad_answers.load(Ordering::SeqCst) < times {
            assert!(
                Instant::now() < deadline,
                "{bad:?}: the connector stopped leasing:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Now a good control plane: the connector goes on serving.
        *plane.bad.lock().unwrap() = None;
        plane
            .queue
            .lock()
            .unwrap()
            .extend(after.iter().map(|id| action(id, "orders-db")));
    }
    loop {
        let done: Vec<String> = plane
            .results
            .lock()
            .unwrap()
            .iter()
            .map(|r| r["action_id"].as_str().unwrap().to_owned())
            .collect();
        if expect.iter().all(|id| done.iter().any(|d| d == id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{bad:?}: no results for {expect:?}; got {done:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak_rss_kib = peak_rss_kib(child.id().unwrap());
    child.kill().await.unwrap();
    let results = plane.results.lock().unwrap().clone();
    Run {
        log: std::fs::read_to_string(log).unwrap(),
        results,
        peak_rss_kib,
        trap_hits: trap_hits.load(Ordering::SeqCst),
        plane,
    }
}

fn logged(run: &Run, needle: &str) -> usize {
    run.log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.to_string().contains(needle))
        .count()
}

fn succeeded(run: &Run, id: &str) -> bool {
    run.results
        .iter()
        .any(|r| r["action_id"] == id && r["outcome"] == "succeeded")
}

#[tokio::test]
async fn a_100_mb_lease_answer_is_cut_at_the_limit() {
    let run = scenario(Bad::Huge, 2, &["after-huge"], &["after-huge"], 0).await;
    println!("100 MB lease answers: peak RSS {} KiB", run.peak_rss_kib);
    assert!(logged(&run, "cannot lease actions") >= 1, "{}", run.log);
    assert!(
        logged(&run, "MiB") >= 1 || logged(&run, "limit") >= 1,
        "the log names the limit:\n{}",
        run.log
    );
    // The answer is read up to its 32 MiB limit, never whole.
    assert!(
        run.peak_rss_kib < 90 * 1024,
        "peak RSS {} KiB",
        run.peak_rss_kib
    );
    assert!(succeeded(&run, "after-huge"));
}

#[tokio::test]
async fn malformed_json_and_an_html_page_are_protocol_errors() {
    for bad in [Bad::Malformed, Bad::Html] {
        let run = scenario(bad, 2, &["after-1"], &["after-1"], 0).await;
        assert!(
            logged(&run, "lease answer is not {\\\"actions\\\":[...]}") >= 1,
            "{bad:?}:\n{}",
            run.log
        );
        assert!(succeeded(&run, "after-1"), "{bad:?}");
    }
}

#[tokio::test]
async fn a_redirect_is_never_followed() {
    let run = scenario(Bad::Redirect, 3, &["after-1"], &["after-1"], 0).await;
    assert_eq!(
        run.trap_hits, 0,
        "the connector followed the control plane's redirect"
    );
    assert!(logged(&run, "lease answered HTTP 307") >= 1, "{}", run.log);
    assert!(succeeded(&run, "after-1"));
}

#[tokio::test]
async fn a_trickling_answer_times_out_and_leasing_goes_on() {
    let run = scenario(Bad::Trickle, 1, &["after-1"], &["after-1"], 0).await;
    assert!(logged(&run, "cannot lease actions") >= 1, "{}", run.log);
    assert!(succeeded(&run, "after-1"));
}

#[tokio::test]
async fn one_action_nested_10_000_deep_fails_alone() {
    let run = scenario(Bad::Deep, 1, &[], &["deep-ok-1", "deep-ok-2", "deep-1"], 0).await;
    assert!(succeeded(&run, "deep-ok-1") && succeeded(&run, "deep-ok-2"));
    let deep = run
        .results
        .iter()
        .find(|r| r["action_id"] == "deep-1")
        .unwrap();
    assert_eq!(deep["outcome"], "failed");
    assert_eq!(deep["error"]["code"], "invalid_action", "{deep}");
    assert!(
        deep["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nests deeper"),
        "{deep}"
    );
}

#[tokio::test]
async fn extends_refused_with_409_do_not_stop_the_action() {
    // A 3 s function under a 2 s lease: the connector extends, the control
    // plane answers 409 for leases it never granted.
    let run = scenario(Bad::ExtendConflict, 0, &["slow-1"], &["slow-1"], 3000).await;
    assert!(
        run.plane.extends.load(Ordering::SeqCst) >= 1,
        "never extended"
    );
    assert!(logged(&run, "lease lost") >= 1, "{}", run.log);
    assert!(
        succeeded(&run, "slow-1"),
        "the action finished and its result was reported"
    );
}

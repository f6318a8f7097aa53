//! Traces exported over OTLP/HTTP to a real receiver that decodes them with
//! the OpenTelemetry project's protobuf definitions (tests/interop/otlp_receiver.py):
//! the span tree of an action, a pushed `traceparent` as its parent, and the
//! function's `traceparent` naming the attempt span.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::helpers::{PUSH_SECRET, action, free_port, spawn_control_plane, spawn_env};

const WAIT: Duration = Duration::from_secs(60);
const PUSHED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PUSHED_PARENT: &str = "b7ad6b7169203331";

/// The receiver as a child process, and the port it listens on.
async fn spawn_receiver(out: &Path) -> (tokio::process::Child, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/otlp_receiver.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the OTLP receiver");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the receiver starts")
        .unwrap()
        .expect("the receiver prints its port (is opentelemetry-proto installed? pip install -r tests/interop/requirements.txt)");
    let port = first
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected receiver output: {first}"));
    (child, port)
}

/// The spans of one trace by span id.
fn by_id(spans: &[Value]) -> HashMap<&str, &Value> {
    spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect()
}

fn action_span<'a>(spans: &'a [Value], id: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == "action" && s["attributes"]["action_id"] == id)
        .unwrap_or_else(|| panic!("no action span for {id} in {spans:#?}"))
}

fn children<'a>(spans: &'a [Value], parent: &Value, name: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["name"] == name && s["parent_span_id"] == parent["span_id"])
        .collect()
}

#[tokio::test]
async fn exported_traces_join_the_pushers_trace_and_the_functions() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let push_port = free_port();
    let config = env
        .with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")]))
        .set("push.listen", format!("127.0.0.1:{push_port}"));
    let out = env.dir.path().join("spans.jsonl");
    let (_receiver, port) = spawn_receiver(&out).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let (mut daemon, log) = env.spawn_run_with(
        &config,
        "traced",
        &["--log-format", "json", "--log-level", "debug"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "grantbridge-it"),
        ],
    );

    // A push carrying the pusher's trace context, and an action from a lease.
    let pusher =
        grantbridge_sandbox::pusher::Pusher::new(([127, 0, 0, 1], push_port).into(), PUSH_SECRET);
    let traceparent = format!("00-{PUSHED_TRACE}-{PUSHED_PARENT}-01");
    let body = action("traced-1", "orders-db").to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match pusher
            .push_with_headers(&body, &[("traceparent", traceparent.as_str())])
            .await
        {
            Ok(r) if r.status().is_success() => break,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("the push was not accepted: {other:?}"),
        }
    }
    cp.enqueue(action("polled-1", "orders-db"));
    let results = cp.wait_for_results(2, WAIT).await;
    assert!(results["traced-1"].parsed.succeeded());
    assert!(results["polled-1"].parsed.succeeded());
    // SIGTERM: the daemon flushes its spans before it exits.
    let pid = daemon.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(daemon.wait().await.unwrap().success());

    let spans: Vec<Value> = std::fs::read_to_string(&out)
        .expect("the receiver got spans")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for s in &spans {
        assert_eq!(s["service"], "grantbridge-it", "{s}");
        assert_eq!(s["content_type"], "application/x-protobuf", "{s}");
        assert!(s["end"].as_u64() >= s["start"].as_u64(), "{s}");
    }
    let ids = by_id(&spans);
    let calls = env.sandbox.invocations("grant-db");
    let log = std::fs::read_to_string(log).unwrap();
    let log: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();

    for (id, trace) in [
        ("traced-1", PUSHED_TRACE.to_owned()),
        ("polled-1", grantbridge::function::trace_id_for("polled-1")),
    ] {
        let root = action_span(&spans, id);
        assert_eq!(root["trace_id"], trace.as_str(), "{root}");
        assert_eq!(root["attributes"]["integration"], "orders-db");
        assert_eq!(root["attributes"]["event_type"], "revoke-access");
        if id == "traced-1" {
            // The pushed traceparent is the action span's parent.
            assert_eq!(root["parent_span_id"], PUSHED_PARENT, "{root}");
        } else {
            assert_eq!(
                root["parent_span_id"], "",
                "a polled action is a root: {root}"
            );
        }
        // Every span of the action is in its trace and hangs under its span.
        let mine: Vec<Value> = spans
            .iter()
            .filter(|s| s["trace_id"] == trace.as_str())
            .cloned()
            .collect();
        for s in &mine {
            let mut at: &Value = s;
            while at["span_id"] != root["span_id"] {
                at = ids
                    .get(at["parent_span_id"].as_str().unwrap())
                    .copied()
                    .unwrap_or_else(|| panic!("{s} does not hang under the action span"));
            }
        }
        // One attempt; the function's traceparent names it.
        let attempts = children(&mine, root, "attempt");
        assert_eq!(attempts.len(), 1, "{mine:#?}");
        let attempt = attempts[0];
        assert_eq!(attempt["attributes"]["http.response.status_code"], 200);
        let call = calls
            .iter()
            .find(|c| c.idempotency_key.as_deref() == Some(id))
            .expect("the function was called");
        assert_eq!(
            call.traceparent.as_deref(),
            Some(format!("00-{trace}-{}-01", attempt["span_id"].as_str().unwrap()).as_str())
        );
        // Its log lines carry the same trace and attempt span.
        let line = log
            .iter()
            .find(|l| l["message"] == "function attempt" && l["action_id"] == id)
            .expect("a log line for the attempt");
        assert_eq!(line["trace_id"], trace.as_str());
        assert_eq!(line["span_id"], attempt["span_id"]);
        // The journal writes of the action, and the report of its result.
        let mut ops: Vec<&str> = children(&mine, root, "journal write")
            .iter()
            .map(|s| s["attributes"]["op"].as_str().unwrap())
            .collect();
        ops.sort_unstable();
        for op in ["complete", "record"] {
            assert!(ops.contains(&op), "no `{op}` journal write in {ops:?}");
        }
        assert_eq!(children(&mine, root, "report").len(), 1, "{mine:#?}");
    }
    // The first attempt needed a token: its mint is a span under that attempt.
    let mint = spans
        .iter()
        .find(|s| s["name"] == "token mint")
        .expect("a token mint span");
    assert_eq!(
        ids[mint["parent_span_id"].as_str().unwrap()]["name"],
        "attempt"
    );
    assert_eq!(
        mint["attributes"]["audience"]
            .as_str()
            .map(|a| a.starts_with("http")),
        Some(true)
    );
}

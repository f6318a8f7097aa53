//! The connector attacked on its boundaries (issue: security): each test is a
//! regression test for one finding, run against the real daemon and
//! listeners. Denial-of-service bounds are generous, for a noisy 2-core machine.

use std::time::Duration;

use grantbridge_sandbox::Faults;
use serde_json::{Value, json};

use crate::helpers::{RunningDaemon, action, free_port, spawn_control_plane, spawn_env};

const WAIT: Duration = Duration::from_secs(60);

/// A function answers valid JSON nested 126 levels deep. It is stored as the
/// text it was, every query answers, and later results still reach the
/// control plane.
#[tokio::test]
async fn a_deeply_nested_answer_never_poisons_the_journal() {
    let env = spawn_env().await;
    env.deploy("deep");
    env.deploy("grant-db");
    let deep = format!(
        "{{\"status\":\"ok\",\"x\":{}1{}}}",
        "[".repeat(125),
        "]".repeat(125)
    );
    env.sandbox.set_faults(
        "deep",
        Faults {
            respond_next: (1, 200, deep.clone()),
            ..Default::default()
        },
    );
    let cp = spawn_control_plane().await;
    let daemon = RunningDaemon::start(
        &env,
        &env.with_push(env.daemon_config(&cp, &[("deep", "deep"), ("orders-db", "grant-db")])),
    )
    .await;

    let answer = daemon
        .signed(
            "POST",
            "/v1/actions?wait=20",
            &action("deep-1", "deep").to_string(),
            0,
        )
        .await;
    assert_eq!(answer.status(), 200);
    let result: Value = answer.json().await.unwrap();
    assert_eq!(result["outcome"], "succeeded", "{result}");
    assert_eq!(result["function"]["body"], Value::String(deep.clone()));

    let status = daemon.signed("GET", "/v1/actions/deep-1", "", 0).await;
    assert_eq!(status.status(), 200);
    let status: Value = status.json().await.unwrap();
    assert_eq!(status["result"]["function"]["body"], Value::String(deep));

    // The outbox keeps draining: a later poll action's result arrives too.
    cp.enqueue(action("after-1", "orders-db"));
    let results = cp.wait_for_results(2, WAIT).await;
    assert!(results["deep-1"].parsed.succeeded());
    assert!(results["after-1"].parsed.succeeded());
    let (code, body) = daemon.admin_get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    daemon.stop().await;
}

/// An action whose params nest past the limit is refused with a clear
/// reason, and nothing about it reaches a function.
#[tokio::test]
async fn params_nested_past_the_limit_are_refused() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let daemon = RunningDaemon::start(
        &env,
        &env.with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")])),
    )
    .await;
    let mut nested = json!(1);
    for _ in 0..100 {
        nested = json!([nested]);
    }
    let mut deep = action("deep-params", "orders-db");
    deep["params"]["x"] = nested;
    let r = daemon.push(&deep).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("nests deeper"));
    assert!(env.sandbox.invocations("grant-db").is_empty());
    daemon.stop().await;
}

// ---- Denial of service on the listeners ----

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw client: sends `prefix` (and nothing more), then reads until the
/// server closes the connection or `within` passes. What it read, and
/// whether the server closed it in time.
async fn send_and_wait_for_close(
    addr: SocketAddr,
    prefix: &[u8],
    within: Duration,
) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(prefix).await.expect("write");
    let mut read = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&read).into_owned(), closed)
}

/// Connections that send nothing, half a header, or half a body are closed
/// after the header or body timeout (a half body gets 408), while signed
/// pushes and /healthz keep working.
#[tokio::test]
async fn slow_clients_are_cut_off_and_the_listeners_keep_serving() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let config = env
        .with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")]))
        .set("push.header_timeout", "1s")
        .set("push.body_timeout", "1s");
    let daemon = RunningDaemon::start(&env, &config).await;
    let addr = daemon.push_addr.unwrap();
    // Well-formed signature headers pass the gate; the body never completes.
    let half_body: &'static [u8] = format!(
        "POST /v1/actions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nx-grantbridge-timestamp: {}\r\nx-grantbridge-signature: v1={}\r\n\r\n{{\"id\":",
        grantbridge_sandbox::Clock::system().unix_secs(),
        "00".repeat(32)
    )
    .into_bytes()
    .leak();
    let started = Instant::now();
    let slow: Vec<_> = (0..30)
        .map(|i| {
            let prefix: &'static [u8] = match i % 3 {
                0 => b"",
                1 => b"POST /v1/actions HTTP/1.1\r\nHost: x\r\nX-Gra",
                _ => half_body,
            };
            tokio::spawn(send_and_wait_for_close(
                addr,
                prefix,
                Duration::from_secs(15),
            ))
        })
        .collect();
    // While they hang on, the listeners serve.
    let (code, _) = daemon.admin_get("/healthz").await;
    assert_eq!(code, 200);
    assert_eq!(
        daemon.push(&action("during-1", "orders-db")).await.status(),
        202
    );
    for (i, task) in slow.into_iter().enumerate() {
        let (read, closed) = task.await.unwrap();
        assert!(closed, "connection {i} still open after 15 s");
        if i % 3 == 2 {
            assert!(read.starts_with("HTTP/1.1 408"), "{i}: {read}");
        }
    }
    let elapsed = started.elapsed();
    println!("30 slow connections closed within {elapsed:?} (timeouts 1 s)");
    assert!(elapsed < Duration::from_secs(15));
    assert_eq!(
        daemon.push(&action("after-1", "orders-db")).await.status(),
        202
    );
    daemon.stop().await;
}

/// Past `push.max_connections`, new connections are closed on arrival;
/// the admin listener has its own connections and keeps answering.
#[tokio::test]
async fn the_connection_cap_holds_and_health_still_answers() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let config = env
        .with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")]))
        .set("push.max_connections", 8)
        .set("push.header_timeout", "30s");
    let daemon = RunningDaemon::start(&env, &config).await;
    let addr = daemon.push_addr.unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Let the server take the eight before probing past them.
    let (code, _) = daemon.admin_get("/healthz").await;
    assert_eq!(code, 200);
    let mut closed_at_once = 0;
    for _ in 0..12 {
        let (_, closed) = send_and_wait_for_close(addr, b"", Duration::from_secs(2)).await;
        closed_at_once += usize::from(closed);
    }
    assert_eq!(closed_at_once, 12, "connections over the cap are closed");
    let started = Instant::now();
    let (code, _) = daemon.admin_get("/healthz").await;
    assert_eq!(code, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(held);
    // Slots free again: a signed push goes through.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match daemon
            .pusher()
            .send(
                "POST",
                "/v1/actions",
                &action("cap-1", "orders-db").to_string(),
                0,
            )
            .await
        {
            Ok(r) => {
                assert_eq!(r.status(), 202);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("no slot freed: {e}"),
        }
    }
    daemon.stop().await;
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `grantbridge run` under `ulimit -n 128`, with 140 connections that send
/// half a header and 100 that hold a body one byte short: it never runs
/// out of descriptors, /healthz and signed pushes keep working, and the
/// bodies it buffers stay within `push.max_buffered_bytes`.
#[tokio::test]
async fn under_a_low_descriptor_limit_and_held_bodies_the_daemon_stays_up_and_small() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let push_port = free_port();
    let admin_port = free_port();
    let config = env
        .with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")]))
        .set("push.listen", format!("127.0.0.1:{push_port}"))
        .set("admin.listen", format!("127.0.0.1:{admin_port}"))
        .set("push.max_body_bytes", 1024 * 1024)
        .set("push.max_buffered_bytes", 8 * 1024 * 1024)
        .set("push.header_timeout", "2s")
        .set("push.body_timeout", "30s");
    let path = env.dir.path().join("limits.toml");
    config.write_to(&path).unwrap();
    let log = env.dir.path().join("limits.log");
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 128 && exec {} --config {} --log-format json run",
            env!("CARGO_BIN_EXE_grantbridge"),
            path.display()
        ))
        .env("CP_TOKEN", crate::helpers::CP_TOKEN)
        .env("HOME", env.dir.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let push: SocketAddr = format!("127.0.0.1:{push_port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let health = || async move {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap()
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while health().await.is_err() {
        assert!(Instant::now() < deadline, "the daemon never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap();
    let idle_rss = rss_kib(pid);

    // 140 half headers: more than the descriptors the process has.
    let mut slow = Vec::new();
    for _ in 0..140 {
        let mut s = TcpStream::connect(push).await.unwrap();
        let _ = s
            .write_all(b"POST /v1/actions HTTP/1.1\r\nHost: x\r\n")
            .await;
        slow.push(s);
    }
    assert_eq!(health().await.expect("/healthz answers"), 200);
    drop(slow);

    // 100 bodies held one byte short of 1 MiB.
    let chunk = vec![b'x'; 64 * 1024];
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(push).await.unwrap();
        // Well-formed (not valid) signature headers: the body is read.
        let head = format!(
            "POST /v1/actions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nx-grantbridge-timestamp: {}\r\nx-grantbridge-signature: v1={}\r\n\r\n",
            1024 * 1024,
            grantbridge_sandbox::Clock::system().unix_secs(),
            "00".repeat(32)
        );
        if s.write_all(head.as_bytes()).await.is_ok() {
            for _ in 0..15 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = s.write_all(&chunk[..64 * 1024 - 1]).await;
        }
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded_rss = rss_kib(pid);
    assert_eq!(health().await.expect("/healthz answers"), 200);
    drop(held);

    // A signed push works again.
    let pusher = grantbridge_sandbox::pusher::Pusher::new(push, crate::helpers::PUSH_SECRET);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = pusher
            .send(
                "POST",
                "/v1/actions",
                &action("fd-1", "orders-db").to_string(),
                0,
            )
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status(), 202);
            break;
        }
        assert!(Instant::now() < deadline, "signed pushes never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grew_mib = loaded_rss.saturating_sub(idle_rss) / 1024;
    println!(
        "ulimit -n 128: idle RSS {} MiB, with 100 bodies held {} MiB (+{grew_mib} MiB; budget 8 MiB)",
        idle_rss / 1024,
        loaded_rss / 1024
    );
    assert!(grew_mib < 40, "RSS grew {grew_mib} MiB");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("lowering the connection limit"),
        "the caps were fitted to the descriptor limit"
    );
    child.kill().await.unwrap();
}

/// Unsigned requests with a 1 MB body and thousands of signature candidates
/// are refused at once, before their body is read, and do not slow /healthz.
#[tokio::test]
async fn signature_checks_cost_an_unauthenticated_client_nothing() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let daemon = RunningDaemon::start(
        &env,
        &env.with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")]))
            .set("push.max_body_bytes", 1024 * 1024),
    )
    .await;
    let addr = daemon.push_addr.unwrap();
    let ts = grantbridge_sandbox::Clock::system().unix_secs();
    let candidates = std::iter::repeat_n(format!("v1={}", "ab".repeat(32)), 6000)
        .collect::<Vec<_>>()
        .join(",");
    let few = std::iter::repeat_n(format!("v1={}", "ab".repeat(32)), 9)
        .collect::<Vec<_>>()
        .join(",");
    let started = Instant::now();
    let attacks: Vec<_> = [candidates.as_str(), few.as_str()]
        .into_iter()
        .cycle()
        .take(4)
        .map(|sig| {
            let head = format!(
                "POST /v1/actions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nx-grantbridge-timestamp: {ts}\r\nx-grantbridge-signature: {sig}\r\n\r\n"
            );
            tokio::spawn(send_and_wait_for_close(
                addr,
                head.into_bytes().leak(),
                Duration::from_secs(5),
            ))
        })
        .collect();
    let health_started = Instant::now();
    let (code, _) = daemon.admin_get("/healthz").await;
    let health_took = health_started.elapsed();
    assert_eq!(code, 200);
    for task in attacks {
        let (read, _) = task.await.unwrap();
        assert!(
            read.starts_with("HTTP/1.1 401") || read.starts_with("HTTP/1.1 431"),
            "{read}"
        );
    }
    let took = started.elapsed();
    println!("4 oversized unsigned requests refused in {took:?}; /healthz took {health_took:?}");
    assert!(took < Duration::from_secs(5));
    assert!(health_took < Duration::from_secs(2));
    daemon.stop().await;
}

/// The same signed bytes sent again (a captured request replayed within the
/// window) are answered from the journal without invoking again, and never
/// with the function's answer: no password a second time.
#[tokio::test]
async fn a_replayed_request_never_returns_the_password_again() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let daemon = RunningDaemon::start(
        &env,
        &env.with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")])),
    )
    .await;
    let addr = daemon.push_addr.unwrap();
    let body = json!({"id": "cred-1", "integration": "orders-db", "event_type": "create-credentials",
        "params": {"username": "mallory@example.com", "resource_type": "db", "resources": ["orders"]}})
    .to_string();
    let signed = |method: &str, path: &str, body: &str| {
        let ts = grantbridge_sandbox::Clock::system().unix_secs();
        let sig = grantbridge_sandbox::pusher::signature(
            crate::helpers::PUSH_SECRET,
            ts,
            method,
            path,
            body.as_bytes(),
        );
        let request = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("http://{addr}{path}"))
            .header("x-grantbridge-timestamp", ts.to_string())
            .header("x-grantbridge-signature", sig)
            .body(body.to_owned());
        move || request.try_clone().unwrap().send()
    };
    let post = signed("POST", "/v1/actions?wait=20", &body);
    let first: Value = post().await.unwrap().json().await.unwrap();
    let password = first["function"]["body"]["credentials"]["password"]
        .as_str()
        .expect("the first answer carries the password")
        .to_owned();
    let replay: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(replay["replayed"], true, "{replay}");
    assert_eq!(replay["outcome"], "succeeded");
    assert!(replay["function"]["body"].is_null());
    assert!(!replay.to_string().contains(&password));
    assert_eq!(env.sandbox.invocations("grant-db").len(), 1);

    // A status query replayed: the same.
    let get = signed("GET", "/v1/actions/cred-1", "");
    let fresh: Value = get().await.unwrap().json().await.unwrap();
    assert!(
        fresh.to_string().contains(&password),
        "a fresh signed query may see it"
    );
    let replayed: Value = get().await.unwrap().json().await.unwrap();
    assert_eq!(replayed["replayed"], true);
    assert!(!replayed.to_string().contains(&password));
    daemon.stop().await;
}

/// A function answers 500 with a body holding a password. The value is in
/// the reported result (the function's answer belongs there) and nowhere
/// else: not in the log at trace level, not in /readyz, not in heartbeats.
#[tokio::test]
async fn an_error_body_reaches_only_the_result() {
    let env = spawn_env().await;
    env.deploy("leaky");
    const SECRET: &str = "hunter2-LEAKED-0123456789";
    env.sandbox.set_faults(
        "leaky",
        Faults {
            respond_next: (
                10,
                500,
                json!({"error": "db down", "password": SECRET}).to_string(),
            ),
            ..Default::default()
        },
    );
    let cp = spawn_control_plane().await;
    let admin_port = free_port();
    let config = env
        .daemon_config(&cp, &[("leaky", "leaky")])
        .every_integration("max_attempts", 2)
        .set("admin.listen", format!("127.0.0.1:{admin_port}"));
    let (mut child, log) = env.spawn_run(
        &config,
        "leaky",
        &["--log-format", "json", "--log-level", "trace"],
    );
    cp.enqueue(action("leak-1", "leaky"));
    let results = cp.wait_for_results(1, WAIT).await;
    let reported = &results["leak-1"];
    assert_eq!(reported.parsed.error_code(), Some("function_unavailable"));
    assert!(
        reported.result.to_string().contains(SECRET),
        "the result keeps the body"
    );
    assert!(
        !reported
            .parsed
            .error
            .as_ref()
            .unwrap()
            .message
            .contains(SECRET)
    );
    // A heartbeat after the failure, then /readyz.
    let deadline = Instant::now() + WAIT;
    let heartbeat = loop {
        if let Some((hb, _)) = cp.heartbeats().remove("it-0/0001")
            && hb["integrations"][0]["status"] == "degraded"
        {
            break hb;
        }
        assert!(Instant::now() < deadline, "no heartbeat with the failure");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!heartbeat.to_string().contains(SECRET), "{heartbeat}");
    let readyz = reqwest::get(format!("http://127.0.0.1:{admin_port}/readyz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(readyz.contains("degraded"), "{readyz}");
    assert!(!readyz.contains(SECRET), "{readyz}");
    child.kill().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("action failed"), "the failure is logged");
    assert!(!text.contains(SECRET), "the log holds the secret");
}

/// Names a control plane sends with a newline, terminal escapes and a bidi
/// override never reach a log line or the audit trail raw, in either format.
#[tokio::test]
async fn hostile_names_are_escaped_in_every_log_format_and_the_audit_trail() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let hostile_user = "eve@example.com\n2026-12-01T00:00:00Z  INFO forged: all clear \u{1b}[31mRED\u{1b}]0;pwned\u{7} \u{202e}gnp.exe";
    for format in ["human", "json"] {
        let cp = spawn_control_plane().await;
        let name = format!("inject-{format}");
        let config = env
            .daemon_config(&cp, &[("orders-db", "grant-db")])
            .journal(&env.dir.path().join(format!("{name}.db")));
        let (mut child, log) = env.spawn_run(
            &config,
            &name,
            &["--log-format", format, "--log-level", "debug"],
        );
        let path = env.dir.path().join(format!("{name}.toml"));
        let mut grant = action(&format!("{format}-1"), "orders-db");
        grant["params"]["username"] = json!(hostile_user);
        cp.enqueue(grant);
        let mut unknown = action(&format!("{format}-2"), "payroll\n\u{1b}[2Jwiped");
        unknown["event_type"] = json!("grant\u{202e}");
        cp.enqueue(unknown);
        let results = cp.wait_for_results(2, WAIT).await;
        assert_eq!(results.len(), 2);
        child.kill().await.unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("eve@example.com"),
            "{format}: the user is logged"
        );
        for raw in ['\u{1b}', '\u{7}', '\u{202e}'] {
            assert!(
                !text.contains(raw),
                "{format}: raw {raw:?} in the log:\n{text}"
            );
        }
        for line in text.lines() {
            assert!(
                !line.starts_with("2026-12-01T00:00:00Z  INFO forged"),
                "{format}: forged line"
            );
            if format == "json" {
                serde_json::from_str::<Value>(line).expect("every line is one JSON object");
            }
        }

        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
            .arg("--config")
            .arg(&path)
            .args(["audit", "--json"])
            .env("CP_TOKEN", crate::helpers::CP_TOKEN)
            .output()
            .await
            .unwrap();
        let audit = String::from_utf8_lossy(&out.stdout);
        assert!(audit.contains("eve@example.com"), "{audit}");
        for raw in ['\u{1b}', '\u{7}', '\u{202e}'] {
            assert!(
                !audit.contains(raw),
                "raw {raw:?} in the audit trail: {audit}"
            );
        }
    }
}

/// A control plane that leases 2,000 actions when asked for a few: the
/// connector takes what it asked for and what fits, leaves the rest to lease
/// expiry, and never holds more than its queue.
#[tokio::test]
async fn a_lease_answer_is_held_to_what_was_asked() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    cp.ignore_max_actions(Some(2_000));
    cp.enqueue_many(
        (0..2_000)
            .map(|i| action(&format!("flood-{i}"), "orders-db"))
            .collect(),
    );
    let config = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("engine.queue_capacity", 100)
        .set("engine.max_concurrency", 4)
        .set("control_plane.lease", "5s");
    let daemon = RunningDaemon::start(&env, &config).await;
    let engine = daemon.engine.clone();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = tokio::spawn({
        let (engine, peak) = (engine.clone(), peak.clone());
        async move {
            loop {
                peak.fetch_max(engine.pending(), std::sync::atomic::Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        }
    });
    cp.wait_for_results(16, WAIT).await;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    println!("2,000 leased at once; peak actions held {peak} (queue 100, concurrency 4)");
    assert!(
        peak <= 8,
        "held {peak}: more than the 2 x concurrency asked for"
    );
    daemon.stop().await;
}

/// A lease answer of a million bad elements is summarised, not logged once
/// per element.
#[tokio::test]
async fn a_million_bad_lease_elements_make_one_log_line_per_answer() {
    use axum::routing::post;
    let env = spawn_env().await;
    env.deploy("grant-db");
    let answer = std::sync::Arc::new(format!("{{\"actions\":[{}0]}}", "0,".repeat(999_999)));
    let leases = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/v1/connectors/test/lease",
            post({
                let (answer, leases) = (answer.clone(), leases.clone());
                move || async move {
                    leases.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        answer.as_str().to_owned(),
                    )
                }
            }),
        )
        .fallback(|| async { axum::Json(json!({"accepted": [], "rejected": []})) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = crate::helpers::TestEnv::config(&env, &[("orders-db", "grant-db")])
        .instance_id("it-0/0001")
        .control_plane(&url, "CP_TOKEN")
        .journal(&env.dir.path().join("flood.db"))
        .admin();
    let (mut child, log) = env.spawn_run(&config, "flood", &["--log-format", "json"]);
    let deadline = Instant::now() + WAIT;
    while leases.load(std::sync::atomic::Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "the daemon stopped leasing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let errors = text.lines().filter(|l| l.contains("\"ERROR\"")).count();
    let served = leases.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "{served} lease answers of 1,000,000 bad elements: {errors} ERROR line(s), {} bytes of log",
        text.len()
    );
    assert!(
        errors <= served + 1,
        "{errors} ERROR lines for {served} answers"
    );
    assert!(text.len() < 200_000, "{} bytes of log", text.len());
}

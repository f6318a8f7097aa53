//! Interoperability with Google's own code: Python google-auth against the
//! sandbox (so passing against the sandbox means passing against Google), and a
//! function served by Google's Python functions-framework behind the sandbox's
//! front end, invoked by the `grantbridge invoke` binary.
//!
//! These need `pip install -r tests/interop/requirements.txt` (done by .ci/run).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use grantbridge_sandbox::FunctionImpl;

use crate::helpers::{SA, free_port, spawn_env};

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

#[tokio::test]
async fn google_auth_interoperates_with_the_sandbox_and_grantbridge_tokens() {
    let env = spawn_env().await;
    let info = env.sandbox.create_service_account(SA);
    env.sandbox.attach_metadata_account(Some(SA));
    let fn_url = env.deploy("py-fn");
    let google = env.services(&env.config(&[]));
    let ours = google.tokens.get("prod", &fn_url).await.unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/google_auth_interop.py");
    let out = tokio::process::Command::new(python())
        .arg(&script)
        .arg(&env.key_file)
        .arg(&fn_url)
        .arg(env.sandbox.pem_certs_url())
        .arg(env.sandbox.jwks_url())
        .arg(ours.expose())
        .env("GCE_METADATA_HOST", env.sandbox.metadata_host())
        .env("GCE_METADATA_IP", env.sandbox.metadata_host())
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "google-auth interop failed (pip install -r tests/interop/requirements.txt?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    // google-auth's own flow got a token the sandbox issued, and verified it both ways.
    assert_eq!(v["sa_claims"]["email"], SA);
    assert_eq!(v["sa_claims"]["sub"], info.unique_id.as_str());
    assert_eq!(v["sa_claims"]["iss"], "https://accounts.google.com");
    assert_eq!(v["sa_claims_jwks"]["aud"], fn_url.as_str());
    assert_eq!(v["invoke"], serde_json::json!([200, {"status": "ok"}]));
    // google-auth verifies what grantbridge minted, and checks its audience.
    assert_eq!(v["grantbridge_claims"]["email"], SA);
    assert_eq!(v["grantbridge_claims"]["aud"], fn_url.as_str());
    assert_eq!(v["wrong_audience_rejected"], true);
    assert_eq!(v["access_token_prefix"], "ya29.");
    assert_eq!(v["metadata_claims"]["sub"], info.unique_id.as_str());
    assert_eq!(v["metadata_access_prefix"], "ya29.");
    assert_eq!(v["metadata_email"], SA);
}

/// Waits until something accepts connections on `port`, or the child dies.
async fn wait_for_port(port: u16, child: &mut tokio::process::Child) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "functions-framework exited early ({status}); is it installed? pip install -r tests/interop/requirements.txt"
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "functions-framework did not start listening on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_functions_framework_function_behind_the_front_end_via_grantbridge_invoke() {
    let env = spawn_env().await;
    let port = free_port();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/functions/main.py");
    let mut ff = tokio::process::Command::new(python())
        .args([
            "-m",
            "functions_framework",
            "--target",
            "grant",
            "--port",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "--source",
        ])
        .arg(&source)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    wait_for_port(port, &mut ff).await;
    let upstream = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    env.sandbox
        .deploy_function("grant-py", FunctionImpl::Proxy(upstream), &[SA]);
    let config = env.write_config(&env.config(&[("py-db", "grant-py")]));

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .arg("--config")
        .arg(&config)
        .args([
            "invoke",
            "py-db",
            "grant-access",
            "-p",
            "grant_id=g-9",
            "-p",
            "username=bob@example.com",
            "-p",
            "resource_type=db",
            "-p",
            "resources=[\"orders\"]",
            "-p",
            "permission=read",
            "--idempotency-key",
            "act-py-1",
        ])
        .env("HOME", env.dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("HTTP 200 · succeeded · 1 attempt, answered in"),
        "{stdout}"
    );
    let json_start = stdout.find('{').unwrap();
    let body: serde_json::Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    let echo = &body["echo"];
    assert_eq!(echo["event_type"], "grant-access");
    assert_eq!(echo["username"], "bob@example.com");
    assert_eq!(
        echo["custom_parameters"],
        serde_json::json!({"param1": "x", "nested": {"a": 1}})
    );
    assert_eq!(echo["idempotency_key"], "act-py-1");
    assert_eq!(echo["authorized"], true);
    assert!(echo["traceparent"].as_str().unwrap().starts_with("00-"));
    assert!(
        echo["user_agent"]
            .as_str()
            .unwrap()
            .starts_with("grantbridge/")
    );
    assert_eq!(env.sandbox.invocations("grant-py").len(), 1);
}

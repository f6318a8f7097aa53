//! The shipped packaging as a stranger uses it: the systemd unit on a VM, the
//! admin commands from a plain shell, and secrets rotated by Kubernetes'
//! symlink swap without a SIGHUP.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use grantbridge_sandbox::daemon_config::DaemonConfig;
use grantbridge_sandbox::pusher::Pusher;

use crate::helpers::{
    CP_TOKEN, PUSH_SECRET, SA, action, free_port, spawn_control_plane, spawn_env, wait_for_log,
};

const WAIT: Duration = Duration::from_secs(60);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The `Environment=` assignments of the shipped unit, `%d` (the credentials
/// directory) expanded to `credentials`.
fn unit_environment(credentials: &Path) -> Vec<(String, String)> {
    let unit = std::fs::read_to_string(repo("deploy/systemd/grantbridge.service")).unwrap();
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|assignment| {
            let (k, v) = assignment.split_once('=').expect("NAME=value");
            (
                k.to_owned(),
                v.replace("%d", &credentials.display().to_string()),
            )
        })
        .collect()
}

/// `grantbridge ARGS` from a plain shell: only HOME and PATH, none of the
/// unit's environment.
async fn shell(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .args(args)
        .env_clear()
        .env("HOME", dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The VM path of docs/deployment.md: the shipped `grantbridge.toml` (a GCE
/// VM's metadata server, no key) run with exactly the shipped unit's
/// environment (the token from the credentials directory), then `audit` and
/// `check --offline` from a shell that has neither the token nor the unit's
/// variables. Only what stands in for Google and the network differs from the
/// shipped file: the sandbox's metadata server, function URL and control
/// plane (and its connector id), and a journal in the temp dir.
#[tokio::test]
async fn the_vm_path_runs_the_shipped_unit_and_its_admin_commands_need_no_secret() {
    let env = spawn_env().await;
    let function_url = env.deploy("grant-orders-db");
    env.sandbox.attach_metadata_account(Some(SA));
    let cp = spawn_control_plane().await;

    let credentials = env.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("connector-token"), CP_TOKEN).unwrap();
    let unit_env = unit_environment(&credentials);
    assert_eq!(
        unit_env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["GRANTBRIDGE__CONTROL_PLANE__TOKEN_FILE"],
        "the unit overrides the token file only: no variable creates a connection"
    );

    let journal = env.dir.path().join("journal.db");
    let shipped = std::fs::read_to_string(repo("deploy/systemd/grantbridge.toml")).unwrap();
    let config = DaemonConfig::parse(&shipped)
        .unwrap()
        .set("connector_id", "test")
        .set("http.allow_insecure_loopback", true)
        .set("connections.gce.metadata_host", env.sandbox.metadata_host())
        .set("integrations.orders-db.url", function_url.as_str())
        .set("control_plane.url", cp.url())
        .set("journal.path", journal.display().to_string())
        .set("engine.shutdown_grace", "2s")
        .set("admin.listen", "127.0.0.1:0");
    let path = env.dir.path().join("grantbridge.toml");
    config.write_to(&path).unwrap();
    let config_arg = path.display().to_string();

    let log = env.dir.path().join("vm.log");
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .args(["--config", &config_arg, "--log-format", "json", "run"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(unit_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    cp.enqueue(action("vm-1", "orders-db"));
    let results = cp.wait_for_results(1, WAIT).await;
    assert!(
        results["vm-1"].parsed.succeeded(),
        "{:?}\n{}",
        results["vm-1"].parsed,
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // From a plain shell, while the daemon runs: no token, no unit variables.
    let audit = shell(
        env.dir.path(),
        &["--config", &config_arg, "audit", "--json"],
    )
    .await;
    assert!(audit.status.success(), "{}", text(&audit));
    assert!(text(&audit).contains("vm-1"), "{}", text(&audit));
    let check = shell(
        env.dir.path(),
        &["--config", &config_arg, "check", "--offline"],
    )
    .await;
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("control_plane.token_env: not checked here"),
        "{}",
        text(&check)
    );
    // `check` (docs/gcp-setup.md's step) mints through the metadata server
    // from the same shell: it never calls the control plane, so the token it
    // cannot read is a note, not a failure.
    let check = shell(env.dir.path(), &["--config", &config_arg, "check"]).await;
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("ok    integration orders-db: ID token")
            && text(&check).contains("GRANTBRIDGE_CONNECTOR_TOKEN is not set"),
        "{}",
        text(&check)
    );
    // `run` needs it, and says which.
    let run = shell(env.dir.path(), &["--config", &config_arg, "run"]).await;
    assert!(!run.status.success());
    assert!(
        text(&run).contains(
            "control_plane.token_env: environment variable GRANTBRIDGE_CONNECTOR_TOKEN is not set"
        ),
        "{}",
        text(&run)
    );
    daemon.kill().await.unwrap();
}

/// A Kubernetes Secret volume update: the file is a symlink through `..data`,
/// and the kubelet swaps `..data` to a new directory atomically. The daemon
/// sees it within `[reload] interval` and rotates the push secret, no SIGHUP.
#[tokio::test]
async fn a_secret_swapped_like_a_kubernetes_volume_is_reloaded_without_sighup() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let mount = env.dir.path().join("push-secrets");
    let generation = |name: &str, secret: &str| {
        let dir = mount.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("push-secret-1"), secret).unwrap();
    };
    generation("..2026_12_01_a", PUSH_SECRET);
    std::os::unix::fs::symlink("..2026_12_01_a", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/push-secret-1", mount.join("push-secret-1")).unwrap();

    let port = free_port();
    let config = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("control_plane.poll", false)
        .set("push.listen", format!("127.0.0.1:{port}"))
        .set(
            "push.secret_files",
            vec![mount.join("push-secret-1").display().to_string()],
        )
        .set("reload.interval", "1s");
    let (mut child, log) = env.spawn_run(&config, "watch", &["--log-format", "json"]);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let old = Pusher::new(addr, PUSH_SECRET);
    const NEXT: &str = "the-rotated-push-secret-0123456789";
    let next = Pusher::new(addr, NEXT);
    let body = |id: &str| action(id, "orders-db").to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    while old
        .send("POST", "/v1/actions", &body("w-1"), 0)
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(202)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the push listener never accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The kubelet's swap: a new generation, `..data` replaced by rename(2).
    generation("..2026_12_01_b", NEXT);
    std::os::unix::fs::symlink("..2026_12_01_b", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(mount.join("..2026_12_01_a")).unwrap();

    wait_for_log(&log, "configuration reloaded", 1).await;
    let text = wait_for_log(&log, "a configuration file changed; reloading", 1).await;
    assert!(text.contains("push-secret-1"), "the log names the file");
    let status = |r: Result<reqwest::Response, _>| r.map(|r| r.status().as_u16()).ok();
    assert_eq!(
        status(next.send("POST", "/v1/actions", &body("w-2"), 0).await),
        Some(202)
    );
    assert_eq!(
        status(old.send("POST", "/v1/actions", &body("w-3"), 0).await),
        Some(401)
    );
    child.kill().await.unwrap();
}

/// An HTTPS server on 127.0.0.1 whose certificate a private CA signed: its
/// address and the CA's PEM. Each connection gets one `200 {}` answer.
async fn private_ca_server() -> (std::net::SocketAddr, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "grantbridge test private CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0; 64 * 1024];
                let mut read = 0;
                // The request head, then as much body as it announced.
                loop {
                    let Ok(n) = tls.read(&mut buf[read..]).await else {
                        return;
                    };
                    read += n;
                    let text = String::from_utf8_lossy(&buf[..read]).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if read >= end + 4 + length || n == 0 {
                            break;
                        }
                    }
                    if n == 0 {
                        return;
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, ca_cert.pem())
}

/// A function behind a private CA: the error says the certificate is not
/// trusted and why, in the error itself; with `SSL_CERT_FILE` naming a bundle
/// that holds the CA (what docs/operations.md says to do) the call goes through.
#[tokio::test]
async fn a_private_ca_is_named_in_the_error_and_trusted_through_ssl_cert_file() {
    let env = spawn_env().await;
    let (addr, ca_pem) = private_ca_server().await;
    let url = format!("https://{addr}/grant-internal");
    let config = env.config(&[]).integration(
        "internal",
        grantbridge_sandbox::daemon_config::Integration::new(
            "prod",
            "sandbox-project",
            "grant-internal",
            &url,
        ),
    );
    let path = env.write_config(&config);
    let bundle = env.dir.path().join("ca-bundle.pem");
    std::fs::write(&bundle, &ca_pem).unwrap();
    let invoke = |cert_file: Option<&Path>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"));
        command
            .args([
                "--config",
                path.to_str().unwrap(),
                "invoke",
                "internal",
                "get-status",
            ])
            .env("HOME", env.dir.path())
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        if let Some(file) = cert_file {
            command.env("SSL_CERT_FILE", file);
        }
        command.output()
    };
    let untrusted = invoke(None).await.unwrap();
    assert!(!untrusted.status.success());
    assert!(
        text(&untrusted).contains("TLS: certificate not trusted (unknown issuer)"),
        "{}",
        text(&untrusted)
    );
    let trusted = invoke(Some(&bundle)).await.unwrap();
    assert!(text(&trusted).starts_with("HTTP 200"), "{}", text(&trusted));
}

/// Google's front end speaks HTTP/2 with a client that offers it over TLS:
/// grantbridge does (ALPN), so that is how it calls functions in production.
/// The sandbox's TLS front end shows the call arrive over HTTP/2, with the
/// token minted for the URL called, the JSON body and the Idempotency-Key.
#[tokio::test]
async fn functions_behind_a_tls_front_end_are_called_over_http2() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let tls = env.sandbox.functions_tls().await.unwrap();
    let url = tls.function_url("grant-db");
    let config = env.config(&[]).integration(
        "orders-db",
        grantbridge_sandbox::daemon_config::Integration::new(
            "prod",
            "sandbox-project",
            "grant-db",
            &url,
        ),
    );
    let path = env.write_config(&config);
    let bundle = env.dir.path().join("front-end-ca.pem");
    std::fs::write(&bundle, &tls.ca_pem).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .args([
            "--config",
            path.to_str().unwrap(),
            "invoke",
            "orders-db",
            "get-status",
        ])
        .env("HOME", env.dir.path())
        .env("SSL_CERT_FILE", &bundle)
        .env_remove("SSL_CERT_DIR")
        .output()
        .await
        .unwrap();
    assert!(text(&out).starts_with("HTTP 200"), "{}", text(&out));
    let calls = env.sandbox.invocations("grant-db");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.http_version, "HTTP/2.0");
    assert_eq!(call.status, 200);
    assert_eq!(call.caller_email.as_deref(), Some(crate::helpers::SA));
    assert_eq!(call.content_type.as_deref(), Some("application/json"));
    assert!(call.idempotency_key.is_some());
    assert_eq!(call.body["event_type"], "get-status");
}

/// A load balancer's health check on the push port: unauthenticated, 200 while
/// the instance takes pushes; everything else there still needs a signature.
#[tokio::test]
async fn the_push_port_answers_an_unsigned_health_check() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let config = env.push_daemon_config(&cp, &[("orders-db", "grant-db")]);
    let daemon = crate::helpers::RunningDaemon::start(&env, &config).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}", daemon.push_addr.unwrap());
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    let unsigned = http
        .get(format!("{base}/v1/actions/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    daemon.request_stop();
    daemon.stopped().await;
}

/// `[log] audit_stdout`: the audit trail leaves the pod with its stdout, one
/// JSON line per recorded call, in the shape `grantbridge audit --json` prints
/// (so the journal's emptyDir may go with a rollout).
#[tokio::test]
async fn the_audit_trail_is_exported_as_json_lines_on_stdout() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let config = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("log.audit_stdout", true);
    let path = env.dir.path().join("audit-export.toml");
    config.write_to(&path).unwrap();
    let stdout = env.dir.path().join("audit-export.stdout");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .args([
            "--config",
            path.to_str().unwrap(),
            "--log-format",
            "json",
            "run",
        ])
        .env("CP_TOKEN", CP_TOKEN)
        .env("HOME", env.dir.path())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    cp.enqueue(action("exp-1", "orders-db"));
    cp.wait_for_results(1, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let line = loop {
        let text = std::fs::read_to_string(&stdout).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break line.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing on stdout");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().await.unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(entry["action_id"], "exp-1");
    assert_eq!(entry["integration"], "orders-db");
    assert_eq!(entry["outcome"], "succeeded");
    assert_eq!(entry["attempt"], 1);
    assert_eq!(entry["http_status"], 200);
    // The same entry `audit --json` reads from the journal.
    let audit = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .args(["--config", path.to_str().unwrap(), "audit", "--json"])
        .env("HOME", env.dir.path())
        .output()
        .await
        .unwrap();
    let journal: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&audit.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(journal, entry);
}

/// The binary is built as `.cargo/config.toml` says: aws-lc without its
/// CPU-jitter entropy collector, whose initialisation cost every start 40 to
/// 70 ms of CPU before the first token could be signed (docs/security.md,
/// "Randomness"). aws-lc's random number generator itself is linked.
#[test]
fn the_binary_is_built_without_aws_lc_cpu_jitter_entropy() {
    let binary = std::fs::read(env!("CARGO_BIN_EXE_grantbridge")).unwrap();
    let has = |name: &str| memchr::memmem::find(&binary, name.as_bytes()).is_some();
    assert!(has("RAND_bytes"), "aws-lc's RAND_bytes is in the binary");
    assert!(
        !has("jent_entropy_collector_alloc"),
        "aws-lc's jitter entropy is linked: is AWS_LC_SYS_NO_JITTER_ENTROPY set in .cargo/config.toml?"
    );
}

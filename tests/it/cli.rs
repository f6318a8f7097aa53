//! The `grantbridge` binary as an operator runs it.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use grantbridge_sandbox::daemon_config::DaemonConfig;

use crate::helpers::{SA, TestEnv, spawn_env};

async fn run(env: &TestEnv, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .args(args)
        .env("HOME", env.dir.path())
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .output()
        .await
        .unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[tokio::test]
async fn token_prints_an_id_token_for_the_audience() {
    let env = spawn_env().await;
    let config = env.write_config(&env.config(&[]));
    let aud = "https://us-central1-acme-prod.cloudfunctions.net/grant-db";
    let out = run(
        &env,
        &[
            "--config",
            config.to_str().unwrap(),
            "token",
            "--connection",
            "prod",
            "--audience",
            aud,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout);
    let claims = env.sandbox.verify_id_token(token.trim(), aud).unwrap();
    assert_eq!(claims.email.as_deref(), Some(SA));
}

#[tokio::test]
async fn invoke_reports_failures_with_a_nonzero_exit() {
    let env = spawn_env().await;
    env.sandbox
        .deploy_function("locked", grantbridge_sandbox::FunctionImpl::Sample, &[]);
    let config = env.write_config(&env.config(&[("locked", "locked")]));
    let out = run(
        &env,
        &[
            "--config",
            config.to_str().unwrap(),
            "invoke",
            "locked",
            "get-status",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with("HTTP 403 · failed (permission_denied)"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("roles/cloudfunctions.invoker"));
}

#[tokio::test]
async fn invoke_refuses_malformed_params_before_calling() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let config = env.write_config(&env.config(&[("orders-db", "grant-db")]));
    let out = run(
        &env,
        &[
            "--config",
            config.to_str().unwrap(),
            "invoke",
            "orders-db",
            "grant-access",
            "-p",
            "grant_id=g",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("params.username"),
        "{}",
        text(&out.stderr)
    );
    assert!(env.sandbox.invocations("grant-db").is_empty());
}

#[tokio::test]
async fn check_mints_for_every_integration() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let config = env.write_config(&env.config(&[("orders-db", "grant-db")]));
    let out = run(&env, &["--config", config.to_str().unwrap(), "check"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("ok    integration orders-db") && stdout.contains(SA),
        "{stdout}"
    );

    env.sandbox.delete_key(SA, &env.key_id);
    let out = run(&env, &["--config", config.to_str().unwrap(), "check"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAIL  integration orders-db")
            && text(&out.stdout).contains("Invalid JWT Signature")
    );
}

#[tokio::test]
async fn a_corrupt_journal_is_refused_with_each_cause_said_once() {
    let env = spawn_env().await;
    let journal = env.dir.path().join("journal.db");
    std::fs::write(&journal, [0x5a_u8; 4096]).unwrap();
    let secret = env.dir.path().join("push-secret");
    std::fs::write(&secret, crate::helpers::PUSH_SECRET).unwrap();
    let config = env.write_config(&env.config(&[]).push(&secret).journal(&journal));
    let out = run(&env, &["--config", config.to_str().unwrap(), "run"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let err = errors[0];
    assert!(err.contains("not an SQLite database"), "{err}");
    // Before: the journal error, then the same error again as its cause.
    assert_eq!(err.matches("cannot open the journal").count(), 1, "{err}");
    assert_eq!(err.matches("move it aside").count(), 1, "{err}");
}

#[tokio::test]
async fn a_bad_config_is_refused_naming_file_and_key() {
    let env = spawn_env().await;
    let config = env.write_config(
        &DaemonConfig::new("c")
            .remove("http.allow_insecure_loopback")
            .key_file_connection("p", Path::new("nope.json"))
            .set("integrations.x.connection", "p")
            .set("integrations.x.project_id", "acme-prod")
            .set("integrations.x.region", "mars-north1")
            .set("integrations.x.function", "f"),
    );
    let out = run(&env, &["--config", config.to_str().unwrap(), "check"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(config.to_str().unwrap()), "{err}");
    assert!(
        err.contains("connections.p.key_file") && err.contains("integrations.x.region"),
        "{err}"
    );
}

#[tokio::test]
async fn the_standalone_sandbox_writes_a_config_grantbridge_can_use() {
    let env = spawn_env().await;
    let dir = env.dir.path().join("sb");
    // It prints the config path once everything is written and serving.
    let (mut sandbox, mut lines) = env.standalone_sandbox(&dir, &["--function", "grant-sample"]);
    let config = dir.join("grantbridge.toml");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .expect("sandbox prints its config path in time")
    {
        if line.contains("grantbridge.toml") {
            break;
        }
    }
    let out = run(
        &env,
        &[
            "--config",
            config.to_str().unwrap(),
            "invoke",
            "grant-sample",
            "get-status",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("HTTP 200 · succeeded"),
        "{}",
        text(&out.stdout)
    );
    // The online checks pass against it too.
    let out = run(
        &env,
        &["--config", config.to_str().unwrap(), "check", "--online"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    sandbox.kill().await.unwrap();
}

#[test]
fn the_example_config_is_valid_apart_from_its_secret_files() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grantbridge.example.toml");
    let err =
        grantbridge::config::Config::load(&path, &grantbridge::env::MapEnv::new()).unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["connections.prod.key_file", "control_plane.token_file"],
        "{err}"
    );
}

#[test]
fn the_shipped_kubernetes_configs_load() {
    for path in [
        "deploy/kubernetes/base/grantbridge.toml",
        "deploy/kubernetes/push/grantbridge.toml",
    ] {
        let toml =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
                .unwrap();
        assert!(toml.contains("connector_id"), "{path}: no config found");
        let origin = std::path::Path::new("/etc/grantbridge/grantbridge.toml");
        let err =
            grantbridge::config::Config::from_toml(&toml, origin, &grantbridge::env::MapEnv::new());
        // Only the mounted Secret files are missing on this machine; every key and value is accepted.
        let problems: Vec<String> = match err {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems()
                .iter()
                .filter(|p| !p.message.contains("cannot read /var/run/secrets/"))
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect(),
        };
        assert!(problems.is_empty(), "{path}: {problems:?}");
    }
}

/// The README's local loop, as a new user runs it: `grantbridge sandbox`
/// (Google and a control plane), `grantbridge run` on the config it wrote,
/// `sandbox enqueue` a grant, `sandbox results` shows it, `audit` has the
/// call, and `functions list` works on the sandbox's own config.
#[tokio::test]
async fn the_local_loop_runs_a_grant_end_to_end() {
    let env = spawn_env().await;
    let dir = env.dir.path().join("local");
    let bin = env!("CARGO_BIN_EXE_grantbridge");
    let dir_arg = dir.to_str().unwrap();
    let mut sandbox = tokio::process::Command::new(bin)
        .args(["sandbox", "--dir", dir_arg])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("sandbox.json").exists() {
        assert!(
            Instant::now() < deadline,
            "the sandbox never wrote its state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = dir.join("grantbridge.toml");
    let config_arg = config.to_str().unwrap();
    let mut daemon = tokio::process::Command::new(bin)
        .args(["--config", config_arg, "run"])
        .env("HOME", env.dir.path())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = run(
        &env,
        &[
            "sandbox",
            "--dir",
            dir_arg,
            "enqueue",
            "grant-sample",
            "grant-access",
            "--id",
            "loop-1",
            "-p",
            "grant_id=g-1",
            "-p",
            "username=alice@example.com",
            "-p",
            "resource_type=db",
            "-p",
            "resources=[\"orders\"]",
            "-p",
            "permission=read",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("enqueued loop-1"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let out = run(&env, &["sandbox", "--dir", dir_arg, "results"]).await;
        let table = text(&out.stdout);
        if table.contains("loop-1") {
            break table;
        }
        assert!(
            Instant::now() < deadline,
            "no result: {table}{}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        table.contains("succeeded") && table.contains("200"),
        "{table}"
    );
    let out = run(&env, &["--config", config_arg, "audit"]).await;
    assert!(
        text(&out.stdout).contains("loop-1"),
        "{}",
        text(&out.stdout)
    );
    let out = run(
        &env,
        &[
            "--config",
            config_arg,
            "functions",
            "list",
            "--connection",
            "sandbox",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("grant-sample"));
    daemon.kill().await.unwrap();
    sandbox.kill().await.unwrap();
}

/// `completions` and `man` come from the same clap definition the binary
/// parses with: every subcommand and flag is in them.
#[tokio::test]
async fn completions_and_the_man_page_cover_every_command() {
    let env = spawn_env().await;
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(&env, &["completions", shell]).await;
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["check", "audit", "offline", "health"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = run(&env, &["man"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.starts_with(".TH"),
        "{}",
        &page[..80]
    );
    assert!(page.contains(".TH grantbridge 1"), "a section-1 page");
    for sub in ["CHECK", "AUDIT", "RUN", "HEALTH", "COMPLETIONS"] {
        assert!(
            page.contains(&format!(".SH \"GRANTBRIDGE {sub}\"")),
            "no {sub} section"
        );
    }
    assert!(page.contains("offline"), "check --offline is documented");
}

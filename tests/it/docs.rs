//! What the documentation says, held to what the binary does. Each test runs
//! the behaviour and asserts the sentence that describes it, so a change to
//! either one without the other fails here.

use std::path::Path;
use std::process::Output;

use crate::helpers::{CP_TOKEN, RunningDaemon, action, spawn_control_plane, spawn_env};

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Whitespace-normalised text, so line wrapping does not matter.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `path` says `sentence` (modulo line breaks).
fn says(path: &str, sentence: &str) {
    assert!(
        flat(&repo_file(path)).contains(&flat(sentence)),
        "{path} no longer says: {sentence}"
    );
}

/// `path` never says anything matching `pattern` (case-insensitive).
fn never_says(path: &str, pattern: &str) {
    let re = regex_lite(pattern);
    let text = flat(&repo_file(path)).to_lowercase();
    assert!(
        !re(&text),
        "{path} says something matching /{pattern}/, which the binary contradicts"
    );
}

/// A tiny matcher for the few patterns used here: `a.*b` (both in one sentence).
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool + '_ {
    move |text: &str| {
        let parts: Vec<&str> = pattern.split(".*").collect();
        text.split(". ").any(|sentence| {
            let mut at = 0;
            parts.iter().all(|p| match sentence[at..].find(p) {
                Some(i) => {
                    at += i + p.len();
                    true
                }
                None => false,
            })
        })
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn grantbridge(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .args(args)
        .env("HOME", dir)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

/// docs/protocol.md and docs/security.md: a reload rotates push secrets.
#[tokio::test]
async fn push_secrets_rotate_on_reload_without_a_restart() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let config = env.push_daemon_config(&cp, &[("orders-db", "grant-db")]);
    let daemon = RunningDaemon::start(&env, &config).await;
    const NEXT: &str = "a-rotated-push-secret-0123456789";
    let next_file = env.dir.path().join("next-secret");
    std::fs::write(&next_file, NEXT).unwrap();
    config
        .clone()
        .set("push.secret_files", vec![next_file.display().to_string()])
        .write_to(&daemon.config_path)
        .unwrap();
    daemon.reloader.reload(&env.daemon_env()).unwrap();
    let body = action("doc-rot-1", "orders-db").to_string();
    let signed = daemon
        .signed_with(NEXT, "POST", "/v1/actions", &body, 0)
        .await;
    assert_eq!(signed.status(), 202, "the new secret works at once");
    assert_eq!(
        daemon
            .push(&action("doc-rot-2", "orders-db"))
            .await
            .status(),
        401
    );
    daemon.request_stop();
    daemon.stopped().await;
    says(
        "docs/protocol.md",
        "A reload (SIGHUP) puts the configured list of secrets in force at once, without a restart",
    );
    says(
        "docs/configuration.md",
        "Push secrets are read again on SIGHUP, so a rotation needs no restart",
    );
    for doc in ["docs/protocol.md", "docs/security.md", "docs/deployment.md"] {
        never_says(doc, "push secret.*need a restart");
        never_says(doc, "push secrets.*restart to rotate");
    }
}

/// docs/configuration.md: the default audience is the URL as written.
#[test]
fn the_default_audience_is_the_url_exactly_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "connector_id = \"c\"\n[connections.m]\ncredentials = \"metadata\"\n[integrations.svc]\nconnection = \"m\"\nproject_id = \"acme-prod\"\nfunction = \"svc\"\nurl = \"https://svc-abc-uc.a.run.app\"\n";
    let path = dir.path().join("grantbridge.toml");
    std::fs::write(&path, toml).unwrap();
    let config =
        grantbridge::config::Config::load(&path, &grantbridge::env::MapEnv::new()).unwrap();
    assert_eq!(
        config.integrations["svc"].audience,
        "https://svc-abc-uc.a.run.app"
    );
    says(
        "docs/configuration.md",
        "The default is the URL exactly as written: nothing is added, so `https://svc-abc-uc.a.run.app` stays `https://svc-abc-uc.a.run.app` (no trailing `/`)",
    );
    never_says("docs/configuration.md", "gets a trailing `/`");
}

/// docs/quickstart.md: the sandbox's configuration points the Cloud
/// Functions API and the control plane at the sandbox, and its closing hint
/// names the `run` subcommand.
#[tokio::test]
async fn the_sandbox_config_points_everything_at_the_sandbox() {
    let env = spawn_env().await;
    let dir = env.dir.path().join("sb");
    let (mut sandbox, mut lines) = env.standalone_sandbox(&dir, &[]);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut hint = None;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .expect("the sandbox prints its hints in time")
    {
        if line.starts_with("run:") {
            hint = Some(line);
            break;
        }
    }
    let hint = hint.expect("a run: hint");
    assert!(hint.trim_end().ends_with(" run"), "{hint}");
    let written = std::fs::read_to_string(dir.join("grantbridge.toml")).unwrap();
    let config = grantbridge::config::Config::load_with(
        &dir.join("grantbridge.toml"),
        &grantbridge::env::MapEnv::new(),
        grantbridge::config::Secrets::Skip,
    )
    .unwrap();
    let api = config.google.cloudfunctions_api.as_str();
    let cp = config
        .control_plane
        .as_ref()
        .expect("[control_plane]")
        .url
        .as_str();
    assert!(api.starts_with("http://127.0.0.1:"), "{api}\n{written}");
    assert!(cp.starts_with("http://127.0.0.1:"), "{cp}\n{written}");
    sandbox.kill().await.unwrap();
    says(
        "docs/quickstart.md",
        "The generated configuration points everything at the sandbox: its functions, its Cloud Functions API (`[google] cloudfunctions_api`, so `check --online` and `functions list` read the sandbox, never Google) and its simulated control plane",
    );
    never_says(
        "docs/quickstart.md",
        "does not point `[google] cloudfunctions_api`",
    );
}

/// docs/gcp-setup.md: `check --online` never contacts the control plane.
#[tokio::test]
async fn check_online_never_contacts_the_control_plane() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    env.sandbox.grant_viewer("grant-db", crate::helpers::SA);
    env.sandbox
        .grant_iam_policy_viewer("grant-db", crate::helpers::SA);
    // A control plane that is not there: check still passes.
    let closed = format!("http://127.0.0.1:{}", crate::helpers::free_port());
    let config = env
        .config(&[("orders-db", "grant-db")])
        .set("http.allow_insecure_loopback", true)
        .set(
            "google.cloudfunctions_api",
            env.sandbox.cloudfunctions_api_url(),
        )
        .set("control_plane.url", closed.as_str())
        .set("control_plane.token_env", "CP_TOKEN_THAT_IS_NOT_SET");
    let path = env.write_config(&config);
    let out = grantbridge(
        env.dir.path(),
        &["--config", path.to_str().unwrap(), "check", "--online"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    says(
        "docs/gcp-setup.md",
        "Neither contacts the control plane: whether it accepts the connector token shows in the daemon's `/readyz`",
    );
    never_says(
        "docs/gcp-setup.md",
        "check.*against the live google and control-plane endpoints",
    );
}

/// docs/configuration.md: a bad file lists every problem, unknown keys included.
#[test]
fn every_problem_is_listed_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grantbridge.toml");
    std::fs::write(
        &path,
        "connector_id = \"c\"\nconector = 1\n[engine]\nmax_concurency = 4\n[integrations.x]\nregin = \"us-east1\"\n",
    )
    .unwrap();
    let err =
        grantbridge::config::Config::load(&path, &grantbridge::env::MapEnv::new()).unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    for typo in ["conector", "engine.max_concurency", "integrations.x.regin"] {
        assert!(keys.contains(&typo), "{typo} not listed: {keys:?}");
    }
    says(
        "docs/configuration.md",
        "a bad file is refused as a whole, listing **every** problem with the file",
    );
}

/// The restart-only settings reload.rs warns about are the ones
/// docs/configuration.md lists, and the unit file and deployment.md point
/// there instead of keeping partial lists of their own.
#[test]
fn the_reload_lists_agree_with_the_code() {
    let reload = repo_file("src/daemon/reload.rs");
    let section = {
        let text = repo_file("docs/configuration.md");
        let start = text.find("Need a restart.").expect("the restart list");
        let end = text[start..].find("Kept from the start").unwrap() + start;
        flat(&text[start..end])
    };
    let code = &reload[reload.find("fn warn_restart_only").unwrap()..];
    let names: Vec<&str> = code
        .lines()
        .filter_map(|l| l.trim().strip_prefix("(\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        // "push limits (max_body_bytes, ...)" and "control_plane (other than
        // its token)" are prose; their first word is the setting.
        let key = name.split([' ', ',']).next().unwrap();
        let section_word = key.split('.').next().unwrap();
        assert!(
            section.contains(&format!("`{key}`"))
                || section.contains(&format!("`[{section_word}]`"))
                || section.contains(&format!("`{}`", key.rsplit('.').next().unwrap())),
            "docs/configuration.md's restart list does not name {key}"
        );
    }
    let unit = repo_file("deploy/systemd/grantbridge.service");
    assert!(
        unit.contains("docs/configuration.md, \"What SIGHUP reloads\""),
        "the unit points at the full list"
    );
    says(
        "docs/deployment.md",
        "What a reload (SIGHUP, or a changed file) applies and what needs a restart is listed in [configuration.md](configuration.md#what-sighup-reloads-and-what-needs-a-restart)",
    );
}

/// configuration.md's contents line links every section; the README's
/// layout table names each source directory once.
#[test]
fn the_contents_and_the_layout_table_are_complete_and_unrepeated() {
    let config = repo_file("docs/configuration.md");
    let contents_end = config.find("## Value formats").unwrap();
    let contents = &config[..contents_end];
    for line in config.lines() {
        if let Some(section) = line.strip_prefix("## `[").and_then(|l| l.split(']').next()) {
            let anchor = section.replace(['.', '_'], "").to_lowercase();
            assert!(
                contents.contains(&format!("[`[{section}]`](#"))
                    || contents.contains(&format!("(#{anchor}")),
                "configuration.md's contents omit [{section}]"
            );
        }
    }
    let readme = repo_file("README.md");
    let mut seen = std::collections::HashSet::new();
    for line in readme.lines() {
        if let Some(path) = line
            .strip_prefix("| `src/")
            .and_then(|l| l.split('`').next())
        {
            assert!(
                seen.insert(path.to_owned()),
                "README lists src/{path} twice"
            );
        }
    }
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            let name = format!("{}/", entry.file_name().to_string_lossy());
            assert!(
                seen.contains(&name),
                "README's layout table omits src/{name}"
            );
        }
    }
}

/// `check` with an unreachable metadata server: one line per integration, no
/// retry warnings repeating it on stderr.
#[tokio::test]
async fn check_says_a_metadata_failure_once_per_integration() {
    let env = spawn_env().await;
    let toml = format!(
        "connector_id = \"c\"\n[http]\nallow_insecure_loopback = true\n[connections.gce]\ncredentials = \"metadata\"\nmetadata_host = \"127.0.0.1:{}\"\n[integrations.a]\nconnection = \"gce\"\nproject_id = \"acme-prod\"\nfunction = \"fa\"\n[integrations.b]\nconnection = \"gce\"\nproject_id = \"acme-prod\"\nfunction = \"fb\"\n",
        crate::helpers::free_port()
    );
    let path = env.dir.path().join("gce.toml");
    std::fs::write(&path, toml).unwrap();
    let out = grantbridge(
        env.dir.path(),
        &["--config", path.to_str().unwrap(), "check"],
    )
    .await;
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("could not connect").count(), 2, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("WARN"),
        "retry warnings on stderr:\n{stderr}"
    );
}

/// `health` without `--url` asks the configured admin listener.
#[tokio::test]
async fn health_asks_the_configured_admin_listener() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let port = crate::helpers::free_port();
    let config = env
        .daemon_config(&cp, &[("orders-db", "grant-db")])
        .set("admin.listen", format!("127.0.0.1:{port}"));
    let (mut child, _log) = env.spawn_run(&config, "health", &[]);
    let path = env.dir.path().join("health.toml");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
            .args(["--config", path.to_str().unwrap(), "health"])
            .env("CP_TOKEN", CP_TOKEN)
            .env_remove("GRANTBRIDGE_HEALTH_URL")
            .output()
            .await
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never succeeded: {}",
            text(&out)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
}

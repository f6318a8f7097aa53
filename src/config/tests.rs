//! Configuration tests: what loads, and what is refused with which key named.

use super::*;
use crate::env::MapEnv;
use crate::google::key::tests::{key_json, test_pem};

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sa.json"),
            key_json(&test_pem(), "https://oauth2.googleapis.com/token"),
        )
        .unwrap();
        Self { dir }
    }
    fn load(&self, toml: &str) -> Result<Config, ConfigError> {
        self.load_env(toml, MapEnv::new())
    }
    fn load_env(&self, toml: &str, env: MapEnv) -> Result<Config, ConfigError> {
        let path = self.dir.path().join("grantbridge.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(&path, &env)
    }
}

const GOOD: &str = r#"
connector_id = "conn-prod-1"

[connections.prod]
credentials = "service_account_key"
key_file = "sa.json"

[integrations.orders-db]
connection = "prod"
project_id = "acme-prod"
function = "grant-orders-db"
custom_parameters = { param1 = "x", Mixed_Case = 3 }
access_details = "https://orders.internal"
"#;

fn problem_keys(err: &ConfigError) -> Vec<String> {
    err.problems().iter().map(|p| p.key.clone()).collect()
}

#[test]
fn the_documented_shape_loads_with_defaults() {
    let d = Dir::new();
    let c = d.load(GOOD).unwrap();
    assert_eq!(c.connector_id, "conn-prod-1");
    let i = &c.integrations["orders-db"];
    assert_eq!(i.region, "us-central1");
    assert_eq!(
        i.url.as_str(),
        "https://us-central1-acme-prod.cloudfunctions.net/grant-orders-db"
    );
    assert_eq!(i.audience, i.url.as_str());
    assert_eq!(i.timeout, Duration::from_secs(60));
    assert_eq!(i.max_attempts, 5);
    assert_eq!(i.custom_parameters["param1"], "x");
    // Keys inside custom_parameters keep their case.
    assert_eq!(i.custom_parameters["Mixed_Case"], 3);
    match &c.connections["prod"].credentials {
        CredentialsSpec::ServiceAccountKey { key, key_file } => {
            assert_eq!(key.client_email, "gb@acme-prod.iam.gserviceaccount.com");
            assert!(
                key_file.is_absolute(),
                "relative key files resolve against the config's folder"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.tokens.refresh_ahead, Duration::from_secs(300));
    assert_eq!(c.http.max_response_bytes, 10 * 1024 * 1024);
}

#[test]
fn env_vars_override_keys() {
    let d = Dir::new();
    let env = MapEnv::new()
        .with("GRANTBRIDGE__CONNECTOR_ID", "conn-from-env")
        .with("GRANTBRIDGE__TOKENS__REFRESH_AHEAD", "10m")
        .with("UNRELATED", "x");
    let c = d.load_env(GOOD, env).unwrap();
    assert_eq!(c.connector_id, "conn-from-env");
    assert_eq!(c.tokens.refresh_ahead, Duration::from_secs(600));
}

#[test]
fn every_problem_is_named_by_file_and_key() {
    let d = Dir::new();
    let err = d
        .load(
            r#"
connector_id = "conn"
[connections.prod]
credentials = "service_account_key"
key_file = "missing.json"
[integrations.a]
connection = "nope"
project_id = "acme-prod"
region = "us-cental1"
function = "Bad Name"
timeout = "600s"
"#,
        )
        .unwrap_err();
    let keys = problem_keys(&err);
    for k in [
        "connections.prod.key_file",
        "integrations.a.connection",
        "integrations.a.region",
        "integrations.a.function",
        "integrations.a.timeout",
    ] {
        assert!(keys.contains(&k.to_owned()), "{k} not in {keys:?}");
    }
    let text = err.to_string();
    assert!(text.contains("grantbridge.toml"), "{text}");
    assert!(text.contains("missing.json"), "{text}");
    assert!(
        text.contains("us-central1"),
        "suggests the valid regions: {text}"
    );
}

#[test]
fn a_file_that_is_not_a_service_account_key_is_refused() {
    let d = Dir::new();
    std::fs::write(
        d.dir.path().join("user.json"),
        r#"{"type":"authorized_user","refresh_token":"r"}"#,
    )
    .unwrap();
    let err = d
        .load("connector_id = \"c\"\n[connections.p]\ncredentials = \"service_account_key\"\nkey_file = \"user.json\"\n")
        .unwrap_err();
    assert_eq!(problem_keys(&err), ["connections.p.key_file"]);
    assert!(err.to_string().contains("impersonate"));
}

#[test]
fn unknown_keys_are_refused() {
    let d = Dir::new();
    let err = d
        .load(&format!("{GOOD}\n[integrations.x]\nregin = \"us-east1\"\n"))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("regin") && text.contains("grantbridge.toml"),
        "{text}"
    );
}

#[test]
fn plain_http_urls_need_loopback_and_the_flag() {
    let d = Dir::new();
    let with_url = |url: &str, allow: bool| {
        format!(
            "{GOOD}\n[http]\nallow_insecure_loopback = {allow}\n[integrations.local]\nconnection = \"prod\"\nproject_id = \"acme-prod\"\nfunction = \"f\"\nurl = \"{url}\"\n"
        )
    };
    assert!(d.load(&with_url("http://127.0.0.1:8080/f", true)).is_ok());
    let err = d
        .load(&with_url("http://127.0.0.1:8080/f", false))
        .unwrap_err();
    assert_eq!(problem_keys(&err), ["integrations.local.url"]);
    let err = d
        .load(&with_url("http://functions.internal/f", true))
        .unwrap_err();
    assert!(err.to_string().contains("https"), "{err}");
}

#[test]
fn impersonation_needs_a_target_and_checks_delegates() {
    let d = Dir::new();
    let c = d
        .load("connector_id = \"c\"\n[connections.i]\ncredentials = \"impersonate\"\ntarget_service_account = \"fn-invoker@acme-prod.iam.gserviceaccount.com\"\nkey_file = \"sa.json\"\n")
        .unwrap();
    match &c.connections["i"].credentials {
        CredentialsSpec::Impersonate {
            target,
            source,
            iam_credentials_url,
            ..
        } => {
            assert_eq!(target, "fn-invoker@acme-prod.iam.gserviceaccount.com");
            assert!(matches!(
                **source,
                CredentialsSpec::ServiceAccountKey { .. }
            ));
            assert_eq!(
                iam_credentials_url.as_str(),
                "https://iamcredentials.googleapis.com/"
            );
        }
        other => panic!("{other:?}"),
    }
    let err = d
        .load("connector_id = \"c\"\n[connections.i]\ncredentials = \"impersonate\"\ndelegates = [\"not-an-email\"]\n")
        .unwrap_err();
    assert_eq!(
        problem_keys(&err),
        [
            "connections.i.target_service_account",
            "connections.i.delegates[0]"
        ]
    );
}

#[test]
fn misplaced_keys_are_pointed_out() {
    let d = Dir::new();
    let err = d
        .load("connector_id = \"c\"\n[connections.m]\ncredentials = \"metadata\"\nkey_file = \"sa.json\"\ntarget_service_account = \"x@y.z\"\n")
        .unwrap_err();
    assert_eq!(
        problem_keys(&err),
        [
            "connections.m.target_service_account",
            "connections.m.key_file"
        ]
    );
}

#[test]
fn missing_file_says_how_to_pass_one() {
    let err = Config::load(Path::new("/nonexistent/grantbridge.toml"), &MapEnv::new()).unwrap_err();
    assert!(err.to_string().contains("--config"));
}

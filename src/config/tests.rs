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
fn every_unknown_key_is_listed_not_only_the_first() {
    let d = Dir::new();
    let err = d
        .load(&format!(
            "{GOOD}\n[integrations.x]\nregin = \"us-east1\"\n[engine]\nmax_concurency = 4\n"
        ))
        .unwrap_err();
    let keys = problem_keys(&err);
    assert!(keys.contains(&"integrations.x.regin".to_owned()), "{err}");
    assert!(keys.contains(&"engine.max_concurency".to_owned()), "{err}");
}

#[test]
fn lenient_loading_notes_unreadable_secrets_instead_of_refusing() {
    let d = Dir::new();
    let toml = format!(
        "{GOOD}\n[control_plane]\nurl = \"https://cp.example.com\"\n[push]\nlisten = \"0.0.0.0:8443\"\nsecret_files = [\"missing-secret\"]\n[connections.other]\ncredentials = \"service_account_key\"\nkey_file = \"/nonexistent/key.json\"\n"
    );
    // Strict: the missing token variable, secret file and key file are problems.
    let err = d.load(&toml).unwrap_err();
    assert_eq!(
        problem_keys(&err),
        [
            "connections.other.key_file",
            "control_plane.token_env",
            "push.secret_files[0]"
        ]
    );
    let path = d.dir.path().join("grantbridge.toml");
    for secrets in [Secrets::IfReadable, Secrets::Skip] {
        let config = Config::load_with(&path, &MapEnv::new(), secrets).unwrap();
        assert_eq!(
            config.unchecked.len(),
            3 + usize::from(secrets == Secrets::Skip),
            "{:?}",
            config.unchecked
        );
        assert!(
            config
                .unchecked
                .iter()
                .any(|n| n.starts_with("control_plane.token_env"))
        );
    }
    // Lenient still checks what it can read: the readable key file is parsed.
    std::fs::write(d.dir.path().join("sa.json"), "not json").unwrap();
    let err = Config::load_with(&path, &MapEnv::new(), Secrets::IfReadable).unwrap_err();
    assert_eq!(problem_keys(&err), ["connections.prod.key_file"]);
    // And values are still values: a bad one is refused whatever the policy.
    std::fs::write(&path, toml.replace("8443", "port")).unwrap();
    let err = Config::load_with(&path, &MapEnv::new(), Secrets::Skip).unwrap_err();
    assert!(
        problem_keys(&err).contains(&"push.listen".to_owned()),
        "{err}"
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

#[test]
fn daemon_sections_load_with_secrets_from_files_and_env() {
    let d = Dir::new();
    std::fs::write(d.dir.path().join("cp-token"), "tok-123\n").unwrap();
    std::fs::write(d.dir.path().join("push-secret"), "0123456789abcdef0123\n").unwrap();
    let toml = format!(
        "instance_id = \"gb-0/ab12\"\n{GOOD}\n[control_plane]\nurl = \"https://cp.example.com\"\ntoken_file = \"cp-token\"\nwait = \"10s\"\n[push]\nlisten = \"0.0.0.0:8443\"\nsecret_files = [\"push-secret\"]\nsecret_envs = [\"NEXT_SECRET\"]\n[journal]\npath = \"state/journal.db\"\n[engine]\nmax_concurrency = 16\n"
    );
    let c = d
        .load_env(
            &toml,
            MapEnv::new().with("NEXT_SECRET", "fedcba9876543210fedcba"),
        )
        .unwrap();
    use secrecy::ExposeSecret;
    let cp = c.control_plane.unwrap();
    assert_eq!(cp.token.expose_secret(), "tok-123");
    assert_eq!(
        (cp.wait, cp.lease, cp.max_actions, cp.poll),
        (Duration::from_secs(10), Duration::from_secs(60), 50, true)
    );
    assert!(
        !format!("{cp:?}").contains("tok-123"),
        "the token is redacted in Debug"
    );
    let push = c.push.unwrap();
    assert_eq!(push.secrets.len(), 2);
    assert_eq!(push.listen.port(), 8443);
    assert!(c.journal.path.ends_with("state/journal.db") && c.journal.path.is_absolute());
    assert_eq!(c.engine.max_concurrency, 16);
    assert_eq!(c.engine.per_integration_concurrency, 8);
    assert_eq!(c.instance_id, "gb-0/ab12");
}

#[test]
fn daemon_sections_are_checked() {
    let d = Dir::new();
    std::fs::write(d.dir.path().join("short"), "abc").unwrap();
    let toml = format!(
        "{GOOD}\n[control_plane]\nurl = \"http://cp.example.com\"\nwait = \"45s\"\n[push]\nlisten = \"not an address\"\nsecret_files = [\"short\"]\n[engine]\nmax_concurrency = 0\n"
    );
    let err = d.load(&toml).unwrap_err();
    let keys = problem_keys(&err);
    for k in [
        "control_plane.url",
        "control_plane.token_env",
        "control_plane.wait",
        "push.listen",
        "push.secret_files",
        "engine.max_concurrency",
    ] {
        assert!(keys.contains(&k.to_owned()), "{k} not in {keys:?}");
    }
    let text = err.to_string();
    assert!(text.contains("GRANTBRIDGE_CONNECTOR_TOKEN"), "{text}");
}

#[test]
fn a_default_instance_id_is_host_and_a_random_suffix() {
    let d = Dir::new();
    let c = d
        .load_env(GOOD, MapEnv::new().with("HOSTNAME", "grantbridge-0"))
        .unwrap();
    assert!(
        c.instance_id.starts_with("grantbridge-0/")
            && c.instance_id.len() == "grantbridge-0/".len() + 4,
        "{}",
        c.instance_id
    );
}

#[test]
fn google_section_defaults_to_the_cloud_functions_api() {
    let d = Dir::new();
    let c = d.load(GOOD).unwrap();
    assert_eq!(
        c.google.cloudfunctions_api.as_str(),
        "https://cloudfunctions.googleapis.com/"
    );
    let c = d
        .load(&format!(
            "{GOOD}\n[google]\ncloudfunctions_api = \"https://cloudfunctions.example.com\"\n"
        ))
        .unwrap();
    assert_eq!(
        c.google.cloudfunctions_api.as_str(),
        "https://cloudfunctions.example.com/"
    );
}

#[test]
fn google_cloudfunctions_api_follows_the_tls_rule_and_is_a_base_url() {
    let d = Dir::new();
    let with = |url: &str, allow: bool| {
        format!(
            "{GOOD}\n[http]\nallow_insecure_loopback = {allow}\n[google]\ncloudfunctions_api = \"{url}\"\n"
        )
    };
    assert!(d.load(&with("http://127.0.0.1:9000", true)).is_ok());
    let err = d.load(&with("http://127.0.0.1:9000", false)).unwrap_err();
    assert_eq!(problem_keys(&err), ["google.cloudfunctions_api"]);
    let err = d
        .load(&with("http://cloudfunctions.example.com", true))
        .unwrap_err();
    assert!(err.to_string().contains("https"), "{err}");
    let err = d
        .load(&with("https://cloudfunctions.googleapis.com/v1", false))
        .unwrap_err();
    assert_eq!(problem_keys(&err), ["google.cloudfunctions_api"]);
    assert!(err.to_string().contains("without a path"), "{err}");
    let err = d
        .load(&format!("{GOOD}\n[google]\ncloudfunction_api = \"x\"\n"))
        .unwrap_err();
    assert!(err.to_string().contains("cloudfunction_api"), "{err}");
}

#[test]
fn google_cloudfunctions_api_can_be_overridden_from_the_environment() {
    let d = Dir::new();
    let c = d
        .load_env(
            GOOD,
            MapEnv::new().with(
                "GRANTBRIDGE__GOOGLE__CLOUDFUNCTIONS_API",
                "https://cf.example.com",
            ),
        )
        .unwrap();
    assert_eq!(
        c.google.cloudfunctions_api.as_str(),
        "https://cf.example.com/"
    );
}

#[test]
fn the_default_audience_is_the_url_as_written() {
    let d = Dir::new();
    let c = d
        .load(&format!("{GOOD}\n[integrations.run]\nconnection = \"prod\"\nproject_id = \"acme-prod\"\nfunction = \"grant-crm\"\nurl = \"https://grant-crm-abc123-ew.a.run.app\"\n"))
        .unwrap();
    assert_eq!(
        c.integrations["run"].audience,
        "https://grant-crm-abc123-ew.a.run.app"
    );
    assert_eq!(
        c.integrations["run"].url.as_str(),
        "https://grant-crm-abc123-ew.a.run.app/"
    );
}

/// `generation = 2`: a URL is required, and at a cloudfunctions.net URL the
/// audience (the Cloud Run URL) too; `generation = 1` refuses a run.app URL.
#[test]
fn a_declared_generation_sets_the_url_and_audience_rules() {
    let d = Dir::new();
    let base = "[integrations.crm]\nconnection = \"prod\"\nproject_id = \"acme-prod\"\nregion = \"europe-west4\"\nfunction = \"grant-crm\"\n";
    let load = |extra: &str| d.load(&format!("{GOOD}\n{base}{extra}"));
    let keys = |extra: &str| -> Vec<(String, String)> {
        load(extra)
            .unwrap_err()
            .problems()
            .iter()
            .map(|p| (p.key.clone(), p.message.clone()))
            .collect()
    };

    let p = keys("generation = 2\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "integrations.crm.url");
    assert!(
        p[0].1.contains("value(serviceConfig.uri)") && p[0].1.contains("--region=europe-west4"),
        "{p:?}"
    );

    let c = load("generation = 2\nurl = \"https://grant-crm-abc123-ez.a.run.app\"\n").unwrap();
    let i = &c.integrations["crm"];
    assert_eq!(i.generation, Some(Generation::Gen2));
    assert_eq!(i.audience, "https://grant-crm-abc123-ez.a.run.app");
    assert_eq!(i.region, "europe-west4", "not limited to 1st gen regions");

    let cf = "url = \"https://europe-west4-acme-prod.cloudfunctions.net/grant-crm\"\n";
    let p = keys(&format!("generation = 2\n{cf}"));
    assert_eq!(p[0].0, "integrations.crm.audience", "{p:?}");
    assert!(p[0].1.contains("Cloud Run URL"), "{p:?}");
    let c = load(&format!(
        "generation = 2\n{cf}audience = \"https://grant-crm-abc123-ez.a.run.app\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.integrations["crm"].audience,
        "https://grant-crm-abc123-ez.a.run.app"
    );

    let p = keys("generation = 1\nurl = \"https://grant-crm-abc123-ez.a.run.app\"\n");
    assert!(
        p.iter()
            .any(|(k, m)| k == "integrations.crm.url" && m.contains("generation = 2")),
        "{p:?}"
    );
    let p = keys("generation = 3\nurl = \"https://grant-crm-abc123-ez.a.run.app\"\n");
    assert!(
        p.iter()
            .any(|(k, m)| k == "integrations.crm.generation" && m.contains("expected 1")),
        "{p:?}"
    );
    // Unstated: as before (a 1st gen region without `url`).
    assert!(keys("").iter().any(|(k, _)| k == "integrations.crm.region"));
}

#[test]
fn google_run_api_is_a_base_url() {
    let d = Dir::new();
    let c = d.load(GOOD).unwrap();
    assert_eq!(c.google.run_api.as_str(), "https://run.googleapis.com/");
    let err = d
        .load(&format!(
            "{GOOD}\n[google]\nrun_api = \"http://run.example.com/v2\"\n"
        ))
        .unwrap_err();
    assert!(
        err.problems().iter().all(|p| p.key == "google.run_api"),
        "{err}"
    );
}

#[test]
fn a_password_in_a_configured_url_is_refused_and_never_shown() {
    let d = Dir::new();
    let toml = format!(
        "{GOOD}\n[control_plane]\nurl = \"https://admin:PASSWORD@cp.example.com/\"\ntoken_env = \"T\"\n"
    );
    let err = d.load_env(&toml, MapEnv::new().with("T", "t")).unwrap_err();
    assert_eq!(problem_keys(&err), ["control_plane.url"]);
    let text = format!("{err} {err:?}");
    assert!(!text.contains("PASSWORD"), "{text}");
    assert!(text.contains("REDACTED@cp.example.com"), "{text}");

    // The same for a key file's token_uri.
    std::fs::write(
        d.dir.path().join("sa.json"),
        key_json(
            &test_pem(),
            "https://u:PASSWORD@oauth2.googleapis.com/token",
        ),
    )
    .unwrap();
    let err = d.load(GOOD).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("PASSWORD"), "{text}");
}

#[cfg(unix)]
#[test]
fn a_secret_file_others_can_read_is_accepted_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let d = Dir::new();
    let secret = d.dir.path().join("push-secret");
    std::fs::write(&secret, "a-push-secret-0123456789").unwrap();
    let key = d.dir.path().join("sa.json");
    let toml =
        format!("{GOOD}\n[push]\nlisten = \"127.0.0.1:0\"\nsecret_files = [\"push-secret\"]\n");
    for (mode, warned) in [(0o600, false), (0o644, true), (0o640, true)] {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = d.load(&toml).unwrap();
        assert_eq!(
            !config.warnings.is_empty(),
            warned,
            "{mode:o}: {:?}",
            config.warnings
        );
        if warned {
            assert!(config.warnings[0].contains("push.secret_files[0]"));
            assert!(config.warnings[0].contains("chmod 600"));
        }
    }
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = d.load(&toml).unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("connections.prod.key_file"))
    );
}

#[test]
fn traces_are_off_unless_an_endpoint_is_set_and_follow_the_otel_variables() {
    let d = Dir::new();
    assert_eq!(d.load(GOOD).unwrap().traces, None);
    // The standard variable: `/v1/traces` is appended to the base URL.
    let env = MapEnv::new()
        .with(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector.internal:4318/",
        )
        .with("OTEL_SERVICE_NAME", "gb-eu");
    let t = d.load_env(GOOD, env).unwrap().traces.unwrap();
    assert_eq!(
        t.endpoint.as_str(),
        "https://collector.internal:4318/v1/traces"
    );
    assert_eq!(t.service_name, "gb-eu");
    // The signal-specific variable is used as it is.
    let env = MapEnv::new()
        .with("OTEL_EXPORTER_OTLP_ENDPOINT", "https://ignored:4318")
        .with(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://c:4318/custom",
        );
    let t = d.load_env(GOOD, env).unwrap().traces.unwrap();
    assert_eq!(t.endpoint.as_str(), "https://c:4318/custom");
    assert_eq!(t.service_name, "grantbridge");
    // The file wins over the variables, as a programmatic setting does.
    let toml = format!(
        "{GOOD}\n[traces]\notlp_endpoint = \"https://file:4318\"\nservice_name = \"from-file\"\n"
    );
    let env = MapEnv::new().with("OTEL_EXPORTER_OTLP_ENDPOINT", "https://env:4318");
    let t = d.load_env(&toml, env).unwrap().traces.unwrap();
    assert_eq!(
        (t.endpoint.as_str(), t.service_name.as_str()),
        ("https://file:4318/v1/traces", "from-file")
    );
    // OTEL_SDK_DISABLED and OTEL_TRACES_EXPORTER=none turn them off.
    for (name, value) in [
        ("OTEL_SDK_DISABLED", "true"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ] {
        let env = MapEnv::new()
            .with("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")
            .with(name, value);
        assert_eq!(d.load_env(GOOD, env).unwrap().traces, None, "{name}");
    }
}

#[test]
fn a_trace_endpoint_must_be_tls_and_http_protobuf() {
    let d = Dir::new();
    // Plain http to another host: refused, naming the variable.
    let env = MapEnv::new().with("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    let err = d.load_env(GOOD, env).unwrap_err();
    assert_eq!(problem_keys(&err), ["OTEL_EXPORTER_OTLP_ENDPOINT"], "{err}");
    assert!(err.to_string().contains("https"), "{err}");
    // gRPC is not what this build speaks: said plainly, not silently ignored.
    let env = MapEnv::new()
        .with("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317")
        .with("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let err = d.load_env(GOOD, env).unwrap_err();
    assert_eq!(problem_keys(&err), ["OTEL_EXPORTER_OTLP_PROTOCOL"], "{err}");
    assert!(err.to_string().contains("4318"), "{err}");
    // Userinfo in the URL is refused (and never repeated).
    let toml = format!("{GOOD}\n[traces]\notlp_endpoint = \"https://user:hunter2@c:4318\"\n");
    let err = d.load(&toml).unwrap_err();
    assert_eq!(problem_keys(&err), ["traces.otlp_endpoint"]);
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn the_log_filter_fuzzing_found_parses_at_once() {
    // fuzz/regressions/config/timeout-log-filter-regex: a `[span{field=...}]`
    // filter whose value, compiled as a regular expression, took minutes.
    let raw = include_bytes!("../../fuzz/regressions/config/timeout-log-filter-regex");
    let text = String::from_utf8_lossy(raw);
    let first = text.lines().next().unwrap();
    let level = first
        .split(';')
        .find_map(|kv| kv.strip_prefix("GRANTBRIDGE__LOG__LEVEL="))
        .unwrap();
    assert!(level.len() > 500, "the crafted filter");
    // Read with field values as plain strings, it is just a filter (or not).
    let _ = crate::telemetry::parse_filter(level);
    let d = Dir::new();
    let _ = d.load_env(GOOD, MapEnv::new().with("GRANTBRIDGE__LOG__LEVEL", level));
    // Over 1 KiB is refused outright.
    let long = format!("{},info", "a".repeat(1100));
    let err = d
        .load_env(
            GOOD,
            MapEnv::new().with("GRANTBRIDGE__LOG__LEVEL", long.as_str()),
        )
        .unwrap_err();
    assert_eq!(problem_keys(&err), ["log.level"]);
}

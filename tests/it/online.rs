//! `grantbridge check --online` and `grantbridge functions list` against the
//! sandbox's Cloud Functions API: each finding an operator can meet, the
//! verdicts the daemon can report, and the binary's exit codes.

use std::process::Output;
use std::time::Duration;

use grantbridge::check::{self, Severity, Verdict};
use grantbridge::google::AccessToken;
use grantbridge::google::functions_api::{ApiErrorKind, CloudFunctionsApi, FunctionName};
use grantbridge::health::Health;
use grantbridge::retry::Backoff;
use grantbridge::services::Services;
use grantbridge_sandbox::daemon_config::DaemonConfig;
use grantbridge_sandbox::{FunctionImpl, FunctionMeta};

use crate::helpers::{SA, TestEnv, spawn_env};

const PROJECT: &str = "sandbox-project";

/// [`TestEnv::config`] plus `[google]` pointing at the sandbox's Cloud
/// Functions and Cloud Run Admin APIs.
fn online_config(env: &TestEnv, integrations: &[(&str, &str)]) -> DaemonConfig {
    env.config(integrations)
        .set(
            "google.cloudfunctions_api",
            env.sandbox.cloudfunctions_api_url(),
        )
        .set("google.run_api", env.sandbox.cloud_run_api_url())
}

/// An integration without `url`: grantbridge uses the default 1st gen URL
/// (`https://us-central1-sandbox-project.cloudfunctions.net/FUNCTION`).
fn default_url_config(env: &TestEnv, name: &str, function: &str) -> DaemonConfig {
    online_config(env, &[])
        .set(&format!("integrations.{name}.connection"), "prod")
        .set(&format!("integrations.{name}.project_id"), PROJECT)
        .set(&format!("integrations.{name}.function"), function)
}

/// Deploys `function` as `SA` may invoke it, and lets `SA` read it and its policy.
fn deploy_readable(env: &TestEnv, function: &str) -> String {
    let url = env.deploy(function);
    env.sandbox.grant_viewer(function, SA);
    env.sandbox.grant_iam_policy_viewer(function, SA);
    url
}

async fn check_one(env: &TestEnv, config: &DaemonConfig) -> Verdict {
    let google = env.services(config);
    let mut verdicts = check::check_all(&google).await;
    assert_eq!(verdicts.len(), 1);
    verdicts.remove(0)
}

fn codes(v: &Verdict) -> Vec<&'static str> {
    v.findings.iter().map(|f| f.code).collect()
}

fn message<'a>(v: &'a Verdict, code: &str) -> &'a str {
    &v.finding(code)
        .unwrap_or_else(|| panic!("no `{code}` finding in {v:#?}"))
        .message
}

#[tokio::test]
async fn a_healthy_integration_is_ok() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    let v = check_one(&env, &online_config(&env, &[("orders-db", "grant-db")])).await;
    assert_eq!(v.status, Health::Ok, "{v:#?}");
    assert_eq!(codes(&v), ["timeout", "ingress", "invoke_permission"]);
    assert!(v.findings.iter().all(|f| f.severity == Severity::Info));
    assert!(message(&v, "invoke_permission").contains(SA));
    assert!(message(&v, "ingress").contains("ALLOW_ALL"));
    assert_eq!(v.function_url, env.sandbox.function_url("grant-db"));
    assert_eq!(v.status.as_str(), "ok");
    assert!(v.detail().starts_with("ok"));
    // The check never calls the function.
    assert!(env.sandbox.invocations("grant-db").is_empty());
}

#[tokio::test]
async fn check_integration_checks_one_integration_with_a_given_client() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    let google = env.services(&online_config(&env, &[("orders-db", "grant-db")]));
    let api = check::api(&google.config).unwrap();
    let v = check::check_integration(&google, &api, &google.config.integrations["orders-db"]).await;
    assert_eq!(v.integration, "orders-db");
    assert_eq!(v.status, Health::Ok, "{v:#?}");
}

#[tokio::test]
async fn a_missing_function_is_an_error_that_points_at_functions_list() {
    let env = spawn_env().await;
    env.sandbox.grant_viewer(&format!("projects/{PROJECT}"), SA);
    let v = check_one(&env, &default_url_config(&env, "hr", "grant-hr")).await;
    assert_eq!(v.status, Health::Error);
    let m = message(&v, "not_found");
    assert!(
        m.contains("grant-hr does not exist in region us-central1 of project sandbox-project"),
        "{m}"
    );
    assert!(
        m.contains("grantbridge functions list --connection prod"),
        "{m}"
    );
    assert_eq!(v.status.as_str(), "error");
}

#[tokio::test]
async fn an_unknown_non_cloudfunctions_url_is_checked_only_by_minting() {
    let env = spawn_env().await;
    env.sandbox.grant_viewer(&format!("projects/{PROJECT}"), SA);
    // Configured with an explicit URL (a local server, Cloud Run, ...) the API does not know.
    let v = check_one(&env, &online_config(&env, &[("local", "not-deployed")])).await;
    assert_eq!(v.status, Health::Ok, "{v:#?}");
    let m = message(&v, "not_cloud_functions");
    assert!(m.contains("checked only by minting an ID token"), "{m}");
    assert!(m.contains("not a cloudfunctions.net URL"), "{m}");
}

#[tokio::test]
async fn an_offline_function_is_an_error() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    env.sandbox.set_function_meta(
        "grant-db",
        FunctionMeta {
            status: "OFFLINE".into(),
            ..FunctionMeta::default()
        },
    );
    let v = check_one(&env, &online_config(&env, &[("orders-db", "grant-db")])).await;
    assert_eq!(v.status, Health::Error);
    assert!(message(&v, "not_active").contains("FAILED"));
}

/// A 2nd gen function `SA` may read; returns its Cloud Run URL.
async fn deploy_gen2_readable(env: &TestEnv, function: &str, invokers: &[&str]) -> String {
    let run = env
        .sandbox
        .deploy_gen2_function(function, FunctionImpl::Sample, invokers)
        .await
        .unwrap();
    env.sandbox.grant_viewer(function, SA);
    env.sandbox.grant_run_viewer(function, SA);
    run
}

/// An integration for a 2nd gen function at its Cloud Run URL, declared.
fn gen2_config(env: &TestEnv, function: &str, run: &str) -> DaemonConfig {
    online_config(env, &[("crm", function)])
        .set("integrations.crm.url", run)
        .set("integrations.crm.generation", 2)
}

/// 2nd gen, read through the v2 API, its invoke permission tested on its
/// Cloud Run service through the Run Admin API.
#[tokio::test]
async fn a_second_gen_function_at_its_cloud_run_url_is_ok() {
    let env = spawn_env().await;
    let run = deploy_gen2_readable(&env, "grant-crm", &[SA]).await;
    let v = check_one(&env, &gen2_config(&env, "grant-crm", &run)).await;
    assert_eq!(v.status, Health::Ok, "{v:#?}");
    let m = message(&v, "invoke_permission");
    assert!(
        m.contains("run.routes.invoke")
            && m.contains("projects/sandbox-project/locations/us-central1/services/grant-crm"),
        "{m}"
    );
    assert!(codes(&v).contains(&"gen2") && codes(&v).contains(&"timeout"));
}

#[tokio::test]
async fn a_second_gen_function_without_run_invoker_says_which_command_grants_it() {
    let env = spawn_env().await;
    let run = deploy_gen2_readable(&env, "grant-crm", &[]).await;
    let v = check_one(&env, &gen2_config(&env, "grant-crm", &run)).await;
    assert_eq!(v.status, Health::Error);
    let m = message(&v, "no_invoke_permission");
    assert!(
        m.contains("roles/run.invoker")
            && m.contains(&format!("gcloud functions add-invoker-policy-binding grant-crm --project={PROJECT} --region=us-central1 --member=serviceAccount:{SA}")),
        "{m}"
    );
}

#[tokio::test]
async fn a_public_second_gen_function_is_a_loud_warning_with_the_run_command() {
    let env = spawn_env().await;
    let run = deploy_gen2_readable(&env, "grant-crm", &[SA, "allUsers"]).await;
    let v = check_one(&env, &gen2_config(&env, "grant-crm", &run)).await;
    assert_eq!(v.status, Health::Degraded);
    let m = message(&v, "public_invoker");
    assert!(
        m.starts_with("PUBLIC FUNCTION: allUsers holds roles/run.invoker")
            && m.contains("gcloud run services remove-iam-policy-binding grant-crm --project=sandbox-project --region=us-central1 --member=allUsers --role=roles/run.invoker"),
        "{m}"
    );
    // Without roles/run.viewer the policy is not read, and the advice names it.
    env.sandbox.revoke_read_grants("grant-crm", SA);
    env.sandbox.grant_viewer("grant-crm", SA);
    let v = check_one(&env, &gen2_config(&env, "grant-crm", &run)).await;
    assert!(
        message(&v, "policy_unknown").contains("roles/run.viewer"),
        "{v:#?}"
    );
}

/// A 2nd gen function met through a 1st gen configuration (the default
/// cloudfunctions.net URL, its own URL as audience): the audience is wrong
/// for Cloud Run, and the check says what to set.
#[tokio::test]
async fn a_second_gen_function_configured_as_first_gen_gets_its_audience_named() {
    let env = spawn_env().await;
    let run = deploy_gen2_readable(&env, "grant-crm", &[SA]).await;
    let v = check_one(&env, &online_config(&env, &[("crm", "grant-crm")])).await;
    assert_eq!(v.status, Health::Degraded, "{v:#?}");
    let m = message(&v, "audience_mismatch");
    assert!(m.contains(&format!("audience = \"{run}\"")), "{m}");
    assert!(message(&v, "gen2").contains("generation = 2"));

    // Declared 1st gen: an error.
    let config = online_config(&env, &[("crm", "grant-crm")]).set("integrations.crm.generation", 1);
    let v = check_one(&env, &config).await;
    assert!(message(&v, "generation_mismatch").contains("set generation = 2"));
}

#[tokio::test]
async fn an_event_driven_function_has_no_https_trigger() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    env.sandbox.set_function_meta(
        "grant-db",
        FunctionMeta {
            https_trigger: false,
            ..FunctionMeta::default()
        },
    );
    let v = check_one(&env, &online_config(&env, &[("orders-db", "grant-db")])).await;
    assert_eq!(v.status, Health::Error);
    assert!(message(&v, "no_https_trigger").contains("--trigger-http"));
}

#[tokio::test]
async fn a_trigger_url_that_is_not_the_configured_url_is_an_error() {
    let env = spawn_env().await;
    let url = deploy_readable(&env, "grant-db");
    // The default URL (cloudfunctions.net) is not where this function answers.
    let v = check_one(&env, &default_url_config(&env, "orders-db", "grant-db")).await;
    assert_eq!(v.status, Health::Error);
    let m = message(&v, "url_mismatch");
    assert!(m.contains(&format!("url = \"{url}\"")), "{m}");
    assert!(
        m.contains("https://us-central1-sandbox-project.cloudfunctions.net/grant-db"),
        "{m}"
    );
}

#[tokio::test]
async fn timeouts_that_do_not_fit_are_warnings() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    env.sandbox.set_function_meta(
        "grant-db",
        FunctionMeta {
            timeout: Duration::from_secs(540),
            ..FunctionMeta::default()
        },
    );
    let v = check_one(&env, &online_config(&env, &[("orders-db", "grant-db")])).await;
    assert_eq!(v.status, Health::Degraded);
    assert_eq!(v.status.as_str(), "degraded");
    let m = message(&v, "timeout_shorter");
    assert!(
        m.contains("60s") && m.contains("540s") && m.contains("execute twice"),
        "{m}"
    );

    env.sandbox
        .set_function_meta("grant-db", FunctionMeta::default());
    let v = check_one(
        &env,
        &online_config(&env, &[("orders-db", "grant-db")]).every_integration("timeout", "300s"),
    )
    .await;
    assert_eq!(v.status, Health::Degraded);
    assert!(message(&v, "timeout_longer").contains("waits for nothing"));
}

#[tokio::test]
async fn a_missing_invoke_permission_is_an_error_naming_the_account_and_role() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    env.sandbox.set_invokers(
        "grant-db",
        &["someone-else@sandbox-project.iam.gserviceaccount.com"],
    );
    let v = check_one(&env, &online_config(&env, &[("orders-db", "grant-db")])).await;
    assert_eq!(v.status, Health::Error);
    let m = message(&v, "no_invoke_permission");
    assert!(m.contains(SA), "{m}");
    assert!(m.contains("roles/cloudfunctions.invoker"), "{m}");
    assert!(
        m.contains(&format!(
            "gcloud functions add-iam-policy-binding grant-db --project={PROJECT} --region=us-central1 --member=serviceAccount:{SA} --role=roles/cloudfunctions.invoker"
        )),
        "{m}"
    );
}

/// A public invoker binding under an IAM condition is public too. grantbridge
/// asks for a version-3 policy (`options.requestedPolicyVersion=3`), so it
/// sees the condition and says it; a version-1 answer would rename the role
/// `roles/cloudfunctions.invoker_withcond_<hash>` and drop the condition.
#[tokio::test]
async fn a_conditionally_public_function_is_a_warning_naming_the_condition() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    env.sandbox.set_invokers("grant-db", &[SA]);
    env.sandbox.add_conditional_invoker(
        "grant-db",
        "allUsers",
        "until launch",
        "request.time < timestamp('2027-01-01T00:00:00Z')",
    );
    let v = check_one(&env, &online_config(&env, &[("orders-db", "grant-db")])).await;
    assert_eq!(v.status, Health::Degraded, "{v:#?}");
    let m = message(&v, "public_invoker");
    assert!(
        m.starts_with("PUBLIC FUNCTION: allUsers holds roles/cloudfunctions.invoker on the function projects/sandbox-project/locations/us-central1/functions/grant-db under the condition \"until launch\""),
        "{m}"
    );
    assert!(m.contains("request.time < timestamp("), "{m}");
    assert!(m.contains("gcloud functions set-iam-policy"), "{m}");
}

#[tokio::test]
async fn a_public_function_is_a_loud_warning() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    env.sandbox.set_invokers("grant-db", &[SA, "allUsers"]);
    let v = check_one(&env, &online_config(&env, &[("orders-db", "grant-db")])).await;
    assert_eq!(v.status, Health::Degraded, "{v:#?}");
    let m = message(&v, "public_invoker");
    assert!(m.starts_with("PUBLIC FUNCTION: allUsers"), "{m}");
    assert!(m.contains("anyone on the internet can grant access"), "{m}");
    assert!(
        m.contains("gcloud functions remove-iam-policy-binding grant-db"),
        "{m}"
    );
    assert!(v.detail().contains("PUBLIC FUNCTION"), "{}", v.detail());

    env.sandbox
        .set_invokers("grant-db", &["allAuthenticatedUsers"]);
    let v = check_one(&env, &online_config(&env, &[("orders-db", "grant-db")])).await;
    assert_eq!(v.status, Health::Degraded);
    assert!(message(&v, "public_invoker").contains("allAuthenticatedUsers"));
    // allAuthenticatedUsers includes us: the invoke permission holds.
    assert!(v.finding("invoke_permission").is_some());
}

#[tokio::test]
async fn without_the_viewer_role_the_error_says_which_role_to_grant() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let v = check_one(&env, &online_config(&env, &[("orders-db", "grant-db")])).await;
    assert_eq!(v.status, Health::Error);
    let m = message(&v, "no_viewer");
    assert!(m.contains("roles/cloudfunctions.viewer"), "{m}");
    assert!(
        m.contains(&format!(
            "gcloud functions add-iam-policy-binding grant-db --project={PROJECT} --region=us-central1 --member=serviceAccount:{SA} --role=roles/cloudfunctions.viewer"
        )),
        "{m}"
    );
    // testIamPermissions needs no role: the invoke permission is still confirmed.
    assert!(v.finding("invoke_permission").is_some(), "{v:#?}");
    // Reading the policy needs its own permission, which the viewer role lacks.
    let m = message(&v, "policy_unknown");
    assert!(m.contains("cloudfunctions.functions.getIamPolicy"), "{m}");

    // With the viewer role only, public access is "not checked", loudly.
    env.sandbox.grant_viewer("grant-db", SA);
    let v = check_one(&env, &online_config(&env, &[("orders-db", "grant-db")])).await;
    assert_eq!(v.status, Health::Degraded);
    assert_eq!(
        codes(&v),
        ["timeout", "ingress", "invoke_permission", "policy_unknown"]
    );
}

#[tokio::test]
async fn check_all_reports_every_integration_in_name_order() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    deploy_readable(&env, "grant-crm");
    env.sandbox.set_invokers("grant-crm", &[]);
    let google = env.services(&online_config(
        &env,
        &[("orders-db", "grant-db"), ("crm", "grant-crm")],
    ));
    let verdicts = check::check_all(&google).await;
    let summary: Vec<(&str, &str)> = verdicts
        .iter()
        .map(|v| (v.integration.as_str(), v.status.as_str()))
        .collect();
    assert_eq!(summary, [("crm", "error"), ("orders-db", "ok")]);
    // One access token for the connection, however many integrations.
    assert_eq!(env.sandbox.access_tokens_minted(SA), 1);
}

fn api(env: &TestEnv) -> CloudFunctionsApi {
    CloudFunctionsApi::new(
        grantbridge::http::client().unwrap(),
        url::Url::parse(&env.sandbox.cloudfunctions_api_url()).unwrap(),
        url::Url::parse(&env.sandbox.cloud_run_api_url()).unwrap(),
    )
    .with_backoff(Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_millis(20),
    })
}

async fn token(google: &Services) -> AccessToken {
    check::access_token(google, "prod").await.unwrap()
}

#[tokio::test]
async fn list_functions_follows_pages_and_regions() {
    let env = spawn_env().await;
    for i in 0..230 {
        env.sandbox
            .deploy_function(&format!("fn-{i:03}"), FunctionImpl::Sample, &[]);
    }
    for i in 0..3 {
        env.sandbox.set_function_meta(
            &format!("fn-{i:03}"),
            FunctionMeta {
                region: "europe-west1".into(),
                ..FunctionMeta::default()
            },
        );
    }
    let google = env.services(&online_config(&env, &[]));
    let token = token(&google).await;
    let api = api(&env);

    let err = api.list_functions(&token, PROJECT, "-").await.unwrap_err();
    assert_eq!(err.kind(), Some(ApiErrorKind::PermissionDenied));
    let text = err.for_account(Some(SA)).to_string();
    assert!(
        text.contains(&format!(
            "gcloud projects add-iam-policy-binding {PROJECT} --member=serviceAccount:{SA} --role=roles/cloudfunctions.viewer"
        )),
        "{text}"
    );

    env.sandbox.grant_viewer(&format!("projects/{PROJECT}"), SA);
    let listing = api.list_functions(&token, PROJECT, "-").await.unwrap();
    assert!(listing.unreachable.is_empty());
    let all = listing.functions;
    assert_eq!(all.len(), 230, "three pages of 100 followed");
    let names: Vec<&str> = all.iter().map(|f| f.name.function.as_str()).collect();
    assert_eq!(&names[..4], ["fn-000", "fn-001", "fn-002", "fn-003"]);
    assert_eq!(all[0].name.region, "europe-west1");
    let us = api
        .list_functions(&token, PROJECT, "us-central1")
        .await
        .unwrap()
        .functions;
    assert_eq!(us.len(), 227);
    assert!(
        api.list_functions(&token, "other-project", "-")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_client_classifies_googles_errors() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let api = api(&env);
    let forged = AccessToken::new("ya29.forged".into(), std::time::SystemTime::now());
    let name = FunctionName::new(PROJECT, "us-central1", "grant-db");
    let err = api.get_function(&forged, &name).await.unwrap_err();
    assert_eq!(err.kind(), Some(ApiErrorKind::Unauthenticated));
    assert!(
        err.to_string().contains("HTTP 401 UNAUTHENTICATED"),
        "{err}"
    );
    assert!(!err.is_retryable());

    let google = env.services(&online_config(&env, &[]));
    let token = token(&google).await;
    env.sandbox.grant_viewer(&format!("projects/{PROJECT}"), SA);
    let missing = FunctionName::new(PROJECT, "us-central1", "nope");
    let err = api.get_function(&token, &missing).await.unwrap_err();
    assert_eq!(err.kind(), Some(ApiErrorKind::NotFound));
    assert!(
        err.to_string()
            .contains("No function nope in region us-central1 of project sandbox-project"),
        "{err}"
    );

    let f = api.get_function(&token, &name).await.unwrap();
    assert_eq!(
        f.url.as_deref(),
        Some(env.sandbox.function_url("grant-db").as_str())
    );
    assert_eq!(
        api.test_iam_permissions(
            &token,
            &name,
            &[
                "cloudfunctions.functions.invoke",
                "cloudfunctions.functions.get"
            ]
        )
        .await
        .unwrap(),
        [
            "cloudfunctions.functions.invoke",
            "cloudfunctions.functions.get"
        ]
    );

    // Nothing answers: a transport error, retried, then reported.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let nowhere = CloudFunctionsApi::new(
        grantbridge::http::client().unwrap(),
        url::Url::parse(&format!("http://{dead}")).unwrap(),
        url::Url::parse(&format!("http://{dead}")).unwrap(),
    )
    .with_backoff(Backoff {
        base: Duration::from_millis(1),
        max: Duration::from_millis(2),
    });
    let err = nowhere.get_function(&token, &name).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("could not connect"), "{err}");
}

// ---- the binary ----

async fn run(env: &TestEnv, config: &std::path::Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
        .arg("--config")
        .arg(config)
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
async fn check_online_exits_zero_when_healthy_and_prints_each_verdict() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    let config = env.write_config(&online_config(&env, &[("orders-db", "grant-db")]));
    let out = run(&env, &config, &["check", "--online"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("online checks (Cloud Functions API at"),
        "{stdout}"
    );
    assert!(stdout.contains("  ok       orders-db"), "{stdout}");
    assert!(stdout.contains("ingress ALLOW_ALL"), "{stdout}");
    assert!(
        stdout.ends_with("online: 1 ok, 0 with warnings, 0 failed\n"),
        "{stdout}"
    );

    // Without --online, the API is not read.
    let out = run(&env, &config, &["check"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(!text(&out.stdout).contains("online"));
}

#[tokio::test]
async fn check_online_warns_loudly_but_exits_zero_for_a_public_function() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    env.sandbox.set_invokers("grant-db", &[SA, "allUsers"]);
    let config = env.write_config(&online_config(&env, &[("orders-db", "grant-db")]));
    let out = run(&env, &config, &["check", "--online"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("  WARNING  orders-db"), "{stdout}");
    assert!(
        stdout.contains("! WARNING PUBLIC FUNCTION: allUsers"),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("anyone on the internet can grant access"));
}

#[tokio::test]
async fn check_online_exits_non_zero_on_any_error() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    env.sandbox.grant_viewer(&format!("projects/{PROJECT}"), SA);
    let toml = online_config(&env, &[("orders-db", "grant-db")])
        .set("integrations.hr.connection", "prod")
        .set("integrations.hr.project_id", PROJECT)
        .set("integrations.hr.function", "grant-hr");
    let config = env.write_config(&toml);
    let out = run(&env, &config, &["check", "--online"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("  ERROR    hr"), "{stdout}");
    assert!(
        stdout.contains("x ERROR   function grant-hr does not exist"),
        "{stdout}"
    );
    assert!(
        stdout.contains("online: 1 ok, 0 with warnings, 1 failed"),
        "{stdout}"
    );
}

/// `ListFunctionsResponse.unreachable`: the regions an all-regions listing
/// could not reach are named, so an incomplete list is not taken as complete.
#[tokio::test]
async fn functions_list_names_the_regions_google_could_not_reach() {
    let env = spawn_env().await;
    env.sandbox
        .deploy_function("fn-a", FunctionImpl::Sample, &[]);
    env.sandbox
        .deploy_function("fn-b", FunctionImpl::Sample, &[]);
    env.sandbox.set_function_meta(
        "fn-b",
        FunctionMeta {
            region: "asia-east1".into(),
            ..FunctionMeta::default()
        },
    );
    env.sandbox.set_unreachable_regions(&["asia-east1"]);
    env.sandbox.grant_viewer(&format!("projects/{PROJECT}"), SA);
    let config = env.write_config(&online_config(&env, &[]));
    let out = run(
        &env,
        &config,
        &["functions", "list", "--connection", "prod"],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains("fn-a") && !stdout.contains("fn-b"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "WARNING: Google could not reach projects/{PROJECT}/locations/asia-east1"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn functions_list_prints_a_table_of_the_connections_project() {
    let env = spawn_env().await;
    for i in 0..120 {
        env.sandbox
            .deploy_function(&format!("fn-{i:03}"), FunctionImpl::Sample, &[]);
    }
    let run_url = env
        .sandbox
        .deploy_gen2_function("fn-007", FunctionImpl::Sample, &[])
        .await
        .unwrap();
    env.sandbox.set_function_meta(
        "fn-007",
        FunctionMeta {
            region: "europe-west1".into(),
            status: "OFFLINE".into(),
            timeout: Duration::from_secs(300),
            ingress: "ALLOW_INTERNAL_ONLY".into(),
            runtime: "nodejs20".into(),
            ..FunctionMeta::default()
        },
    );
    env.sandbox.grant_viewer(&format!("projects/{PROJECT}"), SA);
    // No integration uses `prod`: the project comes from the key file.
    let config = env.write_config(&online_config(&env, &[]));
    let out = run(
        &env,
        &config,
        &["functions", "list", "--connection", "prod"],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 121, "a header and every function across pages");
    assert!(lines[0].starts_with("NAME"), "{stdout}");
    for column in [
        "REGION", "STATE", "GEN", "URL", "RUNTIME", "TIMEOUT", "INGRESS",
    ] {
        assert!(lines[0].contains(column), "{}", lines[0]);
    }
    let row = lines[1];
    for cell in [
        "fn-007",
        "europe-west1",
        "FAILED",
        "2nd",
        run_url.as_str(),
        "nodejs20",
        "300s",
        "ALLOW_INTERNAL_ONLY",
    ] {
        assert!(row.contains(cell), "{row}");
    }
    assert!(
        lines[2].contains(&env.sandbox.function_url("fn-000")),
        "{}",
        lines[2]
    );
    assert!(
        text(&out.stderr).contains("120 function(s) in project(s) sandbox-project (any region)")
    );

    let out = run(
        &env,
        &config,
        &[
            "functions",
            "list",
            "--connection",
            "prod",
            "--region",
            "europe-west1",
        ],
    )
    .await;
    assert_eq!(text(&out.stdout).lines().count(), 2);

    // An explicit project without the viewer role: a clear error, exit 1.
    let out = run(
        &env,
        &config,
        &[
            "functions",
            "list",
            "--connection",
            "prod",
            "--project",
            "acme-other",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("HTTP 403") && stderr.contains("roles/cloudfunctions.viewer"),
        "{stderr}"
    );

    let out = run(
        &env,
        &config,
        &["functions", "list", "--connection", "nope"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no connection named `nope`"));
}

#[tokio::test]
async fn without_the_viewer_role_a_missing_function_is_not_mistaken_for_a_missing_grant() {
    let env = spawn_env().await;
    // No read grant at all, and no such function: testIamPermissions answers
    // an empty set for a missing function, as for a missing grant (Google's
    // own description of the method), so the advice names both.
    let v = check_one(&env, &default_url_config(&env, "hr", "grant-hr")).await;
    assert_eq!(
        codes(&v),
        ["no_viewer", "no_invoke_permission", "policy_unknown"]
    );
    assert_eq!(v.status, Health::Error);
    let m = message(&v, "no_invoke_permission");
    assert!(m.contains("or no such function exists"), "{m}");
    assert!(m.contains("roles/cloudfunctions.invoker"), "{m}");
    // With read access, a missing grant is said as such.
    deploy_readable(&env, "grant-hr");
    env.sandbox.set_invokers("grant-hr", &[]);
    let v = check_one(&env, &default_url_config(&env, "hr", "grant-hr")).await;
    assert!(!message(&v, "no_invoke_permission").contains("or no such function"));
}

/// `grantbridge api` calls the (sandbox's) Cloud Functions API with the
/// connection's access token, prints the answer and never the token, and
/// refuses any host that is not Google's or the configured endpoint.
#[tokio::test]
async fn the_api_command_calls_google_and_nothing_else() {
    let env = spawn_env().await;
    deploy_readable(&env, "grant-db");
    env.sandbox.grant_viewer(&format!("projects/{PROJECT}"), SA);
    let config = env.write_config(&online_config(&env, &[("orders-db", "grant-db")]));
    let out = run(
        &env,
        &config,
        &[
            "api",
            "GET",
            &format!("/v1/projects/{PROJECT}/locations/-/functions"),
            "--connection",
            "prod",
        ],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_str(&stdout).expect("pretty JSON");
    assert!(
        answer["functions"].as_array().is_some_and(|f| f
            .iter()
            .any(|f| f["name"].as_str().unwrap_or("").ends_with("/grant-db"))),
        "{answer}"
    );
    assert!(!stdout.contains("ya29.") && !text(&out.stderr).contains("ya29."));

    let out = run(
        &env,
        &config,
        &[
            "api",
            "GET",
            "https://evil.example.com/v1/x",
            "--connection",
            "prod",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a Google API"),
        "{}",
        text(&out.stderr)
    );
}

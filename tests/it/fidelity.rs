//! The sandbox checked against Google's definitions, not against itself: its
//! API answers are validated against the response schema of their method in
//! the discovery documents google-api-python-client ships
//! (tests/conformance/discovery.py): no field Google does not define, only
//! enum values Google defines, Google's types.
//!
//! Covered: IAM Credentials (generateIdToken, generateAccessToken), STS
//! (token), Cloud Functions v1 (get, list, testIamPermissions, getIamPolicy in
//! both policy versions), Cloud Functions v2 (get and list of both
//! generations, HTTP and event-driven, ACTIVE and FAILED) and the Cloud Run
//! Admin API v2 (testIamPermissions, getIamPolicy of a service). Their error
//! answers are checked against Google's error envelope as google-api-core reads it.

use serde_json::{Value, json};

use grantbridge_sandbox::{FunctionImpl, FunctionMeta};

use crate::helpers::{SA, spawn_env};

const TARGET: &str = "fidelity-target@sandbox-project.iam.gserviceaccount.com";

/// Runs a conformance script on `cases` (a JSON list on its stdin); every
/// case must print `ok`.
async fn conform(script: &str, cases: &[Value]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let mut child = tokio::process::Command::new("python3")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(Value::Array(cases.to_vec()).to_string().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}\nanswers: {cases:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok ")).count(),
        cases.len(),
        "{report}"
    );
}

async fn call(req: reqwest::RequestBuilder) -> Value {
    let resp = req.send().await.expect("the sandbox answers");
    assert!(
        resp.status().is_success(),
        "HTTP {} from {}",
        resp.status(),
        resp.url()
    );
    resp.json().await.expect("a JSON answer")
}

#[tokio::test]
async fn the_sandboxs_answers_conform_to_googles_discovery_documents() {
    let env = spawn_env().await;
    env.sandbox.create_service_account(TARGET);
    env.sandbox.grant_token_creator(TARGET, SA);
    env.deploy("grant-db");
    env.sandbox.grant_iam_policy_viewer("grant-db", SA);
    env.sandbox
        .set_invokers("grant-db", &[SA, "allAuthenticatedUsers"]);
    env.sandbox.add_conditional_invoker(
        "grant-db",
        "allUsers",
        "t",
        "request.time < timestamp('2027-01-01T00:00:00Z')",
    );
    env.deploy("grant-empty");
    env.sandbox.grant_iam_policy_viewer("grant-empty", SA);
    env.sandbox.set_invokers("grant-empty", &[]);
    env.sandbox
        .deploy_gen2_function("grant-crm", FunctionImpl::Sample, &[SA, "allUsers"])
        .await
        .unwrap();
    env.sandbox
        .deploy_gen2_function("sync-crm", FunctionImpl::Sample, &[])
        .await
        .unwrap();
    env.sandbox.set_function_meta(
        "sync-crm",
        FunctionMeta {
            https_trigger: false,
            status: "OFFLINE".into(),
            ..FunctionMeta::default()
        },
    );
    env.deploy("sync-legacy");
    env.sandbox.set_function_meta(
        "sync-legacy",
        FunctionMeta {
            https_trigger: false,
            ..FunctionMeta::default()
        },
    );
    env.sandbox.grant_viewer("projects/sandbox-project", SA);
    env.sandbox.grant_run_viewer("projects/sandbox-project", SA);
    env.sandbox
        .grant_iam_policy_viewer("projects/sandbox-project", SA);
    let services = env.services(&env.config(&[]));
    let token = services.credentials["prod"].access_token().await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let bearer = |r: reqwest::RequestBuilder| r.bearer_auth(token.expose());

    let iam = |verb: &str| {
        format!(
            "{}/v1/projects/-/serviceAccounts/{TARGET}:{verb}",
            env.sandbox.iam_credentials_url()
        )
    };
    let function = |name: &str, verb: &str| {
        format!(
            "{}/v1/projects/sandbox-project/locations/us-central1/functions/{name}:{verb}",
            env.sandbox.cloudfunctions_api_url().trim_end_matches('/')
        )
    };
    let resource = |version: &str, collection: &str, name: &str| {
        format!(
            "{}/{version}/projects/sandbox-project/locations/{}",
            env.sandbox.cloudfunctions_api_url().trim_end_matches('/'),
            if name.is_empty() {
                format!("-/{collection}?pageSize=2")
            } else {
                format!("us-central1/{collection}/{name}")
            }
        )
    };
    let get = |url: String| call(bearer(http.get(url)));
    let cf2 = "cloudfunctions.projects.locations.functions";
    let run = "run.projects.locations.services";
    let id = "iamcredentials.projects.serviceAccounts";
    let cf = "cloudfunctions.projects.locations.functions";
    let answers = vec![
        ("iamcredentials.v1", format!("{id}.generateIdToken"),
         call(bearer(http.post(iam("generateIdToken"))).json(&json!({"audience": "https://a", "includeEmail": true}))).await),
        ("iamcredentials.v1", format!("{id}.generateAccessToken"),
         call(bearer(http.post(iam("generateAccessToken"))).json(&json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"]}))).await),
        ("cloudfunctions.v1", format!("{cf}.testIamPermissions"),
         call(bearer(http.post(function("grant-db", "testIamPermissions"))).json(&json!({"permissions": ["cloudfunctions.functions.invoke", "cloudfunctions.functions.get"]}))).await),
        ("cloudfunctions.v1", format!("{cf}.testIamPermissions"),
         call(bearer(http.post(function("missing", "testIamPermissions"))).json(&json!({"permissions": ["cloudfunctions.functions.invoke"]}))).await),
        ("cloudfunctions.v1", format!("{cf}.getIamPolicy"),
         call(bearer(http.get(function("grant-db", "getIamPolicy")))).await),
        ("cloudfunctions.v1", format!("{cf}.getIamPolicy"),
         call(bearer(http.get(format!("{}?options.requestedPolicyVersion=3", function("grant-db", "getIamPolicy"))))).await),
        ("cloudfunctions.v1", format!("{cf}.getIamPolicy"),
         call(bearer(http.get(function("grant-empty", "getIamPolicy")))).await),
        ("cloudfunctions.v1", format!("{cf}.get"), get(resource("v1", "functions", "grant-db")).await),
        ("cloudfunctions.v1", format!("{cf}.get"), get(resource("v1", "functions", "sync-legacy")).await),
        ("cloudfunctions.v1", format!("{cf}.list"), get(resource("v1", "functions", "")).await),
        ("cloudfunctions.v2", format!("{cf2}.get"), get(resource("v2", "functions", "grant-db")).await),
        ("cloudfunctions.v2", format!("{cf2}.get"), get(resource("v2", "functions", "grant-crm")).await),
        ("cloudfunctions.v2", format!("{cf2}.get"), get(resource("v2", "functions", "sync-crm")).await),
        ("cloudfunctions.v2", format!("{cf2}.get"), get(resource("v2", "functions", "sync-legacy")).await),
        ("cloudfunctions.v2", format!("{cf2}.list"), get(resource("v2", "functions", "")).await),
        ("cloudfunctions.v2", format!("{cf2}.testIamPermissions"),
         call(bearer(http.post(format!("{}:testIamPermissions", resource("v2", "functions", "grant-db")))).json(&json!({"permissions": ["cloudfunctions.functions.invoke"]}))).await),
        ("cloudfunctions.v2", format!("{cf2}.getIamPolicy"),
         get(format!("{}:getIamPolicy", resource("v2", "functions", "grant-crm"))).await),
        ("run.v2", format!("{run}.testIamPermissions"),
         call(bearer(http.post(format!("{}:testIamPermissions", resource("v2", "services", "grant-crm")))).json(&json!({"permissions": ["run.routes.invoke", "run.services.get"]}))).await),
        ("run.v2", format!("{run}.getIamPolicy"),
         get(format!("{}:getIamPolicy?options.requestedPolicyVersion=3", resource("v2", "services", "grant-crm"))).await),
    ];
    // STS: a subject token of a workload identity provider, exchanged.
    let provider = env
        .sandbox
        .create_workload_identity_provider("pool", "provider");
    let subject = env.sandbox.issue_subject_token(&provider, "workload-1");
    let sts = call(http.post(env.sandbox.sts_url()).form(&[
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("audience", provider.as_str()),
        ("scope", "https://www.googleapis.com/auth/cloud-platform"),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token", subject.as_str()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ]))
    .await;
    let mut answers = answers;
    answers.push(("sts.v1", "sts.token".to_owned(), sts));
    let cases: Vec<Value> = answers
        .into_iter()
        .map(|(doc, method, body)| json!({"doc": doc, "method": method, "body": body}))
        .collect();
    conform("tests/conformance/discovery.py", &cases).await;
}

/// The error answers of the sandbox's Google API emulations, in Google's
/// envelope as google-api-core reads it (tests/conformance/google_errors.py):
/// `code` the HTTP status, `status` the google.rpc.Code that google-api-core
/// maps to that status, the message read back.
#[tokio::test]
async fn the_sandboxs_error_answers_read_as_googles_clients_read_them() {
    let env = spawn_env().await;
    env.deploy("grant-db");
    env.sandbox
        .deploy_gen2_function("grant-crm", FunctionImpl::Sample, &[SA])
        .await
        .unwrap();
    env.sandbox.create_service_account(TARGET);
    let services = env.services(&env.config(&[]));
    let token = services.credentials["prod"].access_token().await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = env.sandbox.cloudfunctions_api_url();
    let fn_url = |v: &str, c: &str, name: &str| {
        format!("{base}/{v}/projects/sandbox-project/locations/us-central1/{c}/{name}")
    };
    let answer = |where_: &str, req: reqwest::RequestBuilder| {
        let where_ = where_.to_owned();
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            assert!(status >= 400, "{where_}: HTTP {status}");
            json!({"where": where_, "status": status, "body": resp.json::<Value>().await.unwrap()})
        }
    };
    let t = token.expose();
    let mut cases = vec![
        answer(
            "v1 get without a token",
            http.get(fn_url("v1", "functions", "grant-db")),
        )
        .await,
        answer(
            "v2 get without the viewer role",
            http.get(fn_url("v2", "functions", "grant-db"))
                .bearer_auth(t),
        )
        .await,
        answer(
            "Run getIamPolicy without roles/run.viewer",
            http.get(format!(
                "{}:getIamPolicy",
                fn_url("v2", "services", "grant-crm")
            ))
            .bearer_auth(t),
        )
        .await,
        answer(
            "v1 testIamPermissions, a permission of another service",
            http.post(format!(
                "{}:testIamPermissions",
                fn_url("v1", "functions", "grant-db")
            ))
            .bearer_auth(t)
            .json(&json!({"permissions": ["storage.buckets.get"]})),
        )
        .await,
        answer(
            "IAM Credentials generateIdToken without the token creator role",
            http.post(format!(
                "{}/v1/projects/-/serviceAccounts/{TARGET}:generateIdToken",
                env.sandbox.iam_credentials_url()
            ))
            .bearer_auth(t)
            .json(&json!({"audience": "https://a"})),
        )
        .await,
    ];
    env.sandbox.grant_viewer("projects/sandbox-project", SA);
    env.sandbox
        .grant_iam_policy_viewer("projects/sandbox-project", SA);
    env.sandbox.grant_run_viewer("projects/sandbox-project", SA);
    cases.push(
        answer(
            "v2 get of a missing function",
            http.get(fn_url("v2", "functions", "nope")).bearer_auth(t),
        )
        .await,
    );
    cases.push(
        answer(
            "Run getIamPolicy of a missing service",
            http.get(format!("{}:getIamPolicy", fn_url("v2", "services", "nope")))
                .bearer_auth(t),
        )
        .await,
    );
    cases.push(
        answer(
            "v1 getIamPolicy, policy version 2",
            http.get(format!(
                "{}:getIamPolicy?options.requestedPolicyVersion=2",
                fn_url("v1", "functions", "grant-db")
            ))
            .bearer_auth(t),
        )
        .await,
    );
    cases.push(
        answer(
            "v2 list, a garbage page token",
            http.get(format!(
                "{base}/v2/projects/sandbox-project/locations/-/functions?pageToken=garbage"
            ))
            .bearer_auth(t),
        )
        .await,
    );
    cases.push(
        answer(
            "an unknown route",
            http.get(format!("{base}/v3/nothing")).bearer_auth(t),
        )
        .await,
    );

    conform("tests/conformance/google_errors.py", &cases).await;
}

/// Google's own Cloud Functions client (google-cloud-functions, REST
/// transport) lists, gets and reads the IAM of the sandbox's functions, and
/// agrees with what grantbridge reads from the same API.
#[tokio::test]
async fn the_official_cloud_functions_client_reads_the_sandbox() {
    let env = spawn_env().await;
    for name in ["fn-a", "fn-b", "fn-c"] {
        env.deploy(name);
    }
    let run = env
        .sandbox
        .deploy_gen2_function("fn-gen2", FunctionImpl::Sample, &[SA])
        .await
        .unwrap();
    env.sandbox.grant_viewer("projects/sandbox-project", SA);
    env.sandbox.grant_iam_policy_viewer("fn-b", SA);
    let services = env.services(&env.config(&[]));
    let token = services.credentials["prod"].access_token().await.unwrap();
    let host = env
        .sandbox
        .cloudfunctions_api_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let seen = crate::helpers::python_json(
        "tests/interop/cloud_functions_client.py",
        &[
            &host,
            &token.expose(),
            &"sandbox-project",
            &"fn-b",
            &"fn-gen2",
        ],
    )
    .await;
    let listed: Vec<&str> = seen["listed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        listed.len(),
        3,
        "three 1st gen functions across pages of two (v1 hides 2nd gen): {seen}"
    );
    assert_eq!(
        seen["v2_listed"],
        json!({"fn-a": "GEN_1", "fn-b": "GEN_1", "fn-c": "GEN_1", "fn-gen2": "GEN_2"}),
        "v2 lists both generations: {seen}"
    );
    assert_eq!(seen["gen2"]["environment"], "GEN_2");
    assert_eq!(seen["gen2"]["state"], "ACTIVE");
    assert_eq!(seen["gen2"]["uri"], run.as_str());
    assert_eq!(seen["gen2"]["url"], env.sandbox.function_url("fn-gen2"));
    assert_eq!(seen["gen2"]["timeout_s"], 60);
    assert_eq!(seen["got"]["status"], "ACTIVE", "{seen}");
    assert_eq!(
        seen["got"]["url"],
        env.sandbox.function_url("fn-b"),
        "{seen}"
    );
    assert_eq!(
        seen["invokers"],
        json!([format!("serviceAccount:{SA}")]),
        "{seen}"
    );
    assert_eq!(
        seen["held"],
        json!(["cloudfunctions.functions.invoke"]),
        "{seen}"
    );
    assert_eq!(
        seen["missing_held"],
        json!([]),
        "a missing function: an empty set"
    );

    // grantbridge's own reader sees the same function.
    let api = grantbridge::google::CloudFunctionsApi::new(
        grantbridge::http::client().unwrap(),
        url::Url::parse(&env.sandbox.cloudfunctions_api_url()).unwrap(),
        url::Url::parse(&env.sandbox.cloud_run_api_url()).unwrap(),
    );
    let name = grantbridge::google::functions_api::FunctionName::new(
        "sandbox-project",
        "us-central1",
        "fn-b",
    );
    let ours = api.get_function(&token, &name).await.unwrap();
    assert_eq!(ours.url.as_deref(), seen["got"]["url"].as_str());
    let gen2 = api
        .get_function(
            &token,
            &grantbridge::google::functions_api::FunctionName::new(
                "sandbox-project",
                "us-central1",
                "fn-gen2",
            ),
        )
        .await
        .unwrap();
    assert_eq!(gen2.service_uri.as_deref(), seen["gen2"]["uri"].as_str());
    assert_eq!(
        gen2.service.map(|s| s.to_string()).as_deref(),
        seen["gen2"]["service"].as_str()
    );
}

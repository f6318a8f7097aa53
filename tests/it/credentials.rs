//! Every credential source minting real (sandbox-)Google ID tokens, and the
//! errors operators see when Google says no.

use std::sync::Arc;

use grantbridge::clock::Clock;
use grantbridge::config::Config;
use grantbridge::env::MapEnv;

use grantbridge_sandbox::daemon_config::DaemonConfig;

use crate::helpers::{SA, TestEnv, spawn_env};

const AUD: &str = "https://us-central1-acme-prod.cloudfunctions.net/grant-db";

fn key_config(env: &TestEnv) -> DaemonConfig {
    DaemonConfig::new("t").key_file_connection("prod", &env.key_file)
}

/// Connection `gke` on the sandbox's metadata server.
fn metadata_config(env: &TestEnv) -> DaemonConfig {
    DaemonConfig::new("t")
        .set("connections.gke.credentials", "metadata")
        .set("connections.gke.metadata_host", env.sandbox.metadata_host())
}

/// Connection `adc`: Application Default Credentials.
fn adc_config() -> DaemonConfig {
    DaemonConfig::new("t").set("connections.adc.credentials", "adc")
}

#[tokio::test]
async fn a_service_account_key_mints_an_id_token_google_would_accept() {
    let env = spawn_env().await;
    let google = env.services(&key_config(&env));
    let token = google.tokens.get("prod", AUD).await.unwrap();
    let claims = env
        .sandbox
        .verify_id_token(token.expose(), AUD)
        .expect("the sandbox's Google verifies it");
    assert_eq!(claims.email.as_deref(), Some(SA));
    assert_eq!(claims.iss, "https://accounts.google.com");
    assert_eq!(claims.aud, AUD);
    assert_eq!(token.email.as_deref(), Some(SA));
    assert_eq!(google.metrics.token_mints("prod", true), 1);
}

#[tokio::test]
async fn concurrent_first_calls_make_one_mint_at_google() {
    let env = spawn_env().await;
    let google = env.services(&key_config(&env));
    let tokens = Arc::clone(&google.tokens);
    let calls = (0..200).map(|_| {
        let tokens = tokens.clone();
        tokio::spawn(async move { tokens.get("prod", AUD).await.map(|t| t.expose().to_owned()) })
    });
    let results: Vec<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert!(results.iter().all(|t| t == &results[0]));
    assert_eq!(env.sandbox.id_tokens_minted(SA), 1);
}

#[tokio::test]
async fn a_deleted_key_is_reported_with_googles_words_and_what_to_do() {
    let env = spawn_env().await;
    env.sandbox.delete_key(SA, &env.key_id);
    let google = env.services(&key_config(&env));
    let err = google.tokens.get("prod", AUD).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("invalid_grant") && text.contains("Invalid JWT Signature."),
        "{text}"
    );
    assert!(
        text.contains("rotated") && text.contains(SA) && text.contains(&env.key_id),
        "{text}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_skewed_clock_is_diagnosed_as_clock_skew() {
    let env = spawn_env().await;
    let skewed = Clock::system().skewed(2 * 3600);
    let google = env.services_with(&key_config(&env), &MapEnv::new(), skewed);
    let err = google
        .tokens
        .get("prod", AUD)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("short-lived") && err.contains("clock"),
        "{err}"
    );
}

#[tokio::test]
async fn a_disabled_service_account_is_reported() {
    let env = spawn_env().await;
    env.sandbox.disable_service_account(SA);
    let google = env.services(&key_config(&env));
    let err = google
        .tokens
        .get("prod", AUD)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("account not found") && err.contains("deleted or disabled"),
        "{err}"
    );
}

#[tokio::test]
async fn the_metadata_server_mints_for_the_attached_account() {
    let env = spawn_env().await;
    env.sandbox.attach_metadata_account(Some(SA));
    let config = metadata_config(&env);
    let google = env.services(&config);
    let token = google.tokens.get("gke", AUD).await.unwrap();
    assert_eq!(
        env.sandbox
            .verify_id_token(token.expose(), AUD)
            .unwrap()
            .email
            .as_deref(),
        Some(SA)
    );
}

/// A metadata server whose token answers lack `Metadata-Flavor: Google` (a
/// GKE release once sent them so) still mints: like google-auth, grantbridge
/// checks the header only when probing, never on data answers.
#[tokio::test]
async fn a_token_answer_without_the_metadata_flavor_header_is_accepted() {
    let env = spawn_env().await;
    env.sandbox.attach_metadata_account(Some(SA));
    env.sandbox.metadata_drops_flavor_on_tokens(true);
    let google = env.services(&metadata_config(&env));
    let token = google.tokens.get("gke", AUD).await.unwrap();
    assert!(env.sandbox.verify_id_token(token.expose(), AUD).is_ok());
    let access = google.credentials["gke"].access_token().await.unwrap();
    assert!(!access.expose().is_empty());
}

#[tokio::test]
async fn a_vm_without_a_service_account_gets_a_workload_identity_hint() {
    let env = spawn_env().await;
    env.sandbox.attach_metadata_account(None);
    let config = metadata_config(&env);
    let err = env
        .services(&config)
        .tokens
        .get("gke", AUD)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("404") && err.contains("iam.gke.io/gcp-service-account"),
        "{err}"
    );
}

#[tokio::test]
async fn adc_uses_google_application_credentials_then_the_metadata_server() {
    let env = spawn_env().await;
    let config = adc_config();
    let with_file = MapEnv::new()
        .with(
            "GOOGLE_APPLICATION_CREDENTIALS",
            env.key_file.to_str().unwrap(),
        )
        .with("HOME", "/nonexistent");
    let google = env.services_with(&config, &with_file, Clock::system());
    assert!(google.credentials["adc"].principal().contains(&env.key_id));
    let token = google.tokens.get("adc", AUD).await.unwrap();
    assert!(env.sandbox.verify_id_token(token.expose(), AUD).is_ok());

    env.sandbox.attach_metadata_account(Some(SA));
    let on_gke = MapEnv::new()
        .with("GCE_METADATA_HOST", env.sandbox.metadata_host())
        .with("HOME", "/nonexistent");
    let google = env.services_with(&config, &on_gke, Clock::system());
    assert!(
        google.credentials["adc"]
            .principal()
            .contains("metadata server")
    );
    let token = google.tokens.get("adc", AUD).await.unwrap();
    assert_eq!(token.email.as_deref(), Some(SA));
}

#[tokio::test]
async fn adc_refuses_a_persons_gcloud_login_at_start() {
    let env = spawn_env().await;
    let gcloud = env.dir.path().join("gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    std::fs::write(
        gcloud.join("application_default_credentials.json"),
        r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#,
    )
    .unwrap();
    let menv = MapEnv::new().with("CLOUDSDK_CONFIG", gcloud.to_str().unwrap());
    let path = env.write_config(&adc_config());
    let config = Config::load(&path, &menv).unwrap();
    let err =
        grantbridge::services::Services::build(config, &menv, Clock::system(), Default::default())
            .err()
            .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("connections.adc")
            && text.contains("authorized_user")
            && text.contains("impersonate"),
        "{text}"
    );
}

const TARGET: &str = "fn-invoker@sandbox-project.iam.gserviceaccount.com";
const MIDDLE: &str = "delegate@sandbox-project.iam.gserviceaccount.com";

fn impersonation_config(env: &TestEnv, delegates: &[&str]) -> DaemonConfig {
    DaemonConfig::new("t")
        .set("connections.imp.credentials", "impersonate")
        .set("connections.imp.target_service_account", TARGET)
        .set("connections.imp.delegates", delegates.to_vec())
        .set(
            "connections.imp.key_file",
            env.key_file.display().to_string(),
        )
        .set(
            "connections.imp.iam_credentials_url",
            env.sandbox.iam_credentials_url(),
        )
}

#[tokio::test]
async fn impersonation_mints_as_the_target_with_token_creator() {
    let env = spawn_env().await;
    env.sandbox.create_service_account(TARGET);
    env.sandbox.grant_token_creator(TARGET, SA);
    let google = env.services(&impersonation_config(&env, &[]));
    let token = google.tokens.get("imp", AUD).await.unwrap();
    let claims = env.sandbox.verify_id_token(token.expose(), AUD).unwrap();
    assert_eq!(
        claims.email.as_deref(),
        Some(TARGET),
        "includeEmail: the token names the target"
    );
    // A second audience reuses the source's access token.
    google
        .tokens
        .get("imp", "https://other.example/f")
        .await
        .unwrap();
    assert_eq!(env.sandbox.access_tokens_minted(SA), 1);
}

#[tokio::test]
async fn impersonation_without_token_creator_says_which_role_to_grant() {
    let env = spawn_env().await;
    env.sandbox.create_service_account(TARGET);
    let google = env.services(&impersonation_config(&env, &[]));
    let err = google.tokens.get("imp", AUD).await.unwrap_err().to_string();
    assert!(
        err.contains("403")
            && err.contains("roles/iam.serviceAccountTokenCreator")
            && err.contains(TARGET),
        "{err}"
    );
}

#[tokio::test]
async fn impersonation_through_a_delegation_chain() {
    let env = spawn_env().await;
    env.sandbox.create_service_account(TARGET);
    env.sandbox.create_service_account(MIDDLE);
    env.sandbox.grant_token_creator(MIDDLE, SA);
    env.sandbox.grant_token_creator(TARGET, MIDDLE);
    let google = env.services(&impersonation_config(&env, &[MIDDLE]));
    let token = google.tokens.get("imp", AUD).await.unwrap();
    assert_eq!(token.email.as_deref(), Some(TARGET));
}

/// An `adc` connection with `menv` mints ID tokens as `email`.
async fn adc_mints_as(env: &TestEnv, menv: &MapEnv, email: &str) {
    let google = env.services_with(&adc_config(), menv, Clock::system());
    let token = google.tokens.get("adc", AUD).await.unwrap();
    assert_eq!(
        env.sandbox
            .verify_id_token(token.expose(), AUD)
            .unwrap()
            .email
            .as_deref(),
        Some(email)
    );
}

/// The `impersonated_service_account` file gcloud writes, impersonating
/// `TARGET` from `source` through the sandbox's IAM Credentials.
fn impersonated_adc(env: &TestEnv, source: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "type": "impersonated_service_account",
        "service_account_impersonation_url": format!("{}/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken", env.sandbox.iam_credentials_url()),
        "delegates": [],
        "source_credentials": source,
    })
}

#[tokio::test]
async fn an_impersonated_service_account_adc_file_works() {
    let env = spawn_env().await;
    env.sandbox.create_service_account(TARGET);
    env.sandbox.grant_token_creator(TARGET, SA);
    let source: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&env.key_file).unwrap()).unwrap();
    let adc = impersonated_adc(&env, source);
    let adc_path = env.dir.path().join("adc.json");
    std::fs::write(&adc_path, adc.to_string()).unwrap();
    let menv = MapEnv::new().with("GOOGLE_APPLICATION_CREDENTIALS", adc_path.to_str().unwrap());
    adc_mints_as(&env, &menv, TARGET).await;
}

/// `gcloud auth application-default login --impersonate-service-account=SA`:
/// an `impersonated_service_account` file whose source is the person's login
/// (`authorized_user`). The refresh token buys the person's access token
/// (google-auth's refresh grant), which IAM Credentials `generateIdToken`
/// turns into the target's ID token. A revoked login says what to run.
#[tokio::test]
async fn an_impersonated_adc_file_with_a_users_login_as_source_works() {
    const USER: &str = "alice@example.com";
    let env = spawn_env().await;
    env.sandbox.create_service_account(TARGET);
    let login = env.sandbox.create_user_login(USER);
    env.sandbox.grant_token_creator(TARGET, USER);
    let adc = impersonated_adc(&env, login.authorized_user_json(&env.sandbox.token_url()));
    let adc_path = env.dir.path().join("adc-user.json");
    std::fs::write(&adc_path, adc.to_string()).unwrap();
    let menv = MapEnv::new().with("GOOGLE_APPLICATION_CREDENTIALS", adc_path.to_str().unwrap());
    let google = env.services_with(&adc_config(), &menv, Clock::system());
    assert!(
        google.credentials["adc"].principal().contains(USER),
        "{}",
        google.credentials["adc"].principal()
    );
    let token = google.tokens.get("adc", AUD).await.unwrap();
    assert_eq!(
        env.sandbox
            .verify_id_token(token.expose(), AUD)
            .unwrap()
            .email
            .as_deref(),
        Some(TARGET)
    );
    assert_eq!(
        env.sandbox.access_tokens_minted(USER),
        1,
        "one refresh grant"
    );

    // google-auth, from the same file, gets the same identity from the sandbox.
    let seen = crate::helpers::python_json(
        "tests/interop/google_auth_impersonated.py",
        &[
            &adc_path,
            &env.sandbox.token_url(),
            &env.sandbox.iam_credentials_url(),
            &AUD,
            &env.sandbox.pem_certs_url(),
        ],
    )
    .await;
    assert_eq!(seen["source"], "google.oauth2.credentials", "{seen}");
    assert_eq!(seen["claims"]["email"], TARGET, "{seen}");
    assert_eq!(seen["claims"]["aud"], AUD, "{seen}");

    // A revoked login: the refresh token is refused, and the error says why.
    let revoked = impersonated_adc(
        &env,
        serde_json::json!({
            "type": "authorized_user", "client_id": login.client_id, "client_secret": login.client_secret,
            "refresh_token": "1//revoked", "token_uri": env.sandbox.token_url(),
        }),
    );
    std::fs::write(&adc_path, revoked.to_string()).unwrap();
    let google = env.services_with(&adc_config(), &menv, Clock::system());
    let err = google.tokens.get("adc", AUD).await.unwrap_err().to_string();
    assert!(
        err.contains("invalid_grant") && err.contains("gcloud auth application-default login"),
        "{err}"
    );
    // And a login on its own is still refused: it mints no ID token for an audience.
    std::fs::write(
        &adc_path,
        login
            .authorized_user_json(&env.sandbox.token_url())
            .to_string(),
    )
    .unwrap();
    let config =
        grantbridge::config::Config::load(&env.write_config(&adc_config()), &menv).unwrap();
    let err = grantbridge::services::Services::build(
        config,
        &menv,
        Clock::system(),
        std::sync::Arc::new(grantbridge::metrics::Metrics::new()),
    )
    .err()
    .expect("a bare login is refused")
    .to_string();
    assert!(err.contains("--impersonate-service-account"), "{err}");
}

/// Workload identity federation (an `external_account` credential
/// configuration, as `gcloud iam workload-identity-pools create-cred-config`
/// writes it): the subject token from a file (a Kubernetes projected token)
/// or from a URL answering JSON (Azure's IMDS), exchanged at STS, then the
/// federated identity impersonates the service account that mints the ID
/// token. Used as `credentials = "external_account"` and through ADC;
/// google-auth's identity_pool credentials take the same file to the same
/// sandbox. Each failing step says which it was.
#[tokio::test]
async fn workload_identity_federation_mints_as_the_service_account() {
    const SUBJECT: &str = "system:serviceaccount:grantbridge:grantbridge";
    let env = spawn_env().await;
    let provider = env
        .sandbox
        .create_workload_identity_provider("on-prem", "cluster-a");
    let principal = env.sandbox.federated_principal(&provider, SUBJECT);
    env.sandbox.create_service_account(TARGET);
    env.sandbox.grant_workload_identity_user(TARGET, &principal);
    let token_file = env.dir.path().join("projected-token");
    std::fs::write(
        &token_file,
        env.sandbox.issue_subject_token(&provider, SUBJECT),
    )
    .unwrap();
    let config = |source: serde_json::Value| {
        serde_json::json!({
            "type": "external_account",
            "audience": provider,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": env.sandbox.sts_url(),
            "service_account_impersonation_url": format!("{}/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken", env.sandbox.iam_credentials_url()),
            "credential_source": source,
        })
    };
    let wif = env.dir.path().join("wif.json");
    std::fs::write(
        &wif,
        config(serde_json::json!({"file": token_file, "format": {"type": "text"}})).to_string(),
    )
    .unwrap();
    let connection = DaemonConfig::new("t")
        .set("connections.wif.credentials", "external_account")
        .set("connections.wif.key_file", wif.display().to_string());
    let google = env.services(&connection);
    let token = google.tokens.get("wif", AUD).await.unwrap();
    let claims = env.sandbox.verify_id_token(token.expose(), AUD).unwrap();
    assert_eq!(claims.email.as_deref(), Some(TARGET));
    assert!(google.credentials["wif"].principal().contains(&provider));

    // google-auth takes the same file to the same sandbox.
    let seen =
        crate::helpers::python_json("tests/interop/google_auth_external_account.py", &[&wif]).await;
    assert_eq!(seen["token_prefix"], "ya29.", "{seen}");
    assert_eq!(seen["service_account"], TARGET, "{seen}");

    // Through ADC, with a URL source answering JSON behind a header (Azure IMDS style).
    use axum::{Router, http::HeaderMap, routing::get};
    let subject = env.sandbox.issue_subject_token(&provider, SUBJECT);
    let app = Router::new().route(
        "/metadata/identity/oauth2/token",
        get(move |headers: HeaderMap| {
            let subject = subject.clone();
            async move {
                if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        "Required metadata header not specified",
                    )
                        .into_response();
                }
                axum::Json(serde_json::json!({"access_token": subject, "token_type": "Bearer"}))
                    .into_response()
            }
        }),
    );
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let imds = format!(
        "http://{}/metadata/identity/oauth2/token?resource=api://grantbridge",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let wif_url = env.dir.path().join("wif-url.json");
    std::fs::write(
        &wif_url,
        config(serde_json::json!({
            "url": imds, "headers": {"Metadata": "true"},
            "format": {"type": "json", "subject_token_field_name": "access_token"}
        }))
        .to_string(),
    )
    .unwrap();
    let menv = MapEnv::new().with("GOOGLE_APPLICATION_CREDENTIALS", wif_url.to_str().unwrap());
    adc_mints_as(&env, &menv, TARGET).await;

    // A token of another provider: STS refuses, and the error says what to check.
    let other = env
        .sandbox
        .create_workload_identity_provider("on-prem", "cluster-b");
    std::fs::write(
        &token_file,
        env.sandbox.issue_subject_token(&other, SUBJECT),
    )
    .unwrap();
    let google = env.services(&connection);
    let err = google.tokens.get("wif", AUD).await.unwrap_err().to_string();
    assert!(
        err.contains("invalid_grant") && err.contains("attribute mapping"),
        "{err}"
    );
    // No token file: the step that failed is named.
    std::fs::remove_file(&token_file).unwrap();
    let err = google
        .tokens
        .get("wif", "https://other.example/")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("reading the subject token file"), "{err}");
    // Without a service account to impersonate, the configuration is refused at load.
    std::fs::write(
        &wif,
        serde_json::json!({
            "type": "external_account", "audience": provider,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "credential_source": {"file": token_file},
        })
        .to_string(),
    )
    .unwrap();
    let err = grantbridge::config::Config::load(&env.write_config(&connection), &MapEnv::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("service_account_impersonation_url"), "{err}");
}

/// Workload identity federation from AWS: the subject token is a
/// SigV4-signed GetCallerIdentity request built from the environment's AWS
/// credentials, byte for byte what google-auth's aws.Credentials builds at
/// the same time; the sandbox's STS verifies the signature (as AWS would),
/// and the federated identity impersonates the service account.
#[tokio::test]
async fn workload_identity_federation_from_aws_signs_like_google_auth() {
    let env = spawn_env().await;
    let provider = env
        .sandbox
        .create_workload_identity_provider("aws-pool", "aws-prod");
    let aws = env.sandbox.create_aws_identity("grantbridge");
    let principal = env.sandbox.federated_principal(&provider, &aws.arn);
    env.sandbox.create_service_account(TARGET);
    env.sandbox.grant_workload_identity_user(TARGET, &principal);
    let config = env.dir.path().join("wif-aws.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "type": "external_account",
            "audience": provider,
            "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
            "token_url": env.sandbox.sts_url(),
            "service_account_impersonation_url": format!("{}/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken", env.sandbox.iam_credentials_url()),
            "credential_source": {
                "environment_id": "aws1",
                "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
                "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
                "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
                "imdsv2_session_token_url": "http://169.254.169.254/latest/api/token"
            },
        })
        .to_string(),
    )
    .unwrap();
    let session = "IQoJb3JpZ2luX2VjEsandbox";
    let menv = MapEnv::new()
        .with("GOOGLE_APPLICATION_CREDENTIALS", config.to_str().unwrap())
        .with("AWS_REGION", "us-east-2")
        .with("AWS_ACCESS_KEY_ID", aws.access_key_id.as_str())
        .with("AWS_SECRET_ACCESS_KEY", aws.secret_access_key.as_str())
        .with("AWS_SESSION_TOKEN", session);
    // The environment's credentials are used: the metadata URLs are never called.
    adc_mints_as(&env, &menv, TARGET).await;

    let at = 1_764_590_400u64; // 2025-12-01T12:00:00Z
    let seen = crate::helpers::python_json(
        "tests/interop/google_auth_aws.py",
        &[
            &config,
            &at.to_string(),
            &aws.access_key_id,
            &aws.secret_access_key,
            &session,
            &"us-east-2",
        ],
    )
    .await;
    assert_eq!(seen["token_prefix"], "ya29.", "google-auth's flow: {seen}");
    assert_eq!(seen["service_account"], TARGET);
    let ours = grantbridge::google::aws::signed_request(
        &grantbridge::google::aws::AwsCredentials {
            access_key_id: aws.access_key_id.clone(),
            secret_access_key: aws.secret_access_key.clone().into(),
            session_token: Some(session.to_owned().into()),
        },
        "us-east-2",
        "https://sts.us-east-2.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
        &provider,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
    )
    .unwrap();
    assert_eq!(
        ours,
        seen["subject_token"].as_str().unwrap(),
        "byte for byte"
    );

    // A wrong secret: STS (as AWS would) refuses the signature, and says so.
    let forged = menv.clone().with("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let google = env.services_with(&adc_config(), &forged, Clock::system());
    let err = google.tokens.get("adc", AUD).await.unwrap_err().to_string();
    assert!(err.contains("could not be verified"), "{err}");
    // No credentials in the environment and no metadata URL: which step, and what to set.
    let bare = env.dir.path().join("wif-aws-bare.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v["credential_source"] = serde_json::json!({"environment_id": "aws1"});
    std::fs::write(&bare, v.to_string()).unwrap();
    let lone = MapEnv::new()
        .with("GOOGLE_APPLICATION_CREDENTIALS", bare.to_str().unwrap())
        .with("AWS_REGION", "us-east-2");
    let google = env.services_with(&adc_config(), &lone, Clock::system());
    let err = google.tokens.get("adc", AUD).await.unwrap_err().to_string();
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    // An instance-metadata URL elsewhere than AWS's is refused at load.
    let parse = |source: serde_json::Value| {
        let mut v = v.clone();
        v["credential_source"] = source;
        grantbridge::google::key::CredentialsFile::from_json(&v.to_string(), "wif-aws.json", true)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let err = parse(serde_json::json!({"environment_id": "aws1", "url": "http://10.0.0.1/creds"}))
        .unwrap_err();
    assert!(err.contains("instance metadata service"), "{err}");
    assert!(parse(serde_json::json!({"environment_id": "aws2"})).is_err());
    assert!(parse(serde_json::json!({"environment_id": "aws1", "regional_cred_verification_url": "http://sts.{region}.amazonaws.com"})).is_err());
    assert!(parse(serde_json::json!({"environment_id": "aws1", "imdsv2_session_token_url": "http://[fd00:ec2::254]/latest/api/token"})).is_ok());
}

#[tokio::test]
async fn googles_transient_token_errors_are_retried() {
    use axum::{Router, http::StatusCode, response::IntoResponse, routing::post};
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A token endpoint that fails the way Google does when it has a bad moment, then recovers.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = Router::new().route(
        "/token",
        post(move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(serde_json::json!({"error": "internal_failure", "error_description": "Backend Error"}))).into_response();
                }
                let b64 = |v: serde_json::Value| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string());
                let exp = grantbridge::clock::Clock::system().unix_secs() + 3600;
                let jwt = format!("{}.{}.c2ln", b64(serde_json::json!({"alg": "RS256"})), b64(serde_json::json!({"exp": exp, "email": SA})));
                axum::Json(serde_json::json!({"id_token": jwt})).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let env = spawn_env().await;
    let mut key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&env.key_file).unwrap()).unwrap();
    key["token_uri"] = serde_json::json!(format!("http://{addr}/token"));
    let key_file = env.dir.path().join("flaky-google.json");
    std::fs::write(&key_file, key.to_string()).unwrap();
    let google = env.services(&DaemonConfig::new("t").key_file_connection("prod", &key_file));
    let token = google
        .tokens
        .get("prod", AUD)
        .await
        .expect("retried after internal_failure");
    assert_eq!(token.email.as_deref(), Some(SA));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

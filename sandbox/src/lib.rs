//! grantbridge's sandbox: the world the connector talks to, emulated on
//! 127.0.0.1. Google, one listener per service as Google uses one host per
//! service: the OAuth token endpoint and signing certs ([`oauth`]), the GCE
//! metadata server ([`metadata`]), IAM Credentials ([`iam`]), the Cloud
//! Functions front end with sample and proxied functions ([`functions`]) and
//! the Cloud Functions API that describes them ([`functions_api`]). Beside it,
//! a control plane ([`control_plane`]) and a push sender ([`pusher`]).
//!
//! [`standalone`] serves it all for `grantbridge sandbox`, [`demo`] holds the
//! README's scenario, and [`daemon_config`] writes the connector's
//! configuration file for all of them and for the tests.
//!
//! This crate is never linked into a production build: the `grantbridge`
//! library does not depend on it, and the binary only with its default
//! `sandbox` feature. It speaks the protocol from its own types
//! ([`protocol`]), never the connector's. Everything binds port 0, reads
//! neither the process environment nor the wall clock directly (time comes
//! from the injected [`Clock`]), and keeps its state in one `Arc` owned by
//! the [`Sandbox`] or [`ControlPlane`] (no globals), so tests run side by side.
#![forbid(unsafe_code)]

mod api_error;
mod aws;
mod clock;
pub mod control_plane;
pub mod daemon_config;
pub mod demo;
mod functions;
mod functions_api;
mod iam;
mod keys;
mod metadata;
mod oauth;
pub mod protocol;
pub mod pusher;
mod standalone;
mod tls;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use aws::AwsIdentity;
pub use clock::Clock;

pub use control_plane::{CallCounts, ControlPlane, ControlPlaneOptions, Outage, ResultRecord};
pub use functions::{Faults, FunctionImpl, Invocation};
pub use functions_api::FunctionMeta;
pub use keys::KeyError;
pub use standalone::{
    STATE_FILE, Standalone, StandaloneArgs, StandaloneInfo, run_standalone, start_standalone,
};
pub use tls::TlsFrontEnd;

use functions::Function;
use keys::RsaKey;

/// What can go wrong starting or running the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("bind 127.0.0.1:0 for the sandbox {service} listener: {source}")]
    Bind {
        service: &'static str,
        source: std::io::Error,
    },
    #[error("sandbox key: {0}")]
    Key(#[from] KeyError),
    #[error("sandbox HTTP client: {0}")]
    Http(String),
    #[error("write {path}: {source} (check that the directory is writable)")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// How to start a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The source of every timestamp (token `iat`/`exp`, expiry checks).
    pub clock: Clock,
    /// The project the metadata server reports and key files carry.
    pub project_id: String,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            clock: Clock::system(),
            project_id: "sandbox-project".to_owned(),
        }
    }
}

/// A service account as `gcloud iam service-accounts create` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceAccountInfo {
    pub email: String,
    /// The 21-digit numeric id (`uniqueId`, the `sub` of its ID tokens).
    pub unique_id: String,
}

/// A downloaded service-account key file.
#[derive(Clone)]
pub struct ServiceAccountKeyFile {
    /// The exact JSON Google hands out (contains the private key).
    pub json: String,
    pub private_key_id: String,
}

impl std::fmt::Debug for ServiceAccountKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKeyFile")
            .field("private_key_id", &self.private_key_id)
            .field("json", &"[REDACTED]")
            .finish()
    }
}

/// The claims of a Google-signed ID token, in Google's (alphabetical) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub aud: String,
    pub azp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    pub exp: i64,
    /// Present in metadata-server tokens asked for with `format=full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google: Option<serde_json::Value>,
    pub iat: i64,
    pub iss: String,
    pub sub: String,
}

/// Google's ID-token issuer.
pub(crate) const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// Lifetime of every ID token and access token Google mints.
pub(crate) const TOKEN_LIFETIME_SECS: i64 = 3600;
/// How many retired signing keys stay published after a rotation.
const RETIRED_KEYS_PUBLISHED: usize = 1;

/// Google on 127.0.0.1. Dropping it stops every listener.
pub struct Sandbox {
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("urls", &self.state.urls)
            .finish()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.state.cancel.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Sandbox {
    /// Bind every listener on 127.0.0.1:0 and start serving.
    pub async fn start(opts: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let oauth_l = bind("oauth").await?;
        let metadata_l = bind("metadata").await?;
        let iam_l = bind("iam credentials").await?;
        let functions_l = bind("cloud functions").await?;
        let functions_api_l = bind("cloud functions api").await?;
        let urls = Urls {
            oauth: local_addr(&oauth_l, "oauth")?,
            metadata: local_addr(&metadata_l, "metadata")?,
            iam: local_addr(&iam_l, "iam credentials")?,
            functions: local_addr(&functions_l, "cloud functions")?,
            functions_api: local_addr(&functions_api_l, "cloud functions api")?,
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| SandboxError::Http(e.to_string()))?;
        let google = GoogleKeys::new()?;
        let state = Arc::new(State {
            project_id: opts.project_id,
            project_number: keys::random_unique_id()[..12].to_owned(),
            clock: Mutex::new(opts.clock),
            urls,
            inner: Mutex::new(Inner::default()),
            google: Mutex::new(google),
            cancel: CancellationToken::new(),
            recorded: tokio::sync::Notify::new(),
            http,
            token_endpoint_nanos: std::sync::atomic::AtomicU64::new(0),
        });
        let tasks = vec![
            serve(oauth_l, oauth::router(state.clone()), state.cancel.clone()),
            serve(
                metadata_l,
                metadata::router(state.clone()),
                state.cancel.clone(),
            ),
            serve(iam_l, iam::router(state.clone()), state.cancel.clone()),
            serve(
                functions_l,
                functions::router(state.clone()),
                state.cancel.clone(),
            ),
            serve(
                functions_api_l,
                functions_api::router(state.clone()),
                state.cancel.clone(),
            ),
        ];
        tracing::debug!(urls = ?state.urls, "sandbox started");
        Ok(Sandbox { state, tasks })
    }

    /// `http://127.0.0.1:P/token` (like `https://oauth2.googleapis.com/token`).
    pub fn token_url(&self) -> String {
        self.state.urls.token_url()
    }

    /// Time the token endpoint (`/token`) has spent answering so far: the
    /// network wait a client's mint includes.
    pub fn token_endpoint_time(&self) -> Duration {
        Duration::from_nanos(
            self.state
                .token_endpoint_nanos
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// `http://127.0.0.1:P/oauth2/v3/certs`: Google's signing keys as JWKS.
    pub fn jwks_url(&self) -> String {
        format!("http://{}/oauth2/v3/certs", self.state.urls.oauth)
    }

    /// `http://127.0.0.1:P/oauth2/v1/certs`: Google's signing keys as PEM certificates.
    pub fn pem_certs_url(&self) -> String {
        format!("http://{}/oauth2/v1/certs", self.state.urls.oauth)
    }

    /// `127.0.0.1:P`, the value for `GCE_METADATA_HOST`.
    pub fn metadata_host(&self) -> String {
        self.state.urls.metadata.to_string()
    }

    /// `http://127.0.0.1:P`, the base of the IAM Credentials API.
    pub fn iam_credentials_url(&self) -> String {
        format!("http://{}", self.state.urls.iam)
    }

    /// `http://127.0.0.1:P`, the Cloud Functions front end.
    pub fn functions_base_url(&self) -> String {
        format!("http://{}", self.state.urls.functions)
    }

    /// `http://127.0.0.1:P/NAME`.
    pub fn function_url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.state.urls.functions)
    }

    /// Starts the Cloud Functions front end behind TLS, on a CA of its own,
    /// negotiating HTTP/2 or HTTP/1.1 (ALPN) as Google's front end does. The
    /// same functions answer there, and a 1st gen function's audience is its
    /// URL there (`https://127.0.0.1:P/NAME`). It stops with the sandbox.
    pub async fn functions_tls(&self) -> Result<tls::TlsFrontEnd, SandboxError> {
        let (addr, ca_pem, _task) = tls::serve(
            functions::tls_router(self.state.clone()),
            self.state.cancel.clone(),
        )
        .await?;
        Ok(tls::TlsFrontEnd {
            base_url: format!("https://{addr}"),
            ca_pem,
        })
    }

    /// Create a service account (idempotent: an existing one is returned as is).
    pub fn create_service_account(&self, email: &str) -> ServiceAccountInfo {
        let mut inner = self.state.lock();
        let account = inner.account_mut(email);
        ServiceAccountInfo {
            email: account.email.clone(),
            unique_id: account.unique_id.clone(),
        }
    }

    /// Create a key like `gcloud iam service-accounts keys create` (creating the
    /// account first if needed) and return the key file.
    pub fn create_key(&self, email: &str) -> ServiceAccountKeyFile {
        let private_key_id = keys::random_hex(40);
        // RSA key generation only fails when the crypto library is broken.
        let key = RsaKey::generate(private_key_id.clone(), email)
            .unwrap_or_else(|e| panic!("sandbox: cannot generate an RSA key: {e}"));
        let unique_id = {
            let mut inner = self.state.lock();
            let account = inner.account_mut(email);
            account.keys.insert(
                private_key_id.clone(),
                SaKey {
                    key: Arc::new(KeyPublic::from(&key)),
                    deleted: false,
                },
            );
            account.unique_id.clone()
        };
        let project_id = email
            .split_once('@')
            .and_then(|(_, domain)| domain.strip_suffix(".iam.gserviceaccount.com"))
            .unwrap_or(&self.state.project_id)
            .to_owned();
        let file = KeyFileJson {
            type_: "service_account",
            project_id,
            private_key_id: private_key_id.clone(),
            private_key: key.pkcs8_pem().to_owned(),
            client_email: email.to_owned(),
            client_id: unique_id,
            auth_uri: "https://accounts.google.com/o/oauth2/auth",
            token_uri: self.token_url(),
            auth_provider_x509_cert_url: "https://www.googleapis.com/oauth2/v1/certs",
            client_x509_cert_url: format!(
                "http://{}/robot/v1/metadata/x509/{}",
                self.state.urls.oauth,
                email.replace('@', "%40")
            ),
            universe_domain: "googleapis.com",
        };
        let json = serde_json::to_string_pretty(&file)
            .unwrap_or_else(|e| panic!("sandbox: key file serialises: {e}"));
        ServiceAccountKeyFile {
            json: json + "\n",
            private_key_id,
        }
    }

    /// Delete a key: assertions signed with it fail with "Invalid JWT Signature.".
    pub fn delete_key(&self, email: &str, private_key_id: &str) {
        let mut inner = self.state.lock();
        if let Some(k) = inner
            .accounts
            .get_mut(email)
            .and_then(|a| a.keys.get_mut(private_key_id))
        {
            k.deleted = true;
        }
    }

    /// Disable a service account: it can no longer get tokens.
    pub fn disable_service_account(&self, email: &str) {
        if let Some(a) = self.state.lock().accounts.get_mut(email) {
            a.disabled = true;
        }
    }

    /// Re-enable a disabled service account.
    pub fn enable_service_account(&self, email: &str) {
        if let Some(a) = self.state.lock().accounts.get_mut(email) {
            a.disabled = false;
        }
    }

    /// Which account the metadata server serves (`None`: a VM without one).
    pub fn attach_metadata_account(&self, email: Option<&str>) {
        let mut inner = self.state.lock();
        if let Some(email) = email {
            inner.account_mut(email);
        }
        inner.metadata_account = email.map(str::to_owned);
    }

    /// Answer token and identity requests without the `Metadata-Flavor:
    /// Google` header (a GKE metadata server release once did; clients that
    /// insisted on it broke). Probes and other paths keep it.
    pub fn metadata_drops_flavor_on_tokens(&self, drop: bool) {
        self.state.lock().metadata_drops_flavor = drop;
    }

    /// Grant `member_email` Service Account Token Creator on `target_email`.
    pub fn grant_token_creator(&self, target_email: &str, member_email: &str) {
        self.state
            .lock()
            .account_mut(target_email)
            .token_creators
            .insert(member_email.to_owned());
    }

    /// Revoke what [`Sandbox::grant_token_creator`] granted.
    pub fn revoke_token_creator(&self, target_email: &str, member_email: &str) {
        if let Some(a) = self.state.lock().accounts.get_mut(target_email) {
            a.token_creators.remove(member_email);
        }
    }

    /// Deploy (or redeploy) a function; returns its URL. `invokers` are emails
    /// or `allUsers` / `allAuthenticatedUsers`.
    pub fn deploy_function(&self, name: &str, imp: FunctionImpl, invokers: &[&str]) -> String {
        let mut function = Function::new(imp, invokers.iter().map(|s| (*s).to_owned()).collect());
        function.updated_at = self.state.now();
        self.state
            .lock()
            .functions
            .insert(name.to_owned(), function);
        self.function_url(name)
    }

    /// Deploy (or redeploy) a 2nd gen function (a Cloud Run function): it
    /// answers at its cloudfunctions.net URL ([`Sandbox::function_url`]) and
    /// at its Cloud Run service URL, returned here (a listener of its own,
    /// like `https://NAME-HASH.a.run.app`). At both, its ID tokens must carry
    /// the service URL as audience, and `invokers` hold `roles/run.invoker`
    /// on the service. The v1 API does not show it; the v2 API and the Cloud
    /// Run Admin API do.
    pub async fn deploy_gen2_function(
        &self,
        name: &str,
        imp: FunctionImpl,
        invokers: &[&str],
    ) -> Result<String, SandboxError> {
        let listener = bind("cloud run").await?;
        let url = format!("http://{}", local_addr(&listener, "cloud run")?);
        // Stops with the sandbox (its cancellation token), like the others.
        serve(
            listener,
            functions::run_router(self.state.clone(), name.to_owned()),
            self.state.cancel.clone(),
        );
        self.deploy_function(name, imp, invokers);
        if let Some(f) = self.state.lock().functions.get_mut(name) {
            f.run_url = Some(url.clone());
        }
        Ok(url)
    }

    /// A 2nd gen function's Cloud Run service URL.
    pub fn run_url(&self, name: &str) -> Option<String> {
        self.state
            .lock()
            .functions
            .get(name)
            .and_then(|f| f.run_url.clone())
    }

    /// Replace a function's invoker list (`roles/cloudfunctions.invoker`;
    /// `roles/run.invoker` on the service of a 2nd gen function).
    pub fn set_invokers(&self, name: &str, invokers: &[&str]) {
        if let Some(f) = self.state.lock().functions.get_mut(name) {
            f.invokers = invokers.iter().map(|s| (*s).to_owned()).collect();
        }
    }

    /// Add an IAM-conditional `roles/cloudfunctions.invoker` binding for
    /// `member` (`allUsers`, an email) on a function. It shows in the IAM
    /// policy as Google shows it: with its condition in a version-3 policy,
    /// as role `roles/cloudfunctions.invoker_withcond_<hash>` without the
    /// condition otherwise. It grants no invoke here.
    pub fn add_conditional_invoker(&self, name: &str, member: &str, title: &str, expression: &str) {
        if let Some(f) = self.state.lock().functions.get_mut(name) {
            f.conditional_invokers.push((
                member.to_owned(),
                title.to_owned(),
                expression.to_owned(),
            ));
        }
    }

    /// A person's login, as `gcloud auth application-default login` writes it
    /// (`authorized_user`: client id and secret, refresh token), for `email`.
    /// The token endpoint exchanges its refresh token for the user's access
    /// tokens; grant the user roles on service accounts like any member.
    pub fn create_user_login(&self, email: &str) -> UserLogin {
        let login = UserLogin {
            email: email.to_owned(),
            client_id: format!("{}.apps.googleusercontent.com", keys::random_token(12)),
            client_secret: format!("GOCSPX-{}", keys::random_token(20)),
            refresh_token: format!("1//{}", keys::random_token(60)),
        };
        let mut inner = self.state.lock();
        inner.account_mut(email);
        inner
            .user_logins
            .insert(login.refresh_token.clone(), login.clone());
        login
    }

    /// `http://127.0.0.1:P/v1/token`, the Security Token Service (like
    /// `https://sts.googleapis.com/v1/token`).
    pub fn sts_url(&self) -> String {
        format!("http://{}/v1/token", self.state.urls.oauth)
    }

    /// Creates a workload identity pool provider and returns its name, the
    /// `audience` of a credential configuration:
    /// `//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
    pub fn create_workload_identity_provider(&self, pool: &str, provider: &str) -> String {
        let name = format!(
            "//iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{pool}/providers/{provider}",
            self.state.project_number
        );
        self.state.lock().workload_providers.insert(name.clone());
        name
    }

    /// A subject token (an external OIDC token, say) for `subject`, which STS
    /// accepts for `provider` only.
    pub fn issue_subject_token(&self, provider: &str, subject: &str) -> String {
        let token = format!("eyJ{}", keys::random_token(80));
        self.state
            .lock()
            .subject_tokens
            .insert(token.clone(), (provider.to_owned(), subject.to_owned()));
        token
    }

    /// The IAM principal of `subject` of `provider`'s pool
    /// (`principal://iam.googleapis.com/.../subject/SUBJECT`): grant it
    /// `roles/iam.workloadIdentityUser` on a service account with
    /// [`Sandbox::grant_workload_identity_user`].
    pub fn federated_principal(&self, provider: &str, subject: &str) -> String {
        oauth::federated_principal(provider, subject)
    }

    /// Lets a federated principal impersonate `service_account` (Google's
    /// `roles/iam.workloadIdentityUser`; here the same grant as Token Creator).
    pub fn grant_workload_identity_user(&self, service_account: &str, principal: &str) {
        self.state.lock().account_mut(principal);
        self.grant_token_creator(service_account, principal);
    }

    /// Make an all-regions listing (`locations/-`) leave out `regions` and
    /// name them in `unreachable`, as Google does when a location is down.
    pub fn set_unreachable_regions(&self, regions: &[&str]) {
        self.state.lock().unreachable_regions = regions.iter().map(|r| (*r).to_owned()).collect();
    }

    /// Replace a function's fault knobs.
    pub fn set_faults(&self, name: &str, faults: Faults) {
        if let Some(f) = self.state.lock().functions.get_mut(name) {
            f.faults = faults;
        }
    }

    /// Every call that passed the front end's auth, oldest first.
    pub fn invocations(&self, name: &str) -> Vec<Invocation> {
        self.state
            .lock()
            .functions
            .get(name)
            .map(|f| f.invocations.clone())
            .unwrap_or_default()
    }

    /// Wait until `name` has recorded at least `count` invocations (wrap it in
    /// `tokio::time::timeout`); lets tests synchronise without sleeping, e.g.
    /// on a call that was made to hang. Returns the invocations.
    pub async fn wait_for_invocations(&self, name: &str, count: usize) -> Vec<Invocation> {
        loop {
            let notified = self.state.recorded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let calls = self.invocations(name);
            if calls.len() >= count {
                return calls;
            }
            notified.await;
        }
    }

    /// How many calls a sample function answered from its `Idempotency-Key` memory.
    pub fn duplicate_calls(&self, name: &str) -> u64 {
        self.state
            .lock()
            .functions
            .get(name)
            .map(|f| f.duplicates)
            .unwrap_or(0)
    }

    /// ID tokens minted for `email` (token endpoint + metadata + IAM).
    pub fn id_tokens_minted(&self, email: &str) -> u64 {
        self.state.lock().id_minted.get(email).copied().unwrap_or(0)
    }

    /// Access tokens minted for `email` (token endpoint + metadata + IAM).
    pub fn access_tokens_minted(&self, email: &str) -> u64 {
        self.state
            .lock()
            .access_minted
            .get(email)
            .copied()
            .unwrap_or(0)
    }

    /// Verify an ID token as the Cloud Functions front end does: Google's
    /// signature, issuer, `aud == audience`, not expired by the sandbox clock.
    pub fn verify_id_token(&self, token: &str, audience: &str) -> Result<IdTokenClaims, String> {
        self.state.verify_id_token(token, audience)
    }

    /// Mint an ID token for `email` directly (for tests that need one without
    /// going through an endpoint). Counted like any other.
    pub fn mint_id_token(&self, email: &str, audience: &str) -> Result<String, String> {
        self.state
            .mint_id_token(email, audience, IdTokenFormat::WithEmail)
            .map_err(|e| e.to_string())
    }

    /// Start signing with a new key (new `kid`); the retired key stays
    /// published (and accepted) until the next rotation, as at Google.
    pub fn rotate_google_signing_key(&self) {
        // Generate outside the lock: RSA key generation takes milliseconds.
        match GoogleKeys::generate() {
            Ok(key) => self.state.google().rotate(key),
            Err(e) => tracing::error!(error = %e, "sandbox: signing-key rotation failed"),
        }
    }

    /// The `kid` Google currently signs ID tokens with.
    pub fn google_signing_kid(&self) -> String {
        self.state.google().current.kid().to_owned()
    }

    /// Replace the sandbox clock (e.g. a skewed one, to make tokens expire).
    pub fn set_clock(&self, clock: Clock) {
        *self.state.clock.lock().unwrap_or_else(|e| e.into_inner()) = clock;
    }

    /// The project the sandbox pretends to be.
    pub fn project_id(&self) -> &str {
        &self.state.project_id
    }
}

async fn bind(service: &'static str) -> Result<tokio::net::TcpListener, SandboxError> {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| SandboxError::Bind { service, source })
}

fn local_addr(
    l: &tokio::net::TcpListener,
    service: &'static str,
) -> Result<SocketAddr, SandboxError> {
    l.local_addr()
        .map_err(|source| SandboxError::Bind { service, source })
}

fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "sandbox listener stopped");
        }
    })
}

/// Where each emulated service listens.
#[derive(Debug, Clone)]
pub(crate) struct Urls {
    pub(crate) oauth: SocketAddr,
    pub(crate) metadata: SocketAddr,
    pub(crate) iam: SocketAddr,
    pub(crate) functions: SocketAddr,
    pub(crate) functions_api: SocketAddr,
}

impl Urls {
    pub(crate) fn token_url(&self) -> String {
        format!("http://{}/token", self.oauth)
    }
}

/// A person's OAuth login (see [`Sandbox::create_user_login`]).
#[derive(Debug, Clone)]
pub struct UserLogin {
    pub email: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

impl UserLogin {
    /// The `authorized_user` JSON `gcloud auth application-default login`
    /// writes, with `token_uri` pointing at this sandbox.
    pub fn authorized_user_json(&self, token_uri: &str) -> serde_json::Value {
        serde_json::json!({
            "type": "authorized_user",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
            "account": self.email,
            "token_uri": token_uri,
            "universe_domain": "googleapis.com",
        })
    }
}

/// Everything the listeners share.
pub(crate) struct State {
    pub(crate) project_id: String,
    pub(crate) project_number: String,
    clock: Mutex<Clock>,
    pub(crate) urls: Urls,
    inner: Mutex<Inner>,
    google: Mutex<GoogleKeys>,
    /// Cancelled when the [`Sandbox`] is dropped (ends hung calls too).
    pub(crate) cancel: CancellationToken,
    /// Woken whenever a function invocation is recorded.
    pub(crate) recorded: tokio::sync::Notify,
    /// For proxied functions.
    pub(crate) http: reqwest::Client,
    /// Time spent answering `/token` requests, in nanoseconds (benches).
    pub(crate) token_endpoint_nanos: std::sync::atomic::AtomicU64,
}

/// Mutable state behind one lock (never held across an `.await`).
#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) accounts: HashMap<String, Account>,
    pub(crate) access_tokens: HashMap<String, AccessGrant>,
    pub(crate) metadata_account: Option<String>,
    /// Token and identity answers without `Metadata-Flavor: Google`, as a
    /// GKE metadata server release once sent them.
    pub(crate) metadata_drops_flavor: bool,
    /// Regions an all-regions (`-`) listing cannot reach.
    pub(crate) unreachable_regions: Vec<String>,
    /// People's logins by refresh token (`authorized_user` files).
    pub(crate) user_logins: HashMap<String, UserLogin>,
    /// Workload identity providers (their `//iam.googleapis.com/...` names).
    pub(crate) workload_providers: HashSet<String>,
    /// Subject tokens the sandbox issued: token → (provider, subject).
    pub(crate) subject_tokens: HashMap<String, (String, String)>,
    /// AWS access keys STS accepts signed requests of (access key id → identity).
    pub(crate) aws_keys: HashMap<String, aws::AwsIdentity>,
    pub(crate) functions: HashMap<String, Function>,
    /// Cloud Functions API read grants (viewer, IAM-policy viewer).
    pub(crate) cf_grants: HashSet<functions_api::Grant>,
    pub(crate) id_minted: HashMap<String, u64>,
    pub(crate) access_minted: HashMap<String, u64>,
}

impl Inner {
    /// The account, created when missing.
    pub(crate) fn account_mut(&mut self, email: &str) -> &mut Account {
        self.accounts
            .entry(email.to_owned())
            .or_insert_with(|| Account {
                email: email.to_owned(),
                unique_id: keys::random_unique_id(),
                disabled: false,
                keys: HashMap::new(),
                token_creators: HashSet::new(),
            })
    }

    /// An enabled account.
    pub(crate) fn active_account(&self, email: &str) -> Option<&Account> {
        self.accounts.get(email).filter(|a| !a.disabled)
    }

    /// The email of the account whose numeric id is `unique_id`.
    pub(crate) fn email_by_unique_id(&self, unique_id: &str) -> Option<String> {
        self.accounts
            .values()
            .find(|a| a.unique_id == unique_id)
            .map(|a| a.email.clone())
    }
}

pub(crate) struct Account {
    pub(crate) email: String,
    pub(crate) unique_id: String,
    pub(crate) disabled: bool,
    pub(crate) keys: HashMap<String, SaKey>,
    /// Members holding Service Account Token Creator on this account.
    pub(crate) token_creators: HashSet<String>,
}

pub(crate) struct SaKey {
    pub(crate) key: Arc<KeyPublic>,
    pub(crate) deleted: bool,
}

/// The public half of a service-account key (the private half lives only in
/// the key file).
pub(crate) struct KeyPublic {
    pub(crate) decoding: jsonwebtoken::DecodingKey,
    pub(crate) cert_pem: String,
}

impl From<&RsaKey> for KeyPublic {
    fn from(k: &RsaKey) -> Self {
        Self {
            decoding: k.decoding_key().clone(),
            cert_pem: k.cert_pem().to_owned(),
        }
    }
}

/// An access token the sandbox issued.
#[derive(Debug, Clone)]
pub(crate) struct AccessGrant {
    pub(crate) email: String,
    pub(crate) expires_at: i64,
}

/// Google's ID-token signing keys: the current one and recently retired ones.
pub(crate) struct GoogleKeys {
    pub(crate) current: Arc<RsaKey>,
    pub(crate) retired: Vec<Arc<RsaKey>>,
}

impl GoogleKeys {
    fn new() -> Result<Self, KeyError> {
        Ok(Self {
            current: Arc::new(Self::generate()?),
            retired: Vec::new(),
        })
    }

    fn generate() -> Result<RsaKey, KeyError> {
        RsaKey::generate(keys::random_hex(40), "accounts.google.com")
    }

    fn rotate(&mut self, key: RsaKey) {
        let old = std::mem::replace(&mut self.current, Arc::new(key));
        self.retired.insert(0, old);
        self.retired.truncate(RETIRED_KEYS_PUBLISHED);
    }

    /// Every published key, current first.
    pub(crate) fn published(&self) -> impl Iterator<Item = &Arc<RsaKey>> {
        std::iter::once(&self.current).chain(self.retired.iter())
    }
}

/// What an ID token carries about the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdTokenFormat {
    /// `sub`/`azp` only (metadata `format=standard`, IAM without `includeEmail`).
    Standard,
    /// Plus `email` and `email_verified`.
    WithEmail,
    /// Plus the `google.compute_engine` claim (metadata `format=full`).
    Full,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MintError {
    #[error("service account {0} does not exist or is disabled")]
    NoAccount(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl State {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn google(&self) -> MutexGuard<'_, GoogleKeys> {
        self.google.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn clock(&self) -> Clock {
        *self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Now, in Unix seconds, by the injected clock.
    pub(crate) fn now(&self) -> i64 {
        self.clock().unix_secs()
    }

    /// RFC 3339 form of a Unix time, as Google's JSON APIs write it.
    pub(crate) fn rfc3339(unix: i64) -> String {
        let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
        humantime::format_rfc3339_seconds(t).to_string()
    }

    /// Sign an ID token for `email` with Google's current key and count it.
    pub(crate) fn mint_id_token(
        &self,
        email: &str,
        audience: &str,
        format: IdTokenFormat,
    ) -> Result<String, MintError> {
        let unique_id = {
            let inner = self.lock();
            inner
                .active_account(email)
                .map(|a| a.unique_id.clone())
                .ok_or_else(|| MintError::NoAccount(email.to_owned()))?
        };
        let iat = self.now();
        let with_email = format != IdTokenFormat::Standard;
        let google = (format == IdTokenFormat::Full).then(|| {
            serde_json::json!({"compute_engine": {
                "instance_creation_timestamp": iat - 86_400,
                "instance_id": "1234567890123456789",
                "instance_name": "sandbox-vm",
                "project_id": self.project_id,
                "project_number": self.project_number.parse::<u64>().unwrap_or(0),
                "zone": "us-central1-a",
            }})
        });
        let claims = IdTokenClaims {
            aud: audience.to_owned(),
            azp: unique_id.clone(),
            email: with_email.then(|| email.to_owned()),
            email_verified: with_email.then_some(true),
            exp: iat + TOKEN_LIFETIME_SECS,
            google,
            iat,
            iss: GOOGLE_ISSUER.to_owned(),
            sub: unique_id,
        };
        let key = self.google().current.clone();
        let token = key.sign(&claims)?;
        *self.lock().id_minted.entry(email.to_owned()).or_default() += 1;
        Ok(token)
    }

    /// Issue an access token (`ya29.` + random) for `email` and count it.
    /// Returns the token and its expiry (Unix seconds).
    pub(crate) fn mint_access_token(&self, email: &str, lifetime_secs: i64) -> (String, i64) {
        let token = format!("ya29.{}", keys::random_token(120));
        let expires_at = self.now() + lifetime_secs;
        let mut inner = self.lock();
        inner.access_tokens.insert(
            token.clone(),
            AccessGrant {
                email: email.to_owned(),
                expires_at,
            },
        );
        *inner.access_minted.entry(email.to_owned()).or_default() += 1;
        (token, expires_at)
    }

    /// The account an unexpired access token was issued to.
    pub(crate) fn access_token_owner(&self, token: &str) -> Option<String> {
        let now = self.now();
        let inner = self.lock();
        inner
            .access_tokens
            .get(token)
            .filter(|g| g.expires_at > now)
            .filter(|g| inner.active_account(&g.email).is_some())
            .map(|g| g.email.clone())
    }

    pub(crate) fn verify_id_token(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<IdTokenClaims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!("algorithm {:?} is not RS256", header.alg));
        }
        let kid = header.kid.ok_or("no kid in the header")?;
        let key = self
            .google()
            .published()
            .find(|k| k.kid() == kid)
            .cloned()
            .ok_or_else(|| format!("kid {kid} is not a published Google key"))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let data = jsonwebtoken::decode::<IdTokenClaims>(token, key.decoding_key(), &validation)
            .map_err(|e| format!("invalid token: {e}"))?;
        let claims = data.claims;
        if claims.iss != GOOGLE_ISSUER && claims.iss != "accounts.google.com" {
            return Err(format!("issuer {} is not Google", claims.iss));
        }
        if claims.aud != audience {
            return Err(format!("audience {} does not match {audience}", claims.aud));
        }
        let now = self.now();
        if claims.exp <= now {
            return Err(format!("expired at {} (now {now})", claims.exp));
        }
        if claims.iat > now + 300 {
            return Err(format!("issued in the future ({} > {now})", claims.iat));
        }
        Ok(claims)
    }
}

#[derive(Serialize)]
struct KeyFileJson {
    #[serde(rename = "type")]
    type_: &'static str,
    project_id: String,
    private_key_id: String,
    private_key: String,
    client_email: String,
    client_id: String,
    auth_uri: &'static str,
    token_uri: String,
    auth_provider_x509_cert_url: &'static str,
    client_x509_cert_url: String,
    universe_domain: &'static str,
}

/// Shared helpers for the tests of every sandbox file.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    pub(crate) const SA: &str = "runner@sandbox-project.iam.gserviceaccount.com";

    pub(crate) async fn sandbox() -> Sandbox {
        Sandbox::start(SandboxOptions::default())
            .await
            .expect("sandbox starts")
    }

    pub(crate) fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    }

    /// Sign `claims` with the private key in a key file, as a client library would.
    pub(crate) fn sign_assertion(
        key_json: &str,
        kid: Option<&str>,
        claims: &serde_json::Value,
    ) -> String {
        let file: serde_json::Value = serde_json::from_str(key_json).expect("key json");
        let pem = file["private_key"].as_str().expect("private_key");
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("pem");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &key).expect("sign")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[tokio::test]
    async fn key_file_has_googles_shape() {
        let sb = sandbox().await;
        let info = sb.create_service_account(SA);
        assert_eq!(sb.create_service_account(SA), info, "idempotent");
        assert_eq!(info.unique_id.len(), 21);
        let key = sb.create_key(SA);
        let v: serde_json::Value = serde_json::from_str(&key.json).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "type",
            "project_id",
            "private_key_id",
            "private_key",
            "client_email",
            "client_id",
            "auth_uri",
            "token_uri",
            "auth_provider_x509_cert_url",
            "client_x509_cert_url",
            "universe_domain",
        ];
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected);
        assert!(key.json.find("\"type\"") < key.json.find("\"universe_domain\""));
        assert_eq!(v["type"], "service_account");
        assert_eq!(v["project_id"], "sandbox-project");
        assert_eq!(v["private_key_id"], key.private_key_id.as_str());
        assert_eq!(v["client_email"], SA);
        assert_eq!(v["client_id"], info.unique_id.as_str());
        assert_eq!(v["token_uri"], sb.token_url().as_str());
        assert!(
            v["private_key"]
                .as_str()
                .expect("pem")
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[tokio::test]
    async fn minted_token_verifies_and_rotation_keeps_old_key_published() {
        let sb = sandbox().await;
        let info = sb.create_service_account(SA);
        let token = sb.mint_id_token(SA, "https://aud").expect("mint");
        let claims = sb.verify_id_token(&token, "https://aud").expect("verifies");
        assert_eq!(claims.sub, info.unique_id);
        assert_eq!(claims.azp, info.unique_id);
        assert_eq!(claims.email.as_deref(), Some(SA));
        assert_eq!(claims.exp - claims.iat, 3600);
        assert!(sb.verify_id_token(&token, "https://other").is_err());

        let old_kid = sb.google_signing_kid();
        sb.rotate_google_signing_key();
        assert_ne!(sb.google_signing_kid(), old_kid);
        sb.verify_id_token(&token, "https://aud")
            .expect("old key still published");
        sb.rotate_google_signing_key();
        let err = sb.verify_id_token(&token, "https://aud").unwrap_err();
        assert!(err.contains("not a published"), "{err}");
        assert_eq!(sb.id_tokens_minted(SA), 1);
    }

    #[test]
    fn sandbox_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Sandbox>();
    }

    #[tokio::test]
    async fn skewed_clock_expires_tokens() {
        let sb = sandbox().await;
        sb.create_service_account(SA);
        let token = sb.mint_id_token(SA, "a").expect("mint");
        sb.set_clock(Clock::system().skewed(3601));
        let err = sb.verify_id_token(&token, "a").unwrap_err();
        assert!(err.contains("expired"), "{err}");
    }
}

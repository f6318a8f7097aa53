//! Online checks: for each integration, ask the Cloud Functions API v2 (with
//! the connection's own access token) whether the function grantbridge will
//! call exists, is ACTIVE, is an HTTP function of the declared generation at
//! the configured URL and audience, has a timeout that fits the connector's,
//! may be invoked by the connection's account (1st gen: on the function,
//! through the v1 API; 2nd gen: on its Cloud Run service, through the Cloud
//! Run Admin API), and is not public; and turn the answers into a [`Verdict`]
//! per integration. `grantbridge check --online` prints them; the daemon can feed
//! [`Verdict::reading`] into the integration health board, which heartbeats
//! and `/readyz` read.
//!
//! It must only read (it never calls a function: a grant function called with
//! a test payload would grant something), and a check must never fail as a
//! whole: every problem becomes a finding of its integration's verdict.

mod render;

use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use crate::config::{Config, Integration};
use crate::google::AccessToken;
use crate::google::CredentialsSpec;
use crate::google::functions_api::{
    ApiErrorKind, CloudFunction, CloudFunctionsApi, FunctionName, FunctionState, FunctionsApiError,
    Generation, INVOKE_PERMISSION, INVOKER_ROLE, IamPolicy, Ingress, RUN_INVOKE_PERMISSION,
    RUN_INVOKER_ROLE, ServiceName, member,
};
use crate::health::{Health, Reading};
use crate::services::Services;

pub use render::{render_functions, render_verdicts};

/// How far the connector's per-attempt timeout may exceed the function's
/// before it is waiting for an answer that cannot come (cold start and network
/// take a few seconds, not more).
pub const TIMEOUT_SLACK: Duration = Duration::from_secs(30);
/// Integrations checked at once by [`check_all`].
const CONCURRENCY: usize = 8;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One thing the check found, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// A stable identifier (`not_found`, `public_invoker`, ...) for machines and tests.
    pub code: &'static str,
    pub message: String,
}

/// One integration's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub integration: String,
    pub function_url: String,
    /// The worst severity among the findings: an error finding is an
    /// [`Health::Error`], a warning a [`Health::Degraded`].
    pub status: Health,
    pub findings: Vec<Finding>,
}

impl Verdict {
    fn new(integration: &Integration) -> Self {
        Self {
            integration: integration.name.clone(),
            function_url: integration.url.to_string(),
            status: Health::Ok,
            findings: Vec::new(),
        }
    }

    fn push(&mut self, severity: Severity, code: &'static str, message: String) {
        self.findings.push(Finding {
            severity,
            code,
            message,
        });
        self.status = match self.findings.iter().map(|f| f.severity).max() {
            Some(Severity::Error) => Health::Error,
            Some(Severity::Warning) => Health::Degraded,
            _ => Health::Ok,
        };
    }

    fn info(&mut self, code: &'static str, message: String) {
        self.push(Severity::Info, code, message);
    }
    fn warning(&mut self, code: &'static str, message: String) {
        self.push(Severity::Warning, code, message);
    }
    fn error(&mut self, code: &'static str, message: String) {
        self.push(Severity::Error, code, message);
    }

    /// What the health board keeps of this verdict.
    pub fn reading(&self) -> Reading {
        Reading::new(self.status, &self.detail())
    }

    /// One line for `/readyz` and heartbeats: the status and the most severe finding.
    pub fn detail(&self) -> String {
        let count = |s: Severity| self.findings.iter().filter(|f| f.severity == s).count();
        let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
        // The first of the most severe findings.
        let worst = self
            .findings
            .iter()
            .filter(|f| f.severity > Severity::Info)
            .fold(None::<&Finding>, |best, f| match best {
                Some(b) if b.severity >= f.severity => Some(b),
                _ => Some(f),
            });
        let line = match worst {
            None => "ok: checked online with the Cloud Functions API".to_owned(),
            Some(f) => format!(
                "{} error(s), {} warning(s): {}",
                errors, warnings, f.message
            ),
        };
        truncate(&line, 400)
    }

    /// Findings with this code (tests, tools).
    pub fn finding(&self, code: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.code == code)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// An error and its causes on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The Cloud Functions (and Cloud Run Admin) API client for a configuration
/// (`[google] cloudfunctions_api`, `run_api`).
pub fn api(config: &Config) -> Result<CloudFunctionsApi, reqwest::Error> {
    Ok(CloudFunctionsApi::new(
        crate::http::client()?,
        config.google.cloudfunctions_api.clone(),
        config.google.run_api.clone(),
    ))
}

/// Why a connection has no access token for the Cloud Functions API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccessTokenError {
    #[error("no connection named `{0}` is configured")]
    NoConnection(String),
    #[error("cannot get an access token as {principal} for the Cloud Functions API: {reason}")]
    Mint { principal: String, reason: String },
}

/// A connection's access token for the Cloud Functions API, or why there is none.
pub async fn access_token(
    services: &Services,
    connection: &str,
) -> Result<AccessToken, AccessTokenError> {
    let creds = services
        .credentials
        .get(connection)
        .ok_or_else(|| AccessTokenError::NoConnection(connection.to_owned()))?;
    creds
        .access_token()
        .await
        .map_err(|e| AccessTokenError::Mint {
            principal: creds.principal(),
            reason: chain(&e),
        })
}

/// Checks every configured integration (a few at a time), in name order. One
/// access token is minted per connection.
pub async fn check_all(google: &Services) -> Vec<Verdict> {
    let api = match api(&google.config) {
        Ok(api) => api,
        Err(e) => {
            return google
                .config
                .integrations
                .values()
                .map(|i| {
                    let mut v = Verdict::new(i);
                    v.error("setup", format!("building the HTTP client: {e}"));
                    v
                })
                .collect();
        }
    };
    let mut tokens = std::collections::BTreeMap::new();
    for i in google.config.integrations.values() {
        if !tokens.contains_key(&i.connection) {
            tokens.insert(
                i.connection.clone(),
                access_token(google, &i.connection).await,
            );
        }
    }
    let api = &api;
    let tokens = &tokens;
    // Owned items: a closure over borrowed ones trips rustc's higher-ranked
    // lifetime inference when the daemon spawns this future.
    let integrations: Vec<Integration> = google.config.integrations.values().cloned().collect();
    futures_util::stream::iter(integrations)
        .map(|i| async move {
            let token = tokens
                .get(&i.connection)
                .cloned()
                .unwrap_or_else(|| Err(AccessTokenError::NoConnection(i.connection.clone())));
            check_with_token(google, api, &i, token).await
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

/// Checks one integration online.
pub async fn check_integration(
    google: &Services,
    api: &CloudFunctionsApi,
    integration: &Integration,
) -> Verdict {
    let token = access_token(google, &integration.connection).await;
    check_with_token(google, api, integration, token).await
}

/// True for `https://REGION-PROJECT.cloudfunctions.net/...`, the 1st gen front end.
fn is_cloudfunctions_net(url: &url::Url) -> bool {
    url.host_str()
        .is_some_and(|h| h.ends_with(".cloudfunctions.net"))
}

fn is_cloud_run(url: &url::Url) -> bool {
    url.host_str().is_some_and(|h| h.ends_with(".run.app"))
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

async fn check_with_token(
    google: &Services,
    api: &CloudFunctionsApi,
    integration: &Integration,
    token: Result<AccessToken, AccessTokenError>,
) -> Verdict {
    let mut v = Verdict::new(integration);
    let creds = google.credentials.get(&integration.connection);
    let mut account = creds.and_then(|c| c.email().map(str::to_owned));

    // The ID token the daemon will send: the one thing every kind of function needs.
    match google
        .tokens
        .get(&integration.connection, &integration.audience)
        .await
    {
        Ok(t) => {
            if account.is_none() {
                account = t.email.clone();
            }
        }
        Err(e) => v.error(
            "id_token",
            format!(
                "cannot mint an ID token for audience {}: {}",
                integration.audience,
                chain(&e)
            ),
        ),
    }
    let who = account.clone().unwrap_or_else(|| {
        creds
            .map(|c| c.principal())
            .unwrap_or_else(|| format!("connection {}", integration.connection))
    });

    let token = match token {
        Ok(t) => t,
        Err(e) => {
            v.error("access_token", e.to_string());
            return v;
        }
    };
    let name = FunctionName::new(
        &integration.project_id,
        &integration.region,
        &integration.function,
    );

    // What is known of the generation before asking: as declared, else a
    // run.app URL is a 2nd gen function's.
    let mut generation = integration
        .generation
        .or_else(|| is_cloud_run(&integration.url).then_some(Generation::Gen2));
    let mut service = None;
    match api.get_function(&token, &name).await {
        Ok(f) => {
            check_function(&mut v, integration, &f);
            generation = Some(f.generation);
            service = f.service.clone();
        }
        Err(e) => {
            let e = e.for_account(account.as_deref());
            match e.kind() {
                Some(ApiErrorKind::NotFound)
                    if integration.generation.is_none()
                        && !is_cloudfunctions_net(&integration.url) =>
                {
                    v.info(
                        "not_cloud_functions",
                        format!(
                            "the Cloud Functions API knows no function {name} (of either generation), and {} is not a cloudfunctions.net URL: a Cloud Run service or other endpoint is checked only by minting an ID token for its audience (done above) and by calling it",
                            integration.url
                        ),
                    );
                    return v;
                }
                Some(ApiErrorKind::NotFound) => {
                    not_found(&mut v, integration, &name);
                    return v;
                }
                // Without read access the invoke permission can still be tested.
                Some(ApiErrorKind::PermissionDenied) => v.error(
                    "no_viewer",
                    format!(
                        "{who} may not read the function (cloudfunctions.functions.get: HTTP 403). {}",
                        e.advice().unwrap_or_default()
                    ),
                ),
                _ => {
                    v.error("api", format!("reading the function: {e}"));
                    return v;
                }
            }
        }
    }

    let readable = !v.findings.iter().any(|f| f.code == "no_viewer");
    let ask = Ask {
        integration,
        api,
        token: &token,
        who: &who,
        account: account.as_deref(),
        readable,
    };
    let target = match generation {
        // Cloud Functions creates a 2nd gen function's service under its name.
        Some(Generation::Gen2) => {
            Target::Service(service.unwrap_or_else(|| ServiceName::of_function(&name)))
        }
        _ => Target::Function(name),
    };
    if !ask.invoke_permission(&mut v, &target).await {
        return v;
    }
    let policy = match &target {
        Target::Function(n) => api.get_iam_policy(&token, n).await,
        Target::Service(s) => api.get_service_iam_policy(&token, s).await,
    };
    check_policy(&mut v, policy, &target, account.as_deref());
    v
}

/// Where a function's invoke permission is granted: on a 1st gen function
/// itself, on a 2nd gen function's Cloud Run service.
enum Target {
    Function(FunctionName),
    Service(ServiceName),
}

impl Target {
    /// `gcloud functions ... F --project=P --region=R` or `gcloud run services ... S ...`.
    fn gcloud(&self, verb: &str) -> String {
        match self {
            Self::Function(n) => format!("gcloud functions {verb} {}", n.gcloud_args()),
            Self::Service(s) => format!("gcloud run services {verb} {}", s.gcloud_args()),
        }
    }
    fn permission(&self) -> &'static str {
        match self {
            Self::Function(_) => INVOKE_PERMISSION,
            Self::Service(_) => RUN_INVOKE_PERMISSION,
        }
    }
    fn role(&self) -> &'static str {
        match self {
            Self::Function(_) => INVOKER_ROLE,
            Self::Service(_) => RUN_INVOKER_ROLE,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Function(n) => write!(f, "the function {n}"),
            Self::Service(s) => write!(f, "its Cloud Run service {s}"),
        }
    }
}

/// Findings from the function's description.
fn check_function(v: &mut Verdict, integration: &Integration, f: &CloudFunction) {
    let args = f.name.gcloud_args();
    check_state(v, f, &args);
    if let Some(declared) = integration.generation
        && declared != f.generation
    {
        v.error(
            "generation_mismatch",
            format!(
                "integrations.{}.generation is {} but {} is a {} function: set generation = {}{}",
                integration.name,
                declared.number(),
                f.name.function,
                if f.generation == Generation::Gen2 {
                    "2nd gen"
                } else {
                    "1st gen"
                },
                f.generation.number(),
                if f.generation == Generation::Gen2 {
                    " and point url and audience at its Cloud Run URL"
                } else {
                    ""
                }
            ),
        );
    }
    match f.generation {
        Generation::Gen1 => check_trigger(v, integration, f),
        Generation::Gen2 => check_gen2(v, integration, f, &args),
    }
    check_timeout(v, integration, f);
    check_ingress(v, f);
}

/// ACTIVE, deploying, or broken.
fn check_state(v: &mut Verdict, f: &CloudFunction, args: &str) {
    match &f.state {
        FunctionState::Active => {}
        FunctionState::Deploying => v.warning(
            "deploying",
            "a deployment is in progress (DEPLOYING): check again when it finishes".to_owned(),
        ),
        other => v.error(
            "not_active",
            format!(
                "the function is {} (not ACTIVE){}: calls will fail; see why with gcloud functions describe {args} and redeploy it",
                other.as_str(),
                if f.state_messages.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", f.state_messages.join("; "))
                }
            ),
        ),
    }
}

/// An event-driven function cannot be called over HTTP.
fn event_driven(v: &mut Verdict, f: &CloudFunction) -> bool {
    let Some(event) = &f.event_type else {
        return false;
    };
    v.error(
        "no_https_trigger",
        format!(
            "the function has no HTTPS trigger (it is triggered by {event}): it cannot be called over HTTP; redeploy it with --trigger-http"
        ),
    );
    true
}

/// A 2nd gen function answers at its Cloud Run URL and its cloudfunctions.net
/// URL; at both, Cloud Run accepts ID tokens for the service URL (or a custom
/// audience configured on the service).
fn check_gen2(v: &mut Verdict, integration: &Integration, f: &CloudFunction, args: &str) {
    if event_driven(v, f) {
        return;
    }
    let Some(run) = f.service_uri.as_deref() else {
        v.warning(
            "gen2",
            format!("the v2 API reports no Cloud Run URL (serviceConfig.uri) for this 2nd gen function yet; see gcloud functions describe {args}"),
        );
        return;
    };
    let calls = integration.url.as_str();
    let at_known_url = same_url(calls, run) || f.url.as_deref().is_some_and(|u| same_url(calls, u));
    if !at_known_url {
        v.error(
            "url_mismatch",
            format!(
                "this 2nd gen function answers at its Cloud Run URL {run}{} but grantbridge calls {calls}: set integrations.{}.url = \"{run}\" and generation = 2",
                f.url
                    .as_deref()
                    .map(|u| format!(" and at {u}"))
                    .unwrap_or_default(),
                integration.name
            ),
        );
    } else if integration.audience != run {
        v.warning(
            "audience_mismatch",
            format!(
                "the ID token audience is {} but Cloud Run accepts tokens for this 2nd gen function's service URL {run} (or a custom audience set on the service): set integrations.{}.audience = \"{run}\", unless {} is one of the service's custom audiences (gcloud run services describe {} --region={} --project={})",
                integration.audience,
                integration.name,
                integration.audience,
                f.service.as_ref().map(|s| s.service.as_str()).unwrap_or(&f.name.function),
                f.name.region,
                f.name.project
            ),
        );
    }
    v.info(
        "gen2",
        format!(
            "2nd gen function (Cloud Run functions) called at {calls} with audience {}{}",
            integration.audience,
            if integration.generation.is_none() {
                format!("; declare integrations.{}.generation = 2 so the configuration is checked for it offline too", integration.name)
            } else {
                String::new()
            }
        ),
    );
}

/// The HTTPS trigger is the URL grantbridge calls and the audience it mints for.
fn check_trigger(v: &mut Verdict, integration: &Integration, f: &CloudFunction) {
    if event_driven(v, f) {
        return;
    }
    match &f.url {
        None => v.error(
            "no_https_trigger",
            "the function has no HTTPS trigger URL: it cannot be called over HTTP; redeploy it with --trigger-http".to_owned(),
        ),
        Some(url) => {
            if !same_url(url, integration.url.as_str()) {
                v.error(
                    "url_mismatch",
                    format!(
                        "the function's HTTPS trigger URL is {url} but grantbridge calls {}: set integrations.{}.url = \"{url}\" (or remove `url` to use the default 1st gen URL)",
                        integration.url, integration.name
                    ),
                );
            } else if !same_url(url, &integration.audience) {
                v.error(
                    "audience_mismatch",
                    format!(
                        "the ID token audience is {} but a 1st gen function only accepts its own URL {url}: remove integrations.{}.audience",
                        integration.audience, integration.name
                    ),
                );
            }
        }
    }
}

/// The connector's per-attempt timeout against the function's.
fn check_timeout(v: &mut Verdict, integration: &Integration, f: &CloudFunction) {
    let function_timeout = f.timeout.unwrap_or(Duration::from_secs(60));
    let ours = integration.timeout;
    let (fs, os) = (function_timeout.as_secs(), ours.as_secs());
    if ours > function_timeout + TIMEOUT_SLACK {
        v.warning(
            "timeout_longer",
            format!(
                "integrations.{}.timeout is {os}s but Google stops the function after {fs}s: an attempt that is still waiting after ~{fs}s waits for nothing; set timeout = \"{}s\"",
                integration.name,
                fs + 10
            ),
        );
    } else if ours < function_timeout {
        v.warning(
            "timeout_shorter",
            format!(
                "integrations.{}.timeout is {os}s but the function may run for {fs}s: grantbridge gives up and retries while the first call still runs, so the function may execute twice; set timeout = \"{}s\" (or lower the function's --timeout)",
                integration.name,
                fs + 10
            ),
        );
    } else {
        v.info(
            "timeout",
            format!("timeout: the function's is {fs}s, the connector's per attempt {os}s"),
        );
    }
}

/// Who can reach the function at all.
fn check_ingress(v: &mut Verdict, f: &CloudFunction) {
    match &f.ingress {
        Ingress::AllowAll => v.info(
            "ingress",
            "ingress ALLOW_ALL: the function is reachable from the internet, and IAM (the invoker role) is its only gate".to_owned(),
        ),
        Ingress::AllowInternalOnly | Ingress::AllowInternalAndGclb => v.info(
            "ingress",
            format!(
                "ingress {}: only traffic from your VPC networks{} reaches the function; grantbridge must reach Google through your VPC (Cloud VPN or Interconnect with Private Google Access), or its calls are refused",
                f.ingress.as_str(),
                if f.ingress == Ingress::AllowInternalAndGclb {
                    " and a load balancer"
                } else {
                    ""
                }
            ),
        ),
        Ingress::Other(s) => v.info("ingress", format!("ingress {s}")),
    }
}

/// What the permission checks need to ask Google.
struct Ask<'a> {
    integration: &'a Integration,
    api: &'a CloudFunctionsApi,
    token: &'a AccessToken,
    who: &'a str,
    account: Option<&'a str>,
    /// The function could be read, so it exists; otherwise an empty answer is
    /// ambiguous (Google answers a missing function with an empty set too).
    readable: bool,
}

impl Ask<'_> {
    /// Tests the invoke permission where Google enforces it. Returns false
    /// when the function (or its service) turned out not to exist.
    async fn invoke_permission(&self, v: &mut Verdict, target: &Target) -> bool {
        let permission = target.permission();
        let held = match target {
            Target::Function(n) => {
                self.api
                    .test_iam_permissions(self.token, n, &[permission])
                    .await
            }
            Target::Service(s) => {
                self.api
                    .test_service_permissions(self.token, s, &[permission])
                    .await
            }
        };
        let (who, role) = (self.who, target.role());
        match held {
            Ok(held) if held.iter().any(|p| p == permission) => v.info(
                "invoke_permission",
                format!("{who} may invoke the function ({permission} on {target})"),
            ),
            Ok(_) => {
                let member = self
                    .account
                    .map(member)
                    .unwrap_or_else(|| "serviceAccount:ACCOUNT_EMAIL".to_owned());
                let grant = match target {
                    Target::Function(n) => format!(
                        "gcloud functions add-iam-policy-binding {} --member={member} --role={role}",
                        n.gcloud_args()
                    ),
                    // The 2nd gen command grants roles/run.invoker on the service.
                    Target::Service(_) => format!(
                        "gcloud functions add-invoker-policy-binding {} --member={member} (or {} --member={member} --role={role})",
                        FunctionName::new(
                            &self.integration.project_id,
                            &self.integration.region,
                            &self.integration.function
                        )
                        .gcloud_args(),
                        target.gcloud("add-iam-policy-binding")
                    ),
                };
                let message = if self.readable {
                    format!(
                        "{who} may not invoke the function: it lacks {permission} ({role}) on {target}; grant it: {grant}"
                    )
                } else {
                    format!(
                        "{who} holds no {permission} on {target}, or no such function exists: testIamPermissions answers an empty set for both, and without read access grantbridge cannot tell which. Check the name (`grantbridge functions list --connection {}` needs the viewer role too; `gcloud functions list --project={}`), then grant {role}: {grant}",
                        self.integration.connection, self.integration.project_id
                    )
                };
                v.error("no_invoke_permission", message);
            }
            // Google answers a missing function with an empty set, not 404; a 404
            // here means the project, region or service does not exist.
            Err(e) if e.kind() == Some(ApiErrorKind::NotFound) => {
                match target {
                    Target::Function(n) => not_found(v, self.integration, n),
                    Target::Service(_) => {
                        v.error("not_found", format!("{}", e.for_account(self.account)))
                    }
                }
                return false;
            }
            Err(e) => v.warning(
                "invoke_permission_unknown",
                format!(
                    "could not test the invoke permission: {}",
                    e.for_account(self.account)
                ),
            ),
        }
        true
    }
}

fn not_found(v: &mut Verdict, integration: &Integration, name: &FunctionName) {
    v.error(
        "not_found",
        format!(
            "function {} does not exist in region {} of project {} (the Cloud Functions API answered 404): deploy it, or fix integrations.{}.function / region / project_id (`grantbridge functions list --connection {}` lists what exists)",
            name.function, name.region, name.project, integration.name, integration.connection
        ),
    );
}

/// Public invokers (`allUsers`, `allAuthenticatedUsers`) in the policy of
/// the function or service, as loud warnings with the command that removes them.
fn check_policy(
    v: &mut Verdict,
    policy: Result<IamPolicy, FunctionsApiError>,
    target: &Target,
    account: Option<&str>,
) {
    match policy {
        Ok(policy) => {
            for invoker in policy.public_invokers() {
                let (m, role) = (invoker.member, invoker.role);
                let who = if m == "allUsers" {
                    "anyone can call it without a token"
                } else {
                    "anyone with a Google account can call it"
                };
                let remove = match invoker.condition {
                    // A conditional binding: remove it from the policy itself.
                    Some(c) => format!(
                        " on {target} under the condition \"{}\" ({}); {who} whenever it holds, so anyone on the internet can grant access. Remove the binding now: {} --format=json > policy.json, delete it, {} policy.json",
                        c.title,
                        c.expression,
                        target.gcloud("get-iam-policy"),
                        target.gcloud("set-iam-policy"),
                    ),
                    None => format!(
                        " on {target}; {who}, so anyone on the internet can grant access. Remove it now: {} --member={m} --role={role}",
                        target.gcloud("remove-iam-policy-binding")
                    ),
                };
                v.warning(
                    "public_invoker",
                    format!("PUBLIC FUNCTION: {m} holds {role}{remove}"),
                );
            }
        }
        Err(e) if e.kind() == Some(ApiErrorKind::PermissionDenied) => v.warning(
            "policy_unknown",
            format!(
                "public access (allUsers / allAuthenticatedUsers) was not checked: reading the IAM policy of {target} was refused (HTTP 403). {}",
                e.for_account(account).advice().unwrap_or_default()
            ),
        ),
        Err(e) => v.warning(
            "policy_unknown",
            format!(
                "could not read the IAM policy of {target}, so public access (allUsers / allAuthenticatedUsers) was not checked: {}",
                e.for_account(account)
            ),
        ),
    }
}

/// The projects `functions list --connection NAME` looks in when no
/// `--project` is given: those of the integrations using the connection, else
/// the project of the connection's key file. Sorted, without duplicates.
pub fn projects_for_connection(config: &Config, connection: &str) -> Vec<String> {
    let mut projects: Vec<String> = config
        .integrations
        .values()
        .filter(|i| i.connection == connection)
        .map(|i| i.project_id.clone())
        .collect();
    if projects.is_empty()
        && let Some(c) = config.connections.get(connection)
    {
        let mut spec = &c.credentials;
        // An impersonating connection's key belongs to the source.
        while let CredentialsSpec::Impersonate { source, .. } = spec {
            spec = source;
        }
        if let CredentialsSpec::ServiceAccountKey { key, .. } = spec
            && let Some(p) = &key.project_id
        {
            projects.push(p.clone());
        }
    }
    projects.sort();
    projects.dedup();
    projects
}

#[cfg(test)]
mod tests;

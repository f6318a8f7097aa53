//! Online checks: for each integration, ask the Cloud Functions API (with the
//! connection's own access token) whether the function grantbridge will call
//! exists, is ACTIVE, is a 1st gen HTTPS function at the configured URL, has a
//! timeout that fits the connector's, may be invoked by the connection's
//! account, and is not public; and turn the answers into a [`Verdict`] per
//! integration. `grantbridge check --online` prints them; the daemon can feed
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
    ApiErrorKind, CloudFunction, CloudFunctionsApi, FunctionName, FunctionStatus, Generation,
    INVOKE_PERMISSION, INVOKER_ROLE, Ingress, member,
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

/// The Cloud Functions API client for a configuration (`[google] cloudfunctions_api`).
pub fn api(config: &Config) -> Result<CloudFunctionsApi, reqwest::Error> {
    Ok(CloudFunctionsApi::new(
        crate::http::client()?,
        config.google.cloudfunctions_api.clone(),
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

    match api.get_function(&token, &name).await {
        Ok(f) => {
            if !check_function(&mut v, integration, &f) {
                return v;
            }
        }
        Err(e) => {
            let e = e.for_account(account.as_deref());
            match e.kind() {
                Some(ApiErrorKind::NotFound) if !is_cloudfunctions_net(&integration.url) => {
                    v.info(
                        "not_cloud_functions",
                        format!(
                            "the Cloud Functions API knows no 1st gen function {name}, and {} is not a cloudfunctions.net URL: a Cloud Run service, 2nd gen function or other endpoint is checked only by minting an ID token for its audience (done above) and by calling it",
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
    let exists = check_invoke_permission(
        &mut v,
        integration,
        api,
        &token,
        &name,
        &who,
        account.as_deref(),
        readable,
    )
    .await;
    if !exists {
        return v;
    }
    check_policy(&mut v, api, &token, &name, account.as_deref()).await;
    v
}

/// Findings from the function's description. Returns false when the remaining
/// checks do not apply (2nd gen).
fn check_function(v: &mut Verdict, integration: &Integration, f: &CloudFunction) -> bool {
    let args = f.name.gcloud_args();
    check_state(v, f, &args);
    if f.generation == Generation::Gen2 {
        check_gen2(v, integration, &args);
        return false;
    }
    check_trigger(v, integration, f);
    check_timeout(v, integration, f);
    check_ingress(v, f);
    true
}

/// ACTIVE, deploying, or broken.
fn check_state(v: &mut Verdict, f: &CloudFunction, args: &str) {
    match &f.status {
        FunctionStatus::Active => {}
        FunctionStatus::DeployInProgress => v.warning(
            "deploying",
            "a deployment is in progress (DEPLOY_IN_PROGRESS): check again when it finishes"
                .to_owned(),
        ),
        other => v.error(
            "not_active",
            format!(
                "the function is {} (not ACTIVE): calls will fail; see why with gcloud functions describe {args} and redeploy it",
                other.as_str()
            ),
        ),
    }
}

/// A 2nd gen function: only its Cloud Run URL works.
fn check_gen2(v: &mut Verdict, integration: &Integration, args: &str) {
    if is_cloud_run(&integration.url) {
        v.info(
            "gen2",
            format!(
                "2nd gen function called at its Cloud Run URL {}: its invoker role is roles/run.invoker on the Cloud Run service, which the Cloud Functions v1 API cannot check; checked by minting an ID token and by calling it",
                integration.url
            ),
        );
    } else {
        v.error(
            "gen2",
            format!(
                "this is a 2nd gen function, but integrations.{} is set up for 1st gen (URL {}): set `url` and `audience` to its Cloud Run URL (gcloud functions describe {args} --gen2 --format='value(serviceConfig.uri)') and grant the connection's account roles/run.invoker (gcloud functions add-invoker-policy-binding {args} --member=...), or redeploy it as 1st gen (--no-gen2)",
                integration.name, integration.url
            ),
        );
    }
}

/// The HTTPS trigger is the URL grantbridge calls and the audience it mints for.
fn check_trigger(v: &mut Verdict, integration: &Integration, f: &CloudFunction) {
    match &f.https_trigger {
        None => v.error(
            "no_https_trigger",
            format!(
                "the function has no HTTPS trigger ({}): it cannot be called over HTTP; redeploy it with --trigger-http",
                f.event_type
                    .as_deref()
                    .map(|t| format!("it is triggered by {t}"))
                    .unwrap_or_else(|| "it is event-driven".to_owned())
            ),
        ),
        Some(t) => {
            if !same_url(&t.url, integration.url.as_str()) {
                v.error(
                    "url_mismatch",
                    format!(
                        "the function's HTTPS trigger URL is {} but grantbridge calls {}: set integrations.{}.url = \"{}\" (or remove `url` to use the default 1st gen URL)",
                        t.url, integration.url, integration.name, t.url
                    ),
                );
            } else if !same_url(&t.url, &integration.audience) {
                v.error(
                    "audience_mismatch",
                    format!(
                        "the ID token audience is {} but a 1st gen function only accepts its own URL {}: remove integrations.{}.audience",
                        integration.audience, t.url, integration.name
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

/// Returns false when the function turned out not to exist. `readable`: the
/// function could be read, so it exists; otherwise an empty answer is
/// ambiguous (Google answers a missing function with an empty set too).
#[allow(clippy::too_many_arguments)]
async fn check_invoke_permission(
    v: &mut Verdict,
    integration: &Integration,
    api: &CloudFunctionsApi,
    token: &AccessToken,
    name: &FunctionName,
    who: &str,
    account: Option<&str>,
    readable: bool,
) -> bool {
    match api
        .test_iam_permissions(token, name, &[INVOKE_PERMISSION])
        .await
    {
        Ok(held) if held.iter().any(|p| p == INVOKE_PERMISSION) => v.info(
            "invoke_permission",
            format!("{who} may invoke the function ({INVOKE_PERMISSION})"),
        ),
        Ok(_) => {
            let member = account
                .map(member)
                .unwrap_or_else(|| "serviceAccount:ACCOUNT_EMAIL".to_owned());
            let grant = format!(
                "gcloud functions add-iam-policy-binding {} --member={member} --role={INVOKER_ROLE}",
                name.gcloud_args()
            );
            let message = if readable {
                format!(
                    "{who} may not invoke the function: it lacks {INVOKE_PERMISSION} ({INVOKER_ROLE}); grant it: {grant}"
                )
            } else {
                format!(
                    "{who} holds no {INVOKE_PERMISSION} on {name}, or no such function exists: testIamPermissions answers an empty set for both, and without read access grantbridge cannot tell which. Check the name (`grantbridge functions list --connection {}` needs the viewer role too; `gcloud functions list --project={}`), then grant {INVOKER_ROLE}: {grant}",
                    integration.connection, name.project
                )
            };
            v.error("no_invoke_permission", message);
        }
        // Google answers a missing function with an empty set, not 404; a 404
        // here means the project or region does not exist.
        Err(e) if e.kind() == Some(ApiErrorKind::NotFound) => {
            not_found(v, integration, name);
            return false;
        }
        Err(e) => v.warning(
            "invoke_permission_unknown",
            format!(
                "could not test the invoke permission: {}",
                e.for_account(account)
            ),
        ),
    }
    true
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

async fn check_policy(
    v: &mut Verdict,
    api: &CloudFunctionsApi,
    token: &AccessToken,
    name: &FunctionName,
    account: Option<&str>,
) {
    match api.get_iam_policy(token, name).await {
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
                        " under the condition \"{}\" ({}); {who} whenever it holds, so anyone on the internet can grant access. Remove the binding now: gcloud functions get-iam-policy {args} --format=json > policy.json, delete it, gcloud functions set-iam-policy {args} policy.json",
                        c.title,
                        c.expression,
                        args = name.gcloud_args()
                    ),
                    None => format!(
                        "; {who}, so anyone on the internet can grant access. Remove it now: gcloud functions remove-iam-policy-binding {} --member={m} --role={role}",
                        name.gcloud_args()
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
                "public access (allUsers / allAuthenticatedUsers) was not checked: reading the IAM policy was refused (HTTP 403). {}",
                e.for_account(account).advice().unwrap_or_default()
            ),
        ),
        Err(e) => v.warning(
            "policy_unknown",
            format!(
                "could not read the IAM policy, so public access (allUsers / allAuthenticatedUsers) was not checked: {}",
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

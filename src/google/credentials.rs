//! One connection's identity: a service-account key, the metadata server, or
//! impersonation through IAM Credentials. Mints ID tokens (and access tokens for
//! impersonation and Google APIs), retrying Google's transient failures.
//!
//! It must not cache ID tokens (that is `cache.rs`), and must not log tokens.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::error::CredentialsError;
use super::iam::IamCredentials;
use super::key::{ExternalAccount, ServiceAccountKey, UserLogin};
use super::metadata::MetadataServer;
use super::oauth::{self, CLOUD_PLATFORM_SCOPE, Grant, Minted};
use super::token::{AccessToken, IdToken};
use crate::clock::Clock;
use crate::retry::Backoff;

/// Attempts per mint for Google's transient failures (5xx, 429, network).
const MINT_ATTEMPTS: u32 = 3;

/// Anything that can mint ID tokens; the cache depends on this, so tests can
/// count and fail mints.
pub trait IdTokenSource: Send + Sync {
    fn mint<'a>(
        &'a self,
        audience: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<IdToken, CredentialsError>> + Send + 'a>>;
    /// Who the tokens speak for, for messages ("service account x@y (key k)").
    fn principal(&self) -> String;
}

/// A connection's credentials.
pub struct Credentials {
    kind: Kind,
    http: reqwest::Client,
    clock: Clock,
    backoff: Backoff,
}

enum Kind {
    Key(Arc<ServiceAccountKey>),
    Metadata(MetadataServer),
    /// A person's login: only ever an impersonation's source.
    User(Arc<UserLogin>),
    /// A federated identity (workload identity federation): only ever an
    /// impersonation's source.
    /// The federated identity, and what the environment says for an AWS source.
    External(Arc<ExternalAccount>, Arc<super::aws::AwsEnvironment>),
    Impersonated {
        target: String,
        delegates: Vec<String>,
        source: Box<Credentials>,
        iam: IamCredentials,
        /// The source's access token, reused until near expiry.
        source_token: Mutex<Option<AccessToken>>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("principal", &self.principal())
            .finish()
    }
}

impl Credentials {
    pub fn service_account_key(
        key: Arc<ServiceAccountKey>,
        http: reqwest::Client,
        clock: Clock,
    ) -> Self {
        Self {
            kind: Kind::Key(key),
            http,
            clock,
            backoff: Backoff::default(),
        }
    }

    /// A person's login (`authorized_user`), as an impersonation's source.
    pub fn user_login(login: Arc<UserLogin>, http: reqwest::Client, clock: Clock) -> Self {
        Self {
            kind: Kind::User(login),
            http,
            clock,
            backoff: Backoff::default(),
        }
    }

    /// Workload identity federation: the federated identity of `account`
    /// (STS) impersonating its service account, which mints the ID tokens.
    pub fn external_account(
        account: Arc<ExternalAccount>,
        aws: super::aws::AwsEnvironment,
        http: reqwest::Client,
        clock: Clock,
    ) -> Self {
        let iam = IamCredentials::new(http.clone(), account.iam_base.clone());
        let target = account.service_account.clone();
        let source = Self {
            kind: Kind::External(account, Arc::new(aws)),
            http,
            clock,
            backoff: Backoff::default(),
        };
        Self::impersonated(target, Vec::new(), source, iam)
    }

    pub fn metadata(server: MetadataServer, http: reqwest::Client, clock: Clock) -> Self {
        Self {
            kind: Kind::Metadata(server),
            http,
            clock,
            backoff: Backoff::default(),
        }
    }

    pub fn impersonated(
        target: String,
        delegates: Vec<String>,
        source: Credentials,
        iam: IamCredentials,
    ) -> Self {
        let (http, clock) = (source.http.clone(), source.clock.clone());
        Self {
            kind: Kind::Impersonated {
                target,
                delegates,
                source: Box::new(source),
                iam,
                source_token: Mutex::new(None),
            },
            http,
            clock,
            backoff: Backoff::default(),
        }
    }

    /// Shortens retry pauses (tests).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn principal(&self) -> String {
        match &self.kind {
            Kind::Key(k) => format!(
                "service account {} (key {})",
                k.client_email, k.private_key_id
            ),
            Kind::Metadata(m) => format!("the metadata server's service account (at {})", m.host()),
            Kind::User(login) => login.principal(),
            Kind::External(account, _) => format!("the federated identity of {}", account.audience),
            Kind::Impersonated { target, source, .. } => {
                format!(
                    "service account {target} (impersonated by {})",
                    source.principal()
                )
            }
        }
    }

    /// The email of the account tokens speak for, when known without a call.
    pub fn email(&self) -> Option<&str> {
        match &self.kind {
            Kind::Key(k) => Some(&k.client_email),
            Kind::Impersonated { target, .. } => Some(target),
            Kind::User(login) => login.account.as_deref(),
            Kind::External(..) => None,
            Kind::Metadata(_) => None,
        }
    }

    /// Mints a new ID token for `audience`, retrying transient failures.
    pub async fn id_token(&self, audience: &str) -> Result<IdToken, CredentialsError> {
        self.with_retries(|| self.id_token_once(audience)).await
    }

    /// An OAuth access token (cloud-platform scope) of this identity.
    pub async fn access_token(&self) -> Result<AccessToken, CredentialsError> {
        self.with_retries(|| self.access_token_once()).await
    }

    async fn with_retries<T, F, Fut>(&self, mut op: F) -> Result<T, CredentialsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CredentialsError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_retryable() && attempt < MINT_ATTEMPTS => {
                    let delay = self.backoff.delay(attempt, None);
                    tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "token request failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn id_token_once(&self, audience: &str) -> Result<IdToken, CredentialsError> {
        match &self.kind {
            Kind::Key(key) => {
                match oauth::exchange(&self.http, key, Grant::IdToken { audience }, &self.clock)
                    .await?
                {
                    Minted::Id(t) => Ok(t),
                    Minted::Access(_) => unreachable!("an ID token grant answers with an ID token"),
                }
            }
            Kind::Metadata(m) => m.id_token(audience).await,
            Kind::External(account, _) => Err(CredentialsError::Setup(format!(
                "the federated identity of {} cannot mint an ID token for {audience} itself: it impersonates a service account",
                account.audience
            ))),
            Kind::User(login) => Err(CredentialsError::Setup(format!(
                "{} cannot mint an ID token for {audience}: a person's login is only a source to impersonate a service account from",
                login.principal()
            ))),
            Kind::Impersonated {
                target,
                delegates,
                source,
                iam,
                ..
            } => {
                let token = self.source_access_token().await?;
                iam.generate_id_token(&token, &source.principal(), target, delegates, audience)
                    .await
            }
        }
    }

    async fn access_token_once(&self) -> Result<AccessToken, CredentialsError> {
        match &self.kind {
            Kind::Key(key) => {
                match oauth::exchange(
                    &self.http,
                    key,
                    Grant::AccessToken {
                        scope: CLOUD_PLATFORM_SCOPE,
                    },
                    &self.clock,
                )
                .await?
                {
                    Minted::Access(t) => Ok(t),
                    Minted::Id(_) => unreachable!("a scope grant answers with an access token"),
                }
            }
            Kind::Metadata(m) => m.access_token(&self.clock).await,
            Kind::User(login) => oauth::refresh(&self.http, login, &self.clock).await,
            Kind::External(account, aws) => {
                let subject =
                    super::sts::subject_token(&self.http, account, aws, self.clock.now()).await?;
                super::sts::exchange(&self.http, account, &subject, &self.clock).await
            }
            Kind::Impersonated {
                target,
                delegates,
                source,
                iam,
                ..
            } => {
                let token = self.source_access_token().await?;
                iam.generate_access_token(
                    &token,
                    &source.principal(),
                    target,
                    delegates,
                    CLOUD_PLATFORM_SCOPE,
                )
                .await
            }
        }
    }

    /// The impersonation source's access token, reused while [`still_good`].
    async fn source_access_token(&self) -> Result<AccessToken, CredentialsError> {
        let Kind::Impersonated {
            source,
            source_token,
            ..
        } = &self.kind
        else {
            unreachable!("only impersonated credentials have a source")
        };
        let mut slot = source_token.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| still_good(t, self.clock.now())) {
            return Ok(t.clone());
        }
        let fresh = Box::pin(source.access_token_once()).await?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }
}

impl IdTokenSource for Credentials {
    fn mint<'a>(
        &'a self,
        audience: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<IdToken, CredentialsError>> + Send + 'a>> {
        Box::pin(self.id_token(audience))
    }
    fn principal(&self) -> String {
        Credentials::principal(self)
    }
}

/// How long before its expiry a source access token is replaced: google-auth's
/// `REFRESH_THRESHOLD`, 3 min 45 s, chosen because the metadata server caches
/// a token until 4 minutes before it expires (asking earlier returns the same
/// token again, one request per mint).
const SOURCE_REFRESH_THRESHOLD: Duration = Duration::from_secs(3 * 60 + 45);

/// Whether a cached source access token may still be used at `now`.
fn still_good(token: &AccessToken, now: std::time::SystemTime) -> bool {
    token.remaining(now) > SOURCE_REFRESH_THRESHOLD
}

#[cfg(test)]
mod source_token_tests {
    use super::*;

    /// Between 5 and 4 minutes before expiry the metadata server still hands
    /// out the same token: it is reused, not fetched again for every mint.
    #[test]
    fn a_source_token_is_reused_until_three_minutes_45_before_expiry() {
        let now = std::time::SystemTime::now();
        let left = |secs| AccessToken::new("t".into(), now + Duration::from_secs(secs));
        assert!(still_good(&left(4 * 60 + 30), now));
        assert!(still_good(&left(3 * 60 + 46), now));
        assert!(!still_good(&left(3 * 60 + 45), now));
        assert!(!still_good(&left(60), now));
    }
}

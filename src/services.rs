//! [`Services`]: everything built from one validated configuration (shared
//! HTTP clients, each connection's credentials, the token cache, the
//! invoker). The engine holds one and swaps it whole on reload; the one-shot
//! CLI commands (`token`, `invoke`, `check`, `functions`) use it alone.
//!
//! Building must not make network calls: the first token is minted on first
//! use (or by `grantbridge check`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::env::Environment;
use crate::function::Invoker;
use crate::google::{Credentials, CredentialsContext, CredentialsError, IdTokenSource, TokenCache};
use crate::metrics::Metrics;

/// Why the services could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("configuration {file}: connections.{connection}: {source}")]
    Credentials {
        file: String,
        connection: String,
        #[source]
        source: Box<CredentialsError>,
    },
}

/// Everything built from one configuration: credentials, tokens and the
/// invoker. The engine holds one and swaps it whole on reload, so an action
/// runs with one configuration from start to end.
pub struct Services {
    pub config: Arc<Config>,
    pub credentials: BTreeMap<String, Arc<Credentials>>,
    pub tokens: Arc<TokenCache>,
    pub invoker: Arc<Invoker>,
    pub metrics: Arc<Metrics>,
    /// The pooled client (rustls, proxy from the environment, no redirects), for
    /// other peers such as the control plane to share.
    pub http: reqwest::Client,
}

impl Services {
    pub fn build(
        config: Config,
        env: &dyn Environment,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServicesError> {
        let http = crate::http::client()?;
        let ctx = CredentialsContext {
            env,
            http: http.clone(),
            metadata_http: crate::http::metadata_client()?,
            clock: clock.clone(),
            allow_insecure_loopback: config.http.allow_insecure_loopback,
        };
        let mut credentials = BTreeMap::new();
        let mut sources: BTreeMap<String, Arc<dyn IdTokenSource>> = BTreeMap::new();
        for (name, connection) in &config.connections {
            let creds = ctx.build(&connection.credentials).map_err(|source| {
                ServicesError::Credentials {
                    file: config.source.display().to_string(),
                    connection: name.clone(),
                    source: Box::new(source),
                }
            })?;
            let creds = Arc::new(creds);
            sources.insert(name.clone(), creds.clone());
            credentials.insert(name.clone(), creds);
        }
        let tokens = Arc::new(TokenCache::new(
            sources,
            config.tokens.refresh_ahead,
            clock.clone(),
            metrics.clone(),
        ));
        let invoker = Arc::new(Invoker::new(
            http.clone(),
            tokens.clone(),
            clock,
            metrics.clone(),
            config.http.max_response_bytes,
        ));
        Ok(Self {
            config: Arc::new(config),
            credentials,
            tokens,
            invoker,
            metrics,
            http,
        })
    }
}
